//! Wall-clock instants as plain values. The domain never reads a clock; callers pass `now`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An instant, in milliseconds since the Unix epoch (UTC).
///
/// Serialized as an RFC 3339 string (`"2026-11-22T10:00:00.123Z"`) in JSON and MessagePack
/// alike, so stored documents and API replies are readable by people.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This instant plus `ms` milliseconds (saturating).
    pub fn plus_millis(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }

    fn to_offset(self) -> Option<::time::OffsetDateTime> {
        ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()
    }

    /// Parses an RFC 3339 string.
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        if let Some(t) = parse_utc_millis(s.as_bytes()) {
            return Some(t);
        }
        let dt = ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)
            .ok()?;
        let ms = dt.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(ms).ok().map(Timestamp)
    }
}

/// Days since 1970-01-01 of a civil (proleptic Gregorian) date, and back (H. Hinnant's
/// algorithms). Timestamps are formatted and parsed on every stored write, load and
/// reply; through the `time` crate's general RFC 3339 code that was a measurable share of
/// a node's instructions, so the one shape Cartwheel writes is done here, and everything
/// else still goes through `time`.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,3}]Z` (UTC, what [`Timestamp`]'s `Display` writes), or
/// `None` for any other shape.
fn parse_utc_millis(b: &[u8]) -> Option<Timestamp> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20 || b.last() != Some(&b'Z') {
        return None;
    }
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let frac = &b[19..b.len() - 1];
    let ms = match frac {
        [] => 0,
        [b'.', digits @ ..] if (1..=3).contains(&digits.len()) => {
            num(digits)? * 10i64.pow(3 - u32::try_from(digits.len()).ok()?)
        }
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    // A day past the month's end (e.g. 02-30) would roll over: refuse it.
    if civil_from_days(days) != (y, mo, d) {
        return None;
    }
    Some(Timestamp(
        ((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms,
    ))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (days, ms) = (self.0.div_euclid(86_400_000), self.0.rem_euclid(86_400_000));
        let (y, mo, d) = civil_from_days(days);
        if (0..=9999).contains(&y) {
            let (h, mi, sec, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
            write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}")?;
            // As RFC 3339 writers do: no fraction for whole seconds, no trailing zeros.
            match milli {
                0 => {}
                m if m % 100 == 0 => write!(f, ".{}", m / 100)?,
                m if m % 10 == 0 => write!(f, ".{:02}", m / 10)?,
                m => write!(f, ".{m:03}")?,
            }
            return f.write_str("Z");
        }
        match self.to_offset().and_then(|d| {
            d.format(&::time::format_description::well_known::Rfc3339)
                .ok()
        }) {
            Some(s) => f.write_str(&s),
            None => write!(f, "{}ms", self.0),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Rfc3339;
        impl serde::de::Visitor<'_> for Rfc3339 {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 timestamp")
            }
            // Read in place, without a `String` of its own.
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(s)
                    .ok_or_else(|| E::custom(format!("invalid RFC 3339 timestamp: {s}")))
            }
        }
        d.deserialize_str(Rfc3339)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_writes_and_reads_what_the_time_crate_does() {
        let rfc = &::time::format_description::well_known::Rfc3339;
        let samples = [
            0,
            1,
            10,
            100,
            999,
            1_000,
            86_399_999,
            951_782_400_000, // 2000-02-29
            1_763_800_000_123,
            4_102_444_799_999, // 2099-12-31T23:59:59.999
            -1,
            -86_400_001,
            253_402_300_799_999, // 9999-12-31T23:59:59.999
        ];
        for ms in samples
            .into_iter()
            .chain((0..2000).map(|i| i * 7_919_017_331))
        {
            let t = Timestamp(ms);
            let by_time = t.to_offset().and_then(|d| d.format(rfc).ok());
            let ours = t.to_string();
            if ms >= 0 {
                assert_eq!(Some(ours.clone()), by_time, "{ms}");
            }
            assert_eq!(Timestamp::parse_rfc3339(&ours), Some(t), "{ours}");
        }
        for bad in [
            "2026-02-30T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
        ] {
            assert_eq!(parse_utc_millis(bad.as_bytes()), None, "{bad}");
        }
        // Other RFC 3339 shapes still parse (through `time`).
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-22T11:00:00.5+01:00"),
            Timestamp::parse_rfc3339("2026-11-22T10:00:00.500Z")
        );
    }

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp(1_763_800_000_123);
        let s = t.to_string();
        assert!(s.ends_with('Z'), "{s}");
        assert_eq!(Timestamp::parse_rfc3339(&s), Some(t));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
