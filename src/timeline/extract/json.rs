//! A JSON record read flat, borrowing from its text: its fields in the order written, each a string, number, bool,
//! or (one level down) an object of its own; anything deeper or any array is skipped, not built. The extractors
//! want a handful of fields of millions of records: a `serde_json::Value` would allocate a map node, a key and a
//! value for every field of every record, where this allocates one vector and copies only escaped strings.

use std::{borrow::Cow, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// One field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'a> {
    Str(Cow<'a, str>),
    /// A non-negative integer (as `serde_json` reads them), a negative one, any other number.
    UInt(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// An object directly under the record.
    Object(Vec<(Cow<'a, str>, Leaf<'a>)>),
    /// Null, an array, an object deeper down: kept as nothing.
    Other,
}

impl<'a> Leaf<'a> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Leaf::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Leaf::UInt(u) => Some(*u),
            _ => None,
        }
    }

    /// A number as `serde_json` writes it; `None` for anything else.
    pub fn number_text(&self) -> Option<String> {
        match self {
            Leaf::UInt(u) => Some(u.to_string()),
            Leaf::Int(i) => Some(i.to_string()),
            Leaf::Float(f) => serde_json::Number::from_f64(*f).map(|n| n.to_string()),
            _ => None,
        }
    }

    /// A string, number or bool as text.
    pub fn scalar(&self) -> Option<String> {
        match self {
            Leaf::Str(s) => Some(s.to_string()),
            Leaf::Bool(b) => Some(b.to_string()),
            other => other.number_text(),
        }
    }
}

/// A JSON object's fields, in the order written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record<'a>(pub Vec<(Cow<'a, str>, Leaf<'a>)>);

impl<'a> Record<'a> {
    /// `text` read as a JSON object (and nothing after it but whitespace), or `None`.
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut d = serde_json::Deserializer::from_str(text);
        let fields = match (LeafSeed { depth: 0 }).deserialize(&mut d).ok()? {
            Leaf::Object(fields) => fields,
            _ => return None,
        };
        d.end().ok()?;
        Some(Record(fields))
    }

    /// The field named `name`; of a name written twice, the last (as `serde_json`'s map keeps it).
    pub fn get(&self, name: &str) -> Option<&Leaf<'a>> {
        self.0.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Its fields in the order `serde_json`'s map gives them: by name, each name once, the last of a name written
    /// twice. Which of two values an event keeps depends on it (an id named twice, or under two names).
    pub fn by_name(&self) -> Vec<(&str, &Leaf<'a>)> {
        by_name(&self.0)
    }
}

/// `fields` by name, each name once with its last value.
pub fn by_name<'r, 'a>(fields: &'r [(Cow<'a, str>, Leaf<'a>)]) -> Vec<(&'r str, &'r Leaf<'a>)> {
    let mut sorted: Vec<(&str, &Leaf<'a>)> = fields.iter().map(|(k, v)| (k.as_ref(), v)).collect();
    // Stable: a name's values stay in the order written, and the last of them is kept.
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted.dedup_by(|next, kept| {
        let same = next.0 == kept.0;
        if same {
            *kept = *next;
        }
        same
    });
    sorted
}

impl<'de: 'a, 'a> de::Deserialize<'de> for Leaf<'a> {
    /// A value inside a record: an object in it is one level down.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        LeafSeed { depth: 1 }.deserialize(d)
    }
}

/// Reads a value at `depth` (0: the record itself; 1: its fields; 2: inside an object of it, where objects are no
/// longer built).
#[derive(Clone, Copy)]
struct LeafSeed {
    depth: u8,
}

impl<'de> DeserializeSeed<'de> for LeafSeed {
    type Value = Leaf<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Leaf<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LeafSeed {
    type Value = Leaf<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E>(self, v: String) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Str(Cow::Owned(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Leaf<'de>, E> {
        Ok(Leaf::UInt(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Int(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Float(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Bool(v))
    }
    fn visit_unit<E>(self) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Other)
    }
    fn visit_none<E>(self) -> Result<Leaf<'de>, E> {
        Ok(Leaf::Other)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Leaf<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Leaf::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Leaf<'de>, A::Error> {
        if self.depth >= 2 {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Leaf::Other);
        }
        let mut fields = Vec::new();
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            let v = map.next_value_seed(LeafSeed { depth: self.depth + 1 })?;
            fields.push((k, v));
        }
        Ok(Leaf::Object(fields))
    }
}

/// A key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_flat_one_level_down_and_no_deeper() {
        let text = r#"{"time":1764902461123,"level":-1,"ratio":0.5,"ok":true,"none":null,"msg":"a \"quoted\" word",
            "metadata":{"agent_session_id":"as-1","deeper":{"jti":"hidden"},"n":3},"list":[{"x":1}],"msg":"second"}"#;
        let r = Record::parse(text).unwrap();
        assert_eq!(r.get("time"), Some(&Leaf::UInt(1764902461123)));
        assert_eq!(r.get("level"), Some(&Leaf::Int(-1)));
        assert_eq!(r.get("ratio").and_then(Leaf::number_text).as_deref(), Some("0.5"));
        assert_eq!(r.get("ok").and_then(Leaf::scalar).as_deref(), Some("true"));
        assert_eq!(r.get("none"), Some(&Leaf::Other));
        assert_eq!(r.get("msg").and_then(Leaf::as_str), Some("second"), "the last of a repeated name");
        assert!(
            matches!(&r.0[5].1, Leaf::Str(Cow::Owned(s)) if s == "a \"quoted\" word"),
            "an escaped string is unescaped"
        );
        assert!(matches!(r.get("time"), Some(Leaf::UInt(_))));
        let Some(Leaf::Object(inner)) = r.get("metadata") else { panic!("{r:?}") };
        assert_eq!(inner[0], (Cow::Borrowed("agent_session_id"), Leaf::Str(Cow::Borrowed("as-1"))));
        assert_eq!(inner[1].1, Leaf::Other, "two levels down is not built");
        assert_eq!(r.get("list"), Some(&Leaf::Other));
    }

    #[test]
    fn by_name_is_the_order_and_choice_of_serde_jsons_map() {
        let text =
            r#"{"zone_id":"z","reqId":"r-1","request_id":"r-2","a":{"jti":"j-1","jti":"j-2"},"reqId":"r-3","a":1}"#;
        let r = Record::parse(text).unwrap();
        let ours: Vec<(String, Option<String>)> =
            r.by_name().into_iter().map(|(k, v)| (k.to_string(), v.scalar())).collect();
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).unwrap();
        let theirs: Vec<(String, Option<String>)> = map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).or_else(|| v.as_number().map(|n| n.to_string()))))
            .collect();
        assert_eq!(ours, theirs);
        assert_eq!(ours[0], ("a".to_string(), Some("1".to_string())), "the last value of a name, whatever its type");
    }

    #[test]
    fn what_is_not_one_object_is_no_record() {
        for bad in ["[1,2]", "\"text\"", "{\"a\":1} trailing", "{\"a\":", "", "{\"a\":1}{\"b\":2}"] {
            assert!(Record::parse(bad).is_none(), "{bad}");
        }
        assert!(Record::parse(" {\"a\":1}\n").is_some());
    }
}
