//! The mapping between a stored [`Record`] and a MongoDB document.
//!
//! A document is the entity's own fields at the top level, as serde names them, plus four
//! storage fields that start with an underscore:
//!
//! ```text
//! { _id: "MUG-1",                          // the entity id (the store's key)
//!   sku: "MUG-1", name: "Mug", price: 1299 (Int64), currency: "EUR", category: "kitchen",
//!   active: true, version: 3,
//!   created_at: ISODate("2026-11-22T10:00:00.123Z"), updated_at: ISODate(…),
//!   _rev: 3 (Int64),                         // the compare-and-set counter
//!   _outbox: [ { type: "PriceChanged", product: { …, created_at: ISODate(…) }, old_price: 1199 } ],
//!   _applied: [ { c: 41234…, f: 9182…, v: 3 } ] }   // commands applied (absent when none)
//! ```
//!
//! Everything goes through serde (`bson::to_document`), so a field added to a domain
//! struct is stored without touching this module, and a field added later with
//! `#[serde(default)]` still reads old documents. Integers stay integers (money is minor
//! units in an `Int64`). The one thing serde cannot know is which strings are instants:
//! [`Timestamp`] serializes as an RFC 3339 string for JSON
//! and MessagePack. So every entity names the paths of its instants ([`MongoEntity::DATES`](super::MongoEntity::DATES)),
//! and those strings become BSON dates on the way in. On the way out, every BSON date
//! (only this module writes them) becomes the RFC 3339 string again before serde reads
//! the document. A test checks that no string in a stored fixture still looks like an
//! instant, so a new timestamp field without a path here is caught.

