//! One event of the timeline: when, where in the bundle, which service, what happened, which evidence ids.

use std::{borrow::Cow, sync::Arc};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::extract::json::{Leaf, Record, by_name};

/// The longest message an event keeps, in bytes (cut at a character boundary, with `…`); the record itself is at
/// its source in the bundle.
pub const MESSAGE_LIMIT: usize = 512;
/// The longest id or detail value kept, in bytes; a longer one is not an id (nothing Caracal makes is that long).
pub const VALUE_LIMIT: usize = 256;
/// At most this many ids and this many details per event.
pub const FIELDS_LIMIT: usize = 24;

/// Where an event is in the bundle: its collector, the artifact's path in the bag, and the line (text artifacts)
/// or the record (CSV rows, 1 = the first row after the header; entries of the manifest's lists). The names are
/// shared by every event of an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub collector: Arc<str>,
    pub path: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// UTC, to the precision the record gave.
    pub time: Timestamp,
    pub source: Source,
    /// The service the record is of (`audit`, `gateway`, `redis`, `postgres`, `alertmanager`, `preserve`, ...).
    pub service: Arc<str>,
    /// Which one: a container or pod, a stream, a table, an alert's name, a collector.
    pub instance: Arc<str>,
    /// What kind of record: `log`, `audit.event`, `stream.dead_letter`, `alert.firing`, ... (docs/timeline.md).
    pub kind: Cow<'static, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Cow<'static, str>>,
    pub message: String,
    /// The evidence ids found in the record, by name (`request_id`, `zone_id`, `agent_session_id`, ...).
    #[serde(default)]
    pub ids: Fields,
    /// A few facts of the record worth seeing beside the message (a dead letter's `reason`, a pending entry's
    /// `deliveries`); never a whole record.
    #[serde(default, skip_serializing_if = "Fields::is_empty")]
    pub details: Fields,
}

/// Named values of an event, sorted by name, each name once. A small vector, not a map: an event has a handful,
/// and a timeline holds millions of events (a `BTreeMap` node is half a kilobyte however few it holds). Names are
/// mostly the fixed ones of [`ID_NAMES`], borrowed; serialized as a JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields(Vec<(Cow<'static, str>, String)>);

impl Fields {
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(name)).ok().map(|i| self.0[i].1.as_str())
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    /// Sets `name` to `value`, replacing what it held.
    pub fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: String) {
        let name = name.into();
        match self.0.binary_search_by(|(k, _)| k.as_ref().cmp(name.as_ref())) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => {
                // Room for a record's usual handful at once, not grown one by one.
                if self.0.capacity() == 0 {
                    self.0.reserve_exact(8);
                }
                self.0.insert(i, (name, value))
            }
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_str()))
    }
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, v)| v.as_str())
    }
    /// The bytes it holds beyond its own size, for the merge's budget.
    fn weight(&self) -> usize {
        self.0.capacity() * std::mem::size_of::<(Cow<'static, str>, String)>()
            + self
                .0
                .iter()
                .map(|(k, v)| v.capacity() + if let Cow::Owned(k) = k { k.capacity() } else { 0 })
                .sum::<usize>()
    }
}

