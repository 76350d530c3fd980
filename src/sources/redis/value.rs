//! Redis replies as JSON, binary-safe: a byte string that is valid UTF-8 is a JSON string; anything else is
//! `{"base64": "..."}` (the marker documented in docs/bundle-format.md). Keys, field names and values alike.

use base64::Engine;
use redis::Value;
use serde_json::{Map, Value as Json, json};

pub fn bytes_json(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// A reply as JSON, generically.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Nil => Json::Null,
        Value::Int(i) => json!(i),
        Value::BulkString(b) => bytes_json(b),
        Value::Array(a) | Value::Set(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::SimpleString(s) => Json::String(s.clone()),
        Value::Okay => Json::String("OK".into()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (text(k), to_json(v))).collect()),
        Value::Double(d) => json!(d),
        Value::Boolean(b) => json!(b),
        Value::VerbatimString { text, .. } => Json::String(text.clone()),
        Value::Attribute { data, .. } => to_json(data),
        other => Json::String(format!("{other:?}")),
    }
}

/// A reply that is a map (RESP3) or a flat `[key, value, key, value ...]` array (RESP2) as a JSON object, with
/// nested maps converted by `nested`.
pub fn map_json(v: &Value, nested: impl Fn(&str, &Value) -> Json) -> Json {
    let mut out = Map::new();
    for (k, v) in pairs(v) {
        let k = text(k);
        let j = nested(&k, v);
        out.insert(k, j);
    }
    Json::Object(out)
}

/// The key/value pairs of a map-like reply.
pub fn pairs(v: &Value) -> Vec<(&Value, &Value)> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(a) => a.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
        _ => Vec::new(),
    }
}

/// The field of a map-like reply named `name`.
pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    pairs(v).into_iter().find(|(k, _)| text(k) == name).map(|(_, v)| v)
}

/// A reply element as text (lossy for binary).
pub fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Okay => "OK".into(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Double(d) => d.to_string(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    }
}

pub fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(i) => Some(*i),
        other => text(other).parse().ok(),
    }
}

/// A stream entry `[id, [field, value, ...]]` as `{"id", "fields": [[field, value], ...]}`: pairs, not an object,
/// because a stream entry may repeat a field name and its order is part of the evidence.
pub fn entry_json(entry: &Value) -> Option<(String, Json)> {
    let Value::Array(parts) = entry else { return None };
    let id = text(parts.first()?);
    let fields: Vec<Json> = match parts.get(1) {
        Some(Value::Array(fv)) => fv
            .chunks(2)
            .map(|c| {
                Json::Array(
                    c.iter()
                        .map(|x| match x {
                            Value::BulkString(b) => bytes_json(b),
                            other => to_json(other),
                        })
                        .collect(),
                )
            })
            .collect(),
        Some(Value::Map(m)) => m.iter().map(|(k, v)| Json::Array(vec![to_json(k), to_json(v)])).collect(),
        _ => Vec::new(),
    };
    Some((id.clone(), json!({ "id": id, "fields": fields })))
}

/// The id of a stream entry `[id, fields]`.
pub fn entry_id(entry: &Value) -> Option<String> {
    match entry {
        Value::Array(parts) => parts.first().map(text),
        _ => None,
    }
}

/// Serializes a stream entry exactly like [`entry_json`], straight from the reply: no intermediate JSON tree,
/// which matters at hundreds of thousands of entries.
pub struct EntryRef<'a>(pub &'a Value);

struct BytesRef<'a>(&'a Value);

impl serde::Serialize for BytesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::BulkString(b) => Bytes(b).serialize(s),
            other => to_json(other).serialize(s),
        }
    }
}

/// A byte string as [`bytes_json`] has it, serialized in place: a string when it is UTF-8, else `{"base64": ...}`.
pub struct Bytes<'a>(pub &'a [u8]);

impl serde::Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("base64", &base64::engine::general_purpose::STANDARD.encode(self.0))?;
                m.end()
            }
        }
    }
}

impl serde::Serialize for EntryRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Fields<'a>(&'a [Value]);
        impl serde::Serialize for Fields<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len().div_ceil(2)))?;
                for pair in self.0.chunks(2) {
                    seq.serialize_element(&Pair(pair))?;
                }
                seq.end()
            }
        }
        /// `[field, value]`, written without gathering it first (hundreds of thousands of entries, each with many
        /// fields).
        struct Pair<'a>(&'a [Value]);
        impl serde::Serialize for Pair<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for v in self.0 {
                    seq.serialize_element(&BytesRef(v))?;
                }
                seq.end()
            }
        }
        let Value::Array(parts) = self.0 else { return s.serialize_none() };
        let mut m = s.serialize_map(Some(2))?;
        match parts.first() {
            // As `text`, borrowed: an id is ASCII.
            Some(Value::BulkString(b)) => m.serialize_entry("id", &String::from_utf8_lossy(b))?,
            other => m.serialize_entry("id", &other.map(text).unwrap_or_default())?,
        }
        match parts.get(1) {
            Some(Value::Array(fv)) => m.serialize_entry("fields", &Fields(fv))?,
            _ => {
                m.serialize_entry("fields", &entry_json(self.0).map(|(_, j)| j["fields"].clone()).unwrap_or_default())?
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values_get_the_base64_marker() {
        assert_eq!(bytes_json(b"plain"), json!("plain"));
        assert_eq!(bytes_json(&[0xff, 0x00, 0x01]), json!({"base64": "/wAB"}));
    }

    #[test]
    fn entries_keep_field_order_and_duplicates() {
        let e = Value::Array(vec![
            Value::BulkString(b"1-1".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"2".to_vec()),
                Value::BulkString(b"a".to_vec()),
                Value::BulkString(vec![0xfe]),
                Value::BulkString(b"b".to_vec()),
                Value::BulkString(b"3".to_vec()),
            ]),
        ]);
        let (id, j) = entry_json(&e).unwrap();
        assert_eq!(id, "1-1");
        assert_eq!(j, json!({"id":"1-1","fields":[["b","2"],["a",{"base64":"/g=="}],["b","3"]]}));
        assert_eq!(serde_json::to_value(EntryRef(&e)).unwrap(), j, "the streaming form writes the same JSON");
    }
}