use crate::error::StoreError;
use crate::{Record, Revision};
use bson::{Bson, DateTime, Document};
use cartwheel_domain::{Event, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The field that holds the entity id.
pub const ID: &str = "_id";
/// The field that holds the revision: 1 at create, one more on every update.
pub const REV: &str = "_rev";
/// The field that holds the outbox: the events of the last change.
pub const OUTBOX: &str = "_outbox";
/// The field that holds the window of applied commands ([`crate::Applied`]).
pub const APPLIED: &str = "_applied";

/// Where the instants are inside an event, by the field that holds the entity: the same
/// paths as the entity's own documents.
const EVENT_ENTITIES: &[(&str, &[&str])] = &[
    ("cart", super::layout::CART_DATES),
    ("order", super::layout::ORDER_DATES),
    ("product", super::layout::PRODUCT_DATES),
];

/// The document of `record` stored at `id` with revision `rev`; `dates` are the paths of
/// the entity's instants (`a.b`, with `*` for every value of a map or array).
pub fn to_document<T: Serialize>(
    id: &str,
    record: &Record<T>,
    rev: Revision,
    dates: &[&str],
) -> Result<Document, StoreError> {
    let mut state = bson::to_document(&record.state)
        .map_err(|e| StoreError::Codec(format!("encoding {id}: {e}")))?;
    if let Some(reserved) = [ID, REV, OUTBOX, APPLIED]
        .into_iter()
        .find(|k| state.contains_key(k))
    {
        return Err(StoreError::Codec(format!(
            "encoding {id}: the entity has a field named {reserved}, which the MongoDB store reserves"
        )));
    }
    for path in dates {
        strings_to_dates(&mut state, path);
    }
    let outbox = record
        .outbox
        .iter()
        .map(|event| event_document(id, event).map(Bson::Document))
        .collect::<Result<Vec<_>, _>>()?;
    let rev = i64::try_from(rev)
        .map_err(|_| StoreError::Codec(format!("encoding {id}: revision {rev} out of range")))?;

    let mut doc = Document::new();
    doc.insert(ID, id);
    doc.extend(state);
    doc.insert(REV, rev);
    doc.insert(OUTBOX, outbox);
    if !record.applied.is_empty() {
        let applied = bson::to_bson(&record.applied)
            .map_err(|e| StoreError::Codec(format!("encoding {id}: {APPLIED}: {e}")))?;
        doc.insert(APPLIED, applied);
    }
    Ok(doc)
}

/// The record and revision of a stored document. Fields the entity does not know are
/// ignored (a newer node wrote them); fields it has since gained read as their serde
/// defaults; a document without `_outbox` has an empty one.
pub fn from_document<T: DeserializeOwned>(
    mut doc: Document,
) -> Result<(Record<T>, Revision), StoreError> {
    let id = match doc.remove(ID) {
        Some(Bson::String(id)) => id,
        Some(other) => other.to_string(),
        None => "?".to_owned(),
    };
    let codec = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Codec(format!("decoding {id}: {what}: {e}"))
    };
    let rev = match doc.remove(REV) {
        Some(Bson::Int64(n)) => u64::try_from(n).map_err(|e| codec(REV, &e))?,
        Some(Bson::Int32(n)) => u64::try_from(n).map_err(|e| codec(REV, &e))?,
        other => return Err(codec(REV, &format!("expected an integer, found {other:?}"))),
    };
    let outbox = match doc.remove(OUTBOX) {
        None | Some(Bson::Null) => Vec::new(),
        Some(Bson::Array(events)) => events
            .into_iter()
            .map(|mut event| {
                dates_to_strings(&mut event);
                bson::from_bson::<Event>(event).map_err(|e| codec(OUTBOX, &e))
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => return Err(codec(OUTBOX, &format!("expected an array, found {other}"))),
    };
    let applied = match doc.remove(APPLIED) {
        None | Some(Bson::Null) => Vec::new(),
        Some(b) => bson::from_bson(b).map_err(|e| codec(APPLIED, &e))?,
    };
    let mut state = Bson::Document(doc);
    dates_to_strings(&mut state);
    let state = bson::from_bson(state).map_err(|e| codec("state", &e))?;
    Ok((
        Record {
            state,
            outbox,
            applied,
            changes: Vec::new(),
        },
        rev,
    ))
}

/// An event as a document, with the instants of the entity it carries as BSON dates.
fn event_document(id: &str, event: &Event) -> Result<Document, StoreError> {
    let mut doc = bson::to_document(event)
        .map_err(|e| StoreError::Codec(format!("encoding an event of {id}: {e}")))?;
    for (field, dates) in EVENT_ENTITIES {
        if let Some(Bson::Document(entity)) = doc.get_mut(*field) {
            for path in *dates {
                strings_to_dates(entity, path);
            }
        }
    }
    Ok(doc)
}

/// Turns the RFC 3339 strings at `path` into BSON dates. Missing fields and `null`s are
/// left alone (an optional instant that is not set).
fn strings_to_dates(doc: &mut Document, path: &str) {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let visit = |value: &mut Bson| match (rest, value) {
        (None, value) => {
            if let Bson::String(s) = value
                && let Some(t) = Timestamp::parse_rfc3339(s)
            {
                *value = Bson::DateTime(DateTime::from_millis(t.millis()));
            }
        }
        (Some(rest), Bson::Document(inner)) => strings_to_dates(inner, rest),
        (Some(rest), Bson::Array(items)) => {
            for item in items {
                if let Bson::Document(inner) = item {
                    strings_to_dates(inner, rest);
                }
            }
        }
        _ => {}
    };
    if head == "*" {
        doc.iter_mut().for_each(|(_, v)| visit(v));
    } else if let Some(value) = doc.get_mut(head) {
        visit(value);
    }
}

/// Turns every BSON date, at any depth, back into the RFC 3339 string serde expects.
fn dates_to_strings(value: &mut Bson) {
    match value {
        Bson::DateTime(dt) => *value = Bson::String(Timestamp(dt.timestamp_millis()).to_string()),
        Bson::Document(doc) => doc.iter_mut().for_each(|(_, v)| dates_to_strings(v)),
        Bson::Array(items) => items.iter_mut().for_each(dates_to_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn paths_reach_nested_fields_map_values_and_array_elements() {
        let t = Timestamp(1_767_225_600_250).to_string();
        let t = t.as_str();
        let mut d = doc! {
            "at": t,
            "none": Bson::Null,
            "name": t,
            "one": { "at": t },
            "map": { "a": { "at": t }, "b": { "at": t } },
            "list": [ { "at": t }, { "at": "not a time" } ],
        };
        for path in ["at", "none", "one.at", "map.*.at", "list.at", "missing.at"] {
            strings_to_dates(&mut d, path);
        }
        let date = Bson::DateTime(DateTime::from_millis(1_767_225_600_250));
        assert_eq!(d.get("at"), Some(&date));
        assert_eq!(d.get("none"), Some(&Bson::Null));
        assert_eq!(d.get_str("name").ok(), Some(t), "only named paths change");
        assert_eq!(d.get_document("one").unwrap().get("at"), Some(&date));
        let map = d.get_document("map").unwrap();
        assert_eq!(map.get_document("b").unwrap().get("at"), Some(&date));
        let list = d.get_array("list").unwrap();
        assert_eq!(list[0].as_document().unwrap().get("at"), Some(&date));
        assert_eq!(
            list[1].as_document().unwrap().get_str("at").ok(),
            Some("not a time")
        );

        let mut back = Bson::Document(d);
        dates_to_strings(&mut back);
        let back = back.as_document().unwrap();
        assert_eq!(back.get_str("at").ok(), Some(t));
        assert_eq!(
            back.get_document("one").unwrap().get_str("at").ok(),
            Some(t)
        );
    }

    #[test]
    fn reserved_fields_and_bad_revisions_are_codec_errors() {
        #[derive(Serialize)]
        struct Sneaky {
            _rev: u32,
        }
        let r = to_document("x", &Record::new(Sneaky { _rev: 1 }), 1, &[]);
        assert!(matches!(r, Err(StoreError::Codec(_))), "{r:?}");

        let r = from_document::<Document>(doc! { "_id": "x", "_rev": "one" });
        assert!(matches!(r, Err(StoreError::Codec(_))), "{r:?}");
        let r = from_document::<Document>(doc! { "_id": "x", "_rev": -1_i64 });
        assert!(matches!(r, Err(StoreError::Codec(_))), "{r:?}");
        let r = from_document::<Document>(doc! { "_id": "x", "_rev": 2_i32, "_outbox": 5 });
        assert!(matches!(r, Err(StoreError::Codec(_))), "{r:?}");
    }
}
