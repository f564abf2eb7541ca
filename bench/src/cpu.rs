//! CPU time of processes from `/proc/{pid}/stat` (user + system), so a measurement can
//! say where the machine's CPU went per operation: the load generator, the edge, the
//! node, nats-server. Linux only; elsewhere the figures are simply absent.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/{pid}/stat` (`USER_HZ`, 100 on every Linux build).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by each process that could be read.
pub fn sample(procs: &[(String, u32)]) -> BTreeMap<String, f64> {
    procs
        .iter()
        .filter_map(|(name, pid)| cpu_seconds(*pid).map(|s| (name.clone(), s)))
        .collect()
}

/// CPU µs per operation of each process between two samples.
pub fn per_op(
    start: &BTreeMap<String, f64>,
    end: &BTreeMap<String, f64>,
    ops: u64,
) -> BTreeMap<String, f64> {
    if ops == 0 {
        return BTreeMap::new();
    }
    end.iter()
        .filter_map(|(name, e)| {
            let s = start.get(name)?;
            let us = (e - s).max(0.0) * 1e6 / ops as f64;
            Some((name.clone(), crate::stats::tenths(us)))
        })
        .collect()
}

/// CPU µs per second of wall time of each process between two samples `seconds` apart.
pub fn per_second(
    start: &BTreeMap<String, f64>,
    end: &BTreeMap<String, f64>,
    seconds: f64,
) -> BTreeMap<String, f64> {
    if seconds <= 0.0 {
        return BTreeMap::new();
    }
    end.iter()
        .filter_map(|(name, e)| {
            let s = start.get(name)?;
            let us = (e - s).max(0.0) * 1e6 / seconds;
            Some((name.clone(), us.round()))
        })
        .collect()
}

/// User + system CPU seconds of `pid`, all threads.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Fields 14 and 15 (utime, stime) of a `/proc/{pid}/stat` line, in seconds. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn parse_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        let line = "42 (my (odd) cmd) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 1 1";
        assert_eq!(parse_stat(line), Some(3.0));
    }

    #[test]
    fn per_op_divides_the_difference() {
        let start = BTreeMap::from([("node".to_owned(), 1.0), ("gone".to_owned(), 1.0)]);
        let end = BTreeMap::from([("node".to_owned(), 1.5)]);
        let per = per_op(&start, &end, 1000);
        assert_eq!(per, BTreeMap::from([("node".to_owned(), 500.0)]));
        assert!(per_op(&start, &end, 0).is_empty());
    }

    #[test]
    fn our_own_cpu_time_is_readable() {
        assert!(cpu_seconds(std::process::id()).is_some());
    }
}
