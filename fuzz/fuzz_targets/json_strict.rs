//! Strict JSON (common/src/json.rs), under every signed document.
//!
//! Checked against plain serde_json on the same bytes: strict parsing
//! accepts a subset, agrees on the value when both accept, and what it
//! accepts writes back to text that parses to the same value. A separate
//! pass keeps every object member in order, duplicates included: strict
//! parsing refuses a document exactly when that pass finds a duplicate key
//! (or plain serde_json refuses it too), or finds more than MAX_VALUES
//! values, which strict parsing refuses too. Deep nesting is refused, not a
//! stack overflow. The path helpers take any key, and field access never
//! panics.
#![no_main]

use basalt_common::json::{self, Fields};
use basalt_fuzz::has_float;
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let strict = json::parse_strict(data);
    let plain = serde_json::from_slice::<Value>(data);
    let members = serde_json::from_slice::<Members>(data).ok();
    let duplicated = members.as_ref().is_some_and(Members::has_duplicate_key);
    let too_many = members.as_ref().is_some_and(|m| m.count() > json::MAX_VALUES);
    match (&strict, &plain) {
        (Ok(s), Ok(p)) => {
            assert_eq!(s, p);
            assert!(!duplicated, "strict accepted a duplicate key: {s}");
            assert!(!too_many, "strict accepted more than {} values", json::MAX_VALUES);
        }
        (Ok(s), Err(e)) => panic!("strict accepted what serde_json refuses ({e}): {s}"),
        (Err(e), Ok(_)) => {
            assert_eq!(e.path, "$");
            if e.what.contains("duplicate key") {
                assert!(duplicated, "strict found a duplicate key that is not there: {e}");
            } else if e.what.contains("values") {
                assert!(too_many, "strict counted too many values where there are not: {e}");
            } else {
                panic!("strict refused valid JSON: {e}");
            }
        }
        (Err(e), Err(_)) => assert_eq!(e.path, "$"),
    }
    let Ok(doc) = strict else {
        return;
    };
    if !has_float(&doc) {
        let text = serde_json::to_vec(&doc).expect("a Value always serialises");
        assert_eq!(json::parse_strict(&text).as_ref(), Ok(&doc));
        let pretty = serde_json::to_vec_pretty(&doc).expect("a Value always serialises");
        assert_eq!(json::parse_strict(&pretty).as_ref(), Ok(&doc));
    }
    walk(&doc, "$");
});

/// Reads every object member through `Fields` and checks the paths it names.
fn walk(v: &Value, path: &str) {
    match v {
        Value::Object(map) => {
            let keys: Vec<&str> = map.keys().map(String::as_str).collect();
            let f = Fields::new(v, path, &keys).expect("every key is allowed");
            assert_eq!(f.path(), path);
            for key in &keys {
                let p = f.path_of(key);
                assert!(p.starts_with(path) && p.len() > path.len(), "{p}");
                assert_eq!(f.req(key).ok(), map.get(*key));
                let _ = (f.str(key), f.u64(key), f.bool(key), f.array(key), f.opt_array(key));
                walk(&map[*key], &p);
            }
            if let Some(first) = keys.first() {
                let narrower: Vec<&str> = keys[1..].to_vec();
                let err = Fields::new(v, path, &narrower).err().expect("a key is not allowed");
                assert_eq!(err.what, "unknown field");
                assert_eq!(err.path, json::join(path, first));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &json::index(path, i));
            }
        }
        _ => assert!(Fields::new(v, path, &[]).is_err()),
    }
}

/// A JSON document with every object member kept, in order, duplicates
/// included: what the text says, before any map merges keys.
enum Members {
    Scalar,
    Array(Vec<Members>),
    Object(Vec<(String, Members)>),
}

impl Members {
    /// Every value, containers included, as parse_strict charges them.
    fn count(&self) -> usize {
        1 + match self {
            Members::Scalar => 0,
            Members::Array(items) => items.iter().map(Members::count).sum(),
            Members::Object(pairs) => pairs.iter().map(|(_, v)| v.count()).sum(),
        }
    }

    fn has_duplicate_key(&self) -> bool {
        match self {
            Members::Scalar => false,
            Members::Array(items) => items.iter().any(Members::has_duplicate_key),
            Members::Object(pairs) => {
                let keys: std::collections::BTreeSet<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
                keys.len() != pairs.len() || pairs.iter().any(|(_, v)| v.has_duplicate_key())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Members, E> {
        Ok(Members::Scalar)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Members, E> {
        Ok(Members::Scalar)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Members, E> {
        Ok(Members::Scalar)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Members, E> {
        Ok(Members::Scalar)
    }
    fn visit_str<E>(self, _: &str) -> Result<Members, E> {
        Ok(Members::Scalar)
    }
    fn visit_unit<E>(self) -> Result<Members, E> {
        Ok(Members::Scalar)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Members::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut pairs = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Members>()? {
            pairs.push((k, v));
        }
        Ok(Members::Object(pairs))
    }
}
