//! Strict JSON reading for signed documents.
//!
//! Three rules beyond plain JSON: duplicate object keys are errors (two
//! parsers must never disagree on what a signed document says), unknown
//! fields are errors, and every error names the JSON path it is about, e.g.
//! `$.services[1].exec`.

use crate::text::clip;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;

/// What was wrong, and where in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// JSONPath of the offending value (`$` for the document).
    pub path: String,
    pub what: String,
}

impl JsonError {
    pub fn new(path: impl Into<String>, what: impl Into<String>) -> Self {
        JsonError {
            path: path.into(),
            what: what.into(),
        }
    }
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

/// At most this many values (objects, arrays, strings, numbers...) in one
/// document. A parsed value costs tens to hundreds of bytes against the one
/// to ten it took on the wire, so without a count a 1 MiB line of tiny
/// objects would cost the agent over 100 MiB while it is parsed. Real
/// requests and configs hold a few thousand values at most.
pub const MAX_VALUES: usize = 10_000;

/// Parses a JSON document, refusing duplicate keys, trailing data, and more
/// than [`MAX_VALUES`] values.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let budget = Cell::new(MAX_VALUES);
    let value = StrictSeed(&budget).deserialize(&mut de).map_err(syntax)?;
    de.end().map_err(syntax)?;
    Ok(value)
}

fn syntax(e: serde_json::Error) -> JsonError {
    // serde_json's message already carries "at line L column C".
    JsonError::new("$", format!("malformed JSON: {e}"))
}

/// Deserializes one value, charging it (and everything in it) to `budget`.
#[derive(Clone, Copy)]
struct StrictSeed<'b>(&'b Cell<usize>);

impl StrictSeed<'_> {
    fn charge<E: de::Error>(self) -> Result<(), E> {
        match self.0.get() {
            0 => Err(E::custom(format_args!("more than {MAX_VALUES} values"))),
            n => {
                self.0.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge()?;
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge()?;
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge()?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let v = map.next_value_seed(self)?;
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {:?}", clip(&key))));
            }
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// The fields of one JSON object, checked against the names it may have.
pub struct Fields<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Checks that `value` is an object whose keys are all in `allowed`.
    pub fn new(value: &'a Value, path: &str, allowed: &[&str]) -> Result<Self, JsonError> {
        let map = value
            .as_object()
            .ok_or_else(|| JsonError::new(path, format!("expected an object, found {}", kind(value))))?;
        if let Some(unknown) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(JsonError::new(join(path, unknown), "unknown field"));
        }
        Ok(Fields {
            path: path.to_string(),
            map,
        })
    }

    /// The path of a field of this object.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn opt(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    pub fn req(&self, key: &str) -> Result<&'a Value, JsonError> {
        self.opt(key)
            .ok_or_else(|| JsonError::new(self.path_of(key), "missing field"))
    }

    pub fn str(&self, key: &str) -> Result<&'a str, JsonError> {
        as_str(self.req(key)?, &self.path_of(key))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, JsonError> {
        self.opt(key).map(|v| as_str(v, &self.path_of(key))).transpose()
    }

    pub fn u64(&self, key: &str) -> Result<u64, JsonError> {
        as_u64(self.req(key)?, &self.path_of(key))
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, JsonError> {
        self.opt(key).map(|v| as_u64(v, &self.path_of(key))).transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, JsonError> {
        self.opt(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| JsonError::new(self.path_of(key), expected("a boolean", v)))
            })
            .transpose()
    }

    pub fn array(&self, key: &str) -> Result<&'a [Value], JsonError> {
        as_array(self.req(key)?, &self.path_of(key))
    }

    pub fn opt_array(&self, key: &str) -> Result<&'a [Value], JsonError> {
        match self.opt(key) {
            None => Ok(&[]),
            Some(v) => as_array(v, &self.path_of(key)),
        }
    }
}

pub fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, JsonError> {
    v.as_str().ok_or_else(|| JsonError::new(path, expected("a string", v)))
}

pub fn as_u64(v: &Value, path: &str) -> Result<u64, JsonError> {
    v.as_u64()
        .ok_or_else(|| JsonError::new(path, expected("a non-negative integer", v)))
}

pub fn as_array<'a>(v: &'a Value, path: &str) -> Result<&'a [Value], JsonError> {
    v.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| JsonError::new(path, expected("an array", v)))
}

/// The path of an array element.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The path of an object member. A key is client text, so it is clipped.
pub fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.len() <= crate::text::MAX_ECHO;
    if plain && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        format!("{path}.{key}")
    } else {
        format!("{path}[{:?}]", clip(key))
    }
}

fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", kind(found))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_u64() => "a non-negative integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parse_table() {
        let ok = [r#"{"a":1,"b":[1,{"c":null}]}"#, "[]", "\"x\"", " 1 "];
        for text in ok {
            assert!(parse_strict(text.as_bytes()).is_ok(), "{text}");
        }
        let bad = [
            (r#"{"a":1,"a":2}"#, "duplicate key \"a\""),
            (r#"{"x":{"a":1,"a":1}}"#, "duplicate key \"a\""),
            ("{} {}", "trailing characters"),
            ("{", "EOF while parsing"),
            ("", "EOF while parsing"),
            ("\u{1}", "expected value"),
        ];
        for (text, needle) in bad {
            let err = parse_strict(text.as_bytes()).unwrap_err();
            assert_eq!(err.path, "$");
            assert!(err.what.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn value_count_is_bounded() {
        let at_limit = format!("[{}]", vec!["0"; MAX_VALUES - 1].join(","));
        assert_eq!(
            parse_strict(at_limit.as_bytes()).unwrap().as_array().unwrap().len(),
            MAX_VALUES - 1
        );
        let over = format!("[{}]", vec!["{}"; MAX_VALUES].join(","));
        let err = parse_strict(over.as_bytes()).unwrap_err();
        assert!(err.what.contains("more than 10000 values"), "{err}");
        let deep_and_wide = format!("{{\"a\":[{}]}}", vec!["[1,2]"; MAX_VALUES / 3 + 1].join(","));
        assert!(
            parse_strict(deep_and_wide.as_bytes()).is_err(),
            "nested values count too"
        );
    }

    #[test]
    fn fields_name_their_paths() {
        let v = parse_strict(br#"{"n":"x","k":-1,"l":{},"weird key":1}"#).unwrap();
        let err = Fields::new(&v, "$", &["n", "k", "l"]).err().unwrap();
        assert_eq!(err.to_string(), "$[\"weird key\"]: unknown field");
        let f = Fields::new(&v, "$", &["n", "k", "l", "weird key"]).unwrap();
        assert_eq!(f.str("n").unwrap(), "x");
        let cases = [
            (
                f.u64("k").unwrap_err(),
                "$.k: expected a non-negative integer, found a number",
            ),
            (f.str("missing").unwrap_err(), "$.missing: missing field"),
            (f.array("l").unwrap_err(), "$.l: expected an array, found an object"),
            (
                f.u64("n").unwrap_err(),
                "$.n: expected a non-negative integer, found a string",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
        assert_eq!(index("$.s", 2), "$.s[2]");
        assert!(f.opt_array("absent").unwrap().is_empty());
    }
}