impl<const N: usize> From<[(&'static str, &str); N]> for Fields {
    fn from(pairs: [(&'static str, &str); N]) -> Self {
        let mut f = Fields::default();
        for (k, v) in pairs {
            f.insert(k, v.to_string());
        }
        f
    }
}

impl std::ops::Index<&str> for Fields {
    type Output = str;
    fn index(&self, name: &str) -> &str {
        self.get(name).unwrap_or_else(|| panic!("no field {name}"))
    }
}

impl Serialize for Fields {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k.as_ref(), v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut f = Fields::default();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    // A known name is borrowed again: a spilled event comes back as small as it went.
                    let name: Cow<'static, str> = match ID_NAMES.iter().find(|(_, n)| *n == k) {
                        Some((_, n)) => Cow::Borrowed(*n),
                        None => Cow::Owned(k),
                    };
                    f.insert(name, v);
                }
                Ok(f)
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Names under which Caracal's records carry evidence ids (caracal.md), and what each is called in the timeline.
const ID_NAMES: &[(&str, &str)] = &[
    ("request_id", "request_id"),
    ("reqId", "request_id"),
    ("x_request_id", "request_id"),
    ("zone_id", "zone_id"),
    ("session_id", "session_id"),
    ("sid", "session_id"),
    ("authority_record_id", "session_id"),
    ("agent_session_id", "agent_session_id"),
    ("delegation_edge_id", "delegation_edge_id"),
    ("edge_id", "delegation_edge_id"),
    ("source_session_id", "source_session_id"),
    ("target_session_id", "target_session_id"),
    ("jti", "jti"),
    ("event_id", "event_id"),
    ("outbox_id", "outbox_id"),
    ("src_outbox_id", "outbox_id"),
    ("grant_id", "grant_id"),
    ("application_id", "application_id"),
    ("client_id", "application_id"),
    ("policy_set_id", "policy_set_id"),
    ("policy_set_version_id", "policy_set_version_id"),
    ("active_version_id", "policy_set_version_id"),
    ("policy_version_id", "policy_version_id"),
    ("trace_id", "trace_id"),
    ("src_id", "src_id"),
    ("original_id", "entry_id"),
    ("source_id", "entry_id"),
];

/// The timeline's name for an id field called `field` in a record, if it is one.
pub fn id_name(field: &str) -> Option<&'static str> {
    ID_NAMES.iter().find(|(f, _)| *f == field).map(|(_, n)| *n)
}

impl Event {
    /// Adds an id, unless the record hid it (`***`, a redaction marker), it is empty or too long to be one, or the
    /// event already has one of that name.
    pub fn id(&mut self, name: impl Into<Cow<'static, str>>, value: &str) {
        let value = value.trim();
        let name = name.into();
        if value.is_empty()
            || value.len() > VALUE_LIMIT
            || value.bytes().all(|c| c == b'*')
            || value.starts_with("[REDACTED")
            || self.ids.len() >= FIELDS_LIMIT
            || self.ids.contains_key(&name)
        {
            return;
        }
        self.ids.insert(name, value.to_string());
    }

    /// Adds a detail (cut to [`VALUE_LIMIT`]).
    pub fn detail(&mut self, name: impl Into<Cow<'static, str>>, value: &str) {
        if value.is_empty() || self.details.len() >= FIELDS_LIMIT {
            return;
        }
        self.details.insert(name, cut(value, VALUE_LIMIT));
    }

    /// Takes the ids in a JSON record's fields (one level down too: Caracal nests them in `metadata`, `data`), by
    /// name as `serde_json`'s map orders them: of an id given twice, the value kept is the one a map would keep.
    pub fn ids_from_json(&mut self, record: &Record<'_>) {
        for (k, v) in record.by_name() {
            match v {
                Leaf::Str(s) => {
                    if let Some(name) = id_name(k) {
                        self.id(name, s);
                    }
                }
                Leaf::Object(inner) => {
                    for (k, v) in by_name(inner) {
                        if let (Some(name), Some(s)) = (id_name(k), v.as_str()) {
                            self.id(name, s);
                        }
                    }
                }
                number => {
                    if let Some(name) = id_name(k)
                        && let Some(n) = number.number_text()
                    {
                        self.id(name, &n);
                    }
                }
            }
        }
    }

    /// Whether any of the event's ids has the value `value`.
    pub fn carries(&self, value: &str) -> bool {
        self.ids.values().any(|v| v == value)
    }

    /// About how much memory the event holds beyond its own size, for the merge's budget: its message and its
    /// fields (the shared names of its artifact are counted once per artifact, not here).
    pub fn weight(&self) -> usize {
        let owned = |c: &Cow<'static, str>| if let Cow::Owned(s) = c { s.capacity() } else { 0 };
        // The allocator's own overhead: about 16 bytes per allocation.
        let allocations = 2 + self.ids.len() + self.details.len();
        self.message.capacity()
            + owned(&self.kind)
            + self.level.as_ref().map_or(0, owned)
            + self.ids.weight()
            + self.details.weight()
            + 16 * allocations
    }
}

/// `s` cut to at most `limit` bytes at a character boundary, with `…` when cut; control characters become spaces
/// (a record's message is one line wherever it is shown).
pub fn cut(s: &str, limit: usize) -> String {
    let s = s.trim();
    let mut end = s.len().min(limit);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let kept = &s[..end];
    // Most messages are printable ASCII, copied as they are; anything else goes character by character.
    let mut out: String = if kept.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        kept.to_string()
    } else {
        kept.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
    };
    if end < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Event {
        Event {
            time: Timestamp::UNIX_EPOCH,
            source: Source { collector: "c".into(), path: "data/c/x".into(), line: Some(1), record: None },
            service: "s".into(),
            instance: "i".into(),
            kind: "log".into(),
            level: None,
            message: String::new(),
            ids: Fields::default(),
            details: Fields::default(),
        }
    }

    #[test]
    fn hidden_empty_and_oversize_values_are_no_ids() {
        let mut e = blank();
        e.id("session_id", "***");
        e.id("jti", "[REDACTED:jwt:1a2b]");
        e.id("zone_id", " ");
        e.id("request_id", &"r".repeat(VALUE_LIMIT + 1));
        assert!(e.ids.is_empty(), "{:?}", e.ids);
        e.id("request_id", "req-1");
        e.id("request_id", "req-2");
        assert_eq!(&e.ids["request_id"], "req-1", "the first value of a name is kept");
    }

    /// Of an id given twice, or under two names, the value taken is the one `serde_json`'s map would give: the last of
    /// a repeated name, and names in key order (not as written), at the top and one level down.
    #[test]
    fn ids_are_taken_as_serde_jsons_map_orders_them() {
        let ids = |text: &str| {
            let mut e = blank();
            e.ids_from_json(&Record::parse(text).unwrap());
            e.ids
        };
        assert_eq!(ids(r#"{"request_id":"r-1","request_id":"r-2"}"#).get("request_id"), Some("r-2"));
        assert_eq!(ids(r#"{"request_id":"b","reqId":"a"}"#).get("request_id"), Some("a"), "reqId sorts first");
        assert_eq!(ids(r#"{"metadata":{"jti":"j-1","jti":"j-2"}}"#).get("jti"), Some("j-2"));
        assert_eq!(ids(r#"{"data":{"request_id":"b","reqId":"a"}}"#).get("request_id"), Some("a"));
    }

    #[test]
    fn ids_come_from_known_names_and_one_level_of_nesting() {
        let mut e = blank();
        let text =
            r#"{"reqId": "req-9", "msg": "x", "metadata": { "agent_session_id": "as-1", "note": "n" }, "count": 3}"#;
        e.ids_from_json(&Record::parse(text).unwrap());
        assert_eq!(e.ids.get("request_id"), Some("req-9"));
        assert_eq!(e.ids.get("agent_session_id"), Some("as-1"));
        assert_eq!(e.ids.len(), 2);
    }

    #[test]
    fn messages_are_cut_at_a_character_and_kept_on_one_line() {
        assert_eq!(cut("a\nb\tc", 10), "a b c");
        let long = "é".repeat(400);
        let c = cut(&long, MESSAGE_LIMIT);
        assert!(c.len() <= MESSAGE_LIMIT + '…'.len_utf8() && c.ends_with('…'));
    }
}
