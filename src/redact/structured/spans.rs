//! Secrets that span lines in shapes the line rules alone miss: armored keys whose every line carries a log prefix
//! (a timestamp, CRI's `stderr F`), PGP and PuTTY private keys, a one-line key cut where its line was cut (Docker's
//! 16 KiB partial records, the artifact writer's 1 MiB pieces), quoted values that close on a later line (YAML, TOML
//! `"""`, env files), YAML values on the next lines, Kubernetes Secrets' `data`, TOML inline tables, and JSON
//! escaped more than once. Each is a state entered on the line that starts it. While none is open a line costs a
//! look at its first bytes (YAML and JSON, for Kubernetes objects) or nothing; starts are looked for only on lines
//! that passed the prefilter.

use std::{
    ops::{Deref, Range},
    sync::LazyLock,
};

use regex::bytes::Regex;

use super::{Format, Redactor, TextRedactor, is_pem_body, skip_ws, string_end, unquote};
use crate::redact::rules;

type Edits = Vec<(Range<usize>, &'static str)>;

/// Fragments that start a span and are neither a pattern's anchor nor a secret key's: added to the prefilter.
pub(super) const ANCHORS: &[&str] = &["PuTTY-User-Key-File"];

/// The state of one artifact's spans.
#[derive(Default)]
pub(super) struct Spans {
    pub(super) span: Option<Span>,
    /// The line being read has no line end: a Docker partial record or a piece of a long line, which the next
    /// line continues.
    pub(super) cut: bool,
    /// The last line was cut inside what may be a key's header: its start, which this line may complete.
    head_cut: Option<Vec<u8>>,
    k8s: Option<K8s>,
}

impl Spans {
    /// Called before a line is read: what the last line left, and whether this one is cut.
    pub(super) fn start_line(&mut self, body: &[u8], cut: bool) {
        if let Some(head) = self.head_cut.take()
            && self.span.is_none()
        {
            self.span = Some(Span::HeaderCut { head });
        }
        self.cut = cut;
        if cut {
            self.head_cut = header_start(body);
        }
    }

    /// Whether a span is open (or may be, after a line cut inside a header).
    pub(super) fn active(&self) -> bool {
        self.span.is_some() || self.head_cut.is_some()
    }
}

/// The start of a key's header that ends a cut line (`-----BEGIN RSA PRIV`), which the next line may complete.
fn header_start(body: &[u8]) -> Option<Vec<u8>> {
    // A header's start ends in `-`, a space or a capital: others are not looked at.
    if !(body.last() == Some(&b'-') || body.ends_with(b" ") || body.last().is_some_and(u8::is_ascii_uppercase)) {
        return None;
    }
    let tail = body.len().saturating_sub(64);
    let m = HEADER_START.find(&body[tail..])?;
    let head = &body[tail + m.start()..];
    (!ARMOR_BEGIN.is_match(head)).then(|| head.to_vec())
}

pub(super) enum Span {
    /// The body of an armored key (PEM, PGP) after its header, each line perhaps between a prefix and a suffix of
    /// the shapes the header's line had (digits aside): a log's timestamp, a JSON log line's `{"msg":"` and `"}`.
    Armor { prefix: Vec<u8>, suffix: Vec<u8> },
    /// A key on one line whose line was cut before its END: everything up to the END is the key. The last bytes of
    /// the key so far, for an END cut in two.
    Cut { tail: Vec<u8> },
    /// A line was cut inside what may be a key's header: its start, which the next line may complete.
    HeaderCut { head: Vec<u8> },
    /// A PuTTY key file: this many private lines are still to come.
    Putty { private_left: usize },
    /// A quoted value under a secret key, open until this closing quote.
    Quoted { close: &'static [u8] },
    /// A YAML secret key without a value on its line: its value is on the lines indented deeper than the key.
    YamlNext { indent: usize },
}

/// A Kubernetes object being read (YAML or pretty-printed JSON), from its `apiVersion`.
struct K8s {
    /// The column of the object's own keys.
    col: usize,
    /// Its `kind` is `Secret` (`None` until read: `kubectl` prints `data` before `kind`).
    secret: Option<bool>,
    /// Inside its `data` or `stringData`.
    section: Option<Section>,
    /// The column of the section's entries (its first entry's).
    entry_col: Option<usize>,
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    /// A Secret's: every value.
    All,
    /// An object's `data` whose kind is not known yet: the values shaped as a Secret's are (base64).
    Base64,
}

static ARMOR_BEGIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----BEGIN (?:[A-Z0-9 ]*PRIVATE KEY|PGP PRIVATE KEY BLOCK)-----").expect("valid regex")
});
/// The start of an armored key's header at the end of a text, cut before the header's end.
static HEADER_START: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-(?:-(?:-(?:-(?:-(?:B(?:E(?:G(?:I(?:N(?: [A-Z0-9 ]{0,40}-{0,4})?)?)?)?)?)?)?)?)?)?$")
        .expect("valid regex")
});
static ARMOR_END: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----END (?:[A-Z0-9 ]*PRIVATE KEY|PGP PRIVATE KEY BLOCK)-----").expect("valid regex")
});
/// An env line whose quoted value opens: `KEY="…`.
static ENV_OPEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]{0,127})\s*=\s*(["'])"#).expect("valid regex")
});
/// A TOML multi-line string opening: `key = """`.
static TOML_OPEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*([A-Za-z0-9_\-]{1,128}|"[^"]{1,128}"|'[^']{1,128}')\s*=\s*("""|''')"#).expect("valid regex")
});
/// A pair of a TOML inline table: `{ user = "u", password = "x" }`.
static TOML_INLINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"([A-Za-z0-9_\-]{1,128}|"[^"]{1,128}"|'[^']{1,128}')\s*=\s*("(?:[^"\\]|\\.)*"|'[^']*')"#)
        .expect("valid regex")
});

impl<R: Deref<Target = Redactor> + Clone> TextRedactor<R> {
    /// The edits of a line a span holds; `None` when none does (the line is read as any other).
    pub(super) fn span_edits(&mut self, body: &[u8]) -> Option<Edits> {
        if self.spans.span.is_some()
            && let Some(edits) = self.span_continue(body)
        {
            return Some(edits);
        }
        if matches!(self.format, Format::Yaml | Format::Json) {
            return self.k8s_line(body);
        }
        None
    }

    fn span_continue(&mut self, body: &[u8]) -> Option<Edits> {
        let span = self.spans.span.take()?;
        let mut edits = Edits::new();
        match span {
            Span::Armor { prefix, suffix } => {
                let at = between(body, &prefix, &suffix).filter(|r| is_pem_body(&body[r.clone()]));
                if let Some(m) = ARMOR_END.find(body) {
                    // What precedes the END after the prefix is the key's, as on any line of it.
                    let from = between(body, &prefix, b"").map_or(m.start(), |r| r.start).min(m.start());
                    edits.push((from..m.start(), "private-key"));
                    self.rest_after(body, m.end(), &mut edits);
                    return Some(edits);
                }
                let at = match at {
                    Some(at) => at,
                    // As the unprefixed PEM rule reads: the key's lines alone, after a header ending its line.
                    None if suffix.is_empty() && is_pem_body(body) => 0..body.len(),
                    None => return None,
                };
                if !is_armor_header(body[at.clone()].trim_ascii()) {
                    let r = trimmed(&body[..at.end], at.start);
                    edits.push((r, "private-key"));
                }
                self.spans.span = Some(Span::Armor { prefix, suffix });
            }
            Span::Cut { tail } => {
                if let Some(m) = ARMOR_END.find(body) {
                    edits.push((0..m.start(), "private-key"));
                    self.rest_after(body, m.end(), &mut edits);
                    return Some(edits);
                }
                let mut joined = tail;
                let seen = joined.len();
                joined.extend_from_slice(&body[..body.len().min(64)]);
                if let Some(m) = ARMOR_END.find(&joined).filter(|m| m.end() > seen) {
                    // The END was cut in two: its start ended the last line (and went with the key).
                    self.rest_after(body, m.end() - seen, &mut edits);
                    return Some(edits);
                }
                edits.push((0..body.len(), "private-key"));
                if self.spans.cut {
                    joined.extend_from_slice(&body[body.len().min(64)..]);
                    self.spans.span = Some(Span::Cut { tail: last_bytes(&joined) });
                }
            }
            Span::HeaderCut { head } => {
                let mut joined = head.clone();
                joined.extend_from_slice(&body[..body.len().min(64)]);
                let Some(b) = ARMOR_BEGIN.find(&joined).filter(|b| b.start() == 0) else {
                    // Cut again inside the header: the next line may still complete it.
                    let whole = body.len() <= 64 && HEADER_START.find(&joined).is_some_and(|m| m.start() == 0);
                    if !(self.spans.cut && whole) {
                        return None;
                    }
                    self.spans.head_cut = Some(joined);
                    return Some(edits);
                };
                let end = b.end() - head.len();
                self.after_header(body, 0, end, true, &mut edits);
                if self.spans.span.is_none() {
                    let rest = ARMOR_END.find(&body[end..]).map_or(end, |e| end + e.end());
                    self.rest_after(body, rest, &mut edits);
                }
            }
            Span::Putty { private_left } => {
                let t = body.trim_ascii();
                if private_left > 0 {
                    if t.is_empty() || !is_base64(t) {
                        return None;
                    }
                    edits.push((trimmed(body, 0), "private-key"));
                    self.spans.span = Some(Span::Putty { private_left: private_left - 1 });
                } else if let Some(n) = t.strip_prefix(b"Private-Lines:") {
                    let n = std::str::from_utf8(n).ok().and_then(|n| n.trim().parse::<usize>().ok()).unwrap_or(0);
                    // A file holds a few dozen; a larger count is not trusted to hold the lines after it.
                    self.spans.span = Some(Span::Putty { private_left: n.min(4096) });
                } else if t.starts_with(b"Private-MAC:") {
                    // The file's last line: a MAC, not the key.
                } else if is_armor_header(t) || is_base64(t) {
                    self.spans.span = Some(Span::Putty { private_left: 0 });
                } else {
                    return None;
                }
            }
            Span::Quoted { close } => {
                let start = body.len() - body.trim_ascii_start().len();
                match find_close(body, close) {
                    Some(c) => edits.push((start.min(c)..c, "key-name")),
                    None => {
                        edits.push((trimmed(body, 0), "key-name"));
                        self.spans.span = Some(Span::Quoted { close });
                    }
                }
            }
            Span::YamlNext { indent } => {
                let own = body.iter().take_while(|b| **b == b' ').count();
                let t = body[own..].trim_ascii_end();
                if t.is_empty() || own > indent && t[0] == b'#' {
                    self.spans.span = Some(Span::YamlNext { indent });
                    return Some(edits);
                }
                if own <= indent {
                    return None;
                }
                if let Some(close) = quote_close(t[0]) {
                    match find_close(&t[1..], close) {
                        Some(c) => edits.push((own + 1..own + 1 + c, "key-name")),
                        None => {
                            edits.push((own + 1..own + t.len(), "key-name"));
                            self.spans.span = Some(Span::Quoted { close });
                        }
                    }
                    return Some(edits);
                }
                // A mapping, a list or a flow collection under the key: its own lines, read as any.
                if t.starts_with(b"- ")
                    || t == b"-"
                    || matches!(t[0], b'[' | b'{' | b'|' | b'>' | b'&' | b'*' | b'!')
                    || memchr::memmem::find(t, b": ").is_some()
                    || t.ends_with(b":")
                {
                    return None;
                }
                let end = memchr::memmem::find(t, b" #").unwrap_or(t.len());
                edits.push((own..own + end, "key-name"));
                self.spans.span = Some(Span::YamlNext { indent });
            }
        }
        Some(edits)
    }

    /// The rest of a line after a span closed on it, read as any line: what follows a key's END in a JSON string
    /// starts after that string's closing quote.
    fn rest_after(&mut self, body: &[u8], from: usize, edits: &mut Edits) {
        let rest = &body[from..];
        let from = from + memchr::memchr(b'"', rest).map_or(0, |q| q + 1);
        if from < body.len() {
            let more = self.edits(&body[from..]);
            edits.extend(more.into_iter().map(|(r, rule)| (r.start + from..r.end + from, rule)));
        }
    }

    /// Spans that start on this line (which passed the prefilter; `keyed` when it holds a secret key's fragment).
    pub(super) fn span_starts(&mut self, body: &[u8], keyed: bool, edits: &mut Edits) {
        if memchr::memmem::find(body, b"PRIVATE KEY").is_some() {
            self.armor_start(body, edits);
        }
        if body.trim_ascii_start().starts_with(b"PuTTY-User-Key-File-") {
            self.spans.span = Some(Span::Putty { private_left: 0 });
        }
        if !keyed {
            return;
        }
        match self.format {
            Format::Yaml => self.yaml_start(body),
            Format::Toml => toml_edits(body, &mut self.spans, edits),
            Format::Env => self.env_start(body, edits),
            _ => {}
        }
        if memchr::memmem::find(body, br#"\\\""#).is_some() {
            nested_escaped_pairs(body, edits);
        }
    }

    fn armor_start(&mut self, body: &[u8], edits: &mut Edits) {
        let Some(b) = ARMOR_BEGIN.find(body) else { return };
        let pgp = b.as_bytes().starts_with(b"-----BEGIN PGP");
        self.after_header(body, b.start(), b.end(), pgp, edits);
    }

    /// What follows a key's header, which spans `start..end` of the line. `ours` when the line rules do not read
    /// that header (a PGP key's, a header cut between two lines).
    fn after_header(&mut self, body: &[u8], start: usize, end: usize, ours: bool, edits: &mut Edits) {
        let after = &body[end..];
        if let Some(e) = ARMOR_END.find(after) {
            // A whole key on one line: a PEM key's is a value pattern's.
            if ours {
                edits.push((end..end + e.start(), "private-key"));
            }
            return;
        }
        let prefix = &body[..start];
        if after.trim_ascii().is_empty() {
            if self.spans.cut {
                self.in_pem = false;
                self.spans.span = Some(Span::Cut { tail: last_bytes(body) });
            } else if ours || !prefix.trim_ascii().is_empty() {
                self.in_pem = false;
                self.spans.span = Some(Span::Armor { prefix: shape(prefix), suffix: Vec::new() });
            }
            return;
        }
        // The header closes a JSON string (`{"msg":"-----BEGIN PRIVATE KEY-----"}`): a JSON log line per line of
        // the key, each line's text between the same prefix and suffix.
        if after[0] == b'"' && after.len() <= 256 && memchr::memchr(b'"', prefix).is_some() && !self.spans.cut {
            self.in_pem = false;
            self.spans.span = Some(Span::Armor { prefix: shape(prefix), suffix: shape(after) });
            return;
        }
        // The key goes on after its header on this line (escaped line ends, or spaces for them) but its END is not
        // on it: the line was cut (and the next continues it) or the key truncated. What a message says about a
        // header (`expected "-----BEGIN PRIVATE KEY-----" header`) is neither.
        let spaced = after.first() == Some(&b' ')
            && after[1..].iter().take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/')).count() >= 16;
        if after.first() == Some(&b'\\') || spaced {
            edits.push((end..body.len(), "private-key"));
            if self.spans.cut {
                self.in_pem = false;
                self.spans.span = Some(Span::Cut { tail: last_bytes(body) });
            }
        }
    }

    fn yaml_start(&mut self, body: &[u8]) {
        let Some(c) = self.r.structured.yaml.captures(body) else { return };
        let Some(k) = c.get(2) else { return };
        if !rules::is_secret_key(unquote(k.as_bytes())) {
            return;
        }
        match c.get(3).map(|v| v.as_bytes()).filter(|v| !v.is_empty()) {
            None => self.spans.span = Some(Span::YamlNext { indent: k.start() }),
            Some(v) => {
                if let Some(close) = quote_close(v[0])
                    && find_close(&v[1..], close).is_none()
                {
                    self.spans.span = Some(Span::Quoted { close });
                }
            }
        }
    }

    fn env_start(&mut self, body: &[u8], edits: &mut Edits) {
        let Some(c) = ENV_OPEN.captures(body) else { return };
        let (Some(k), Some(q)) = (c.get(1), c.get(2)) else { return };
        let Some(close) = quote_close(q.as_bytes()[0]) else { return };
        if !rules::is_secret_key(k.as_bytes()) || find_close(&body[q.end()..], close).is_some() {
            return;
        }
        edits.push((trimmed(body, q.end()), "key-name"));
        self.in_pem = false;
        self.spans.span = Some(Span::Quoted { close });
    }

    /// A line of a YAML or JSON document, for the Kubernetes object it may be part of.
    fn k8s_line(&mut self, body: &[u8]) -> Option<Edits> {
        let own = body.iter().take_while(|b| **b == b' ').count();
        let mut t = &body[own..];
        if t.starts_with(b"---") {
            self.spans.k8s = None;
            return None;
        }
        let mut col = own;
        let item = t.starts_with(b"- ");
        if item {
            let d = 1 + t[1..].iter().take_while(|b| **b == b' ').count();
            t = &t[d..];
            col += d;
        }
        // An object starts with its `apiVersion` or its `kind`, whichever comes first.
        let names_object =
            |t: &[u8]| [&b"apiVersion:"[..], b"\"apiVersion\"", b"kind:", b"\"kind\""].iter().any(|p| t.starts_with(p));
        if names_object(t) && (item || self.spans.k8s.as_ref().is_none_or(|k| k.col != col)) {
            self.spans.k8s = Some(K8s { col, secret: None, section: None, entry_col: None });
        }
        let k = self.spans.k8s.as_mut()?;
        if own > k.col
            && let Some(section) = k.section
        {
            let entry_col = *k.entry_col.get_or_insert(own);
            let (_, value) = entry(t).unwrap_or((b"", 0..0));
            let value = own + value.start..own + value.end;
            let v = &body[value.clone()];
            if own > entry_col {
                // A block scalar's lines, a nested object's: a Secret's are secret, another object's evidence.
                return (section == Section::All).then(|| vec![(trimmed(body, own), "key-name")]);
            }
            if matches!(v.first(), Some(b'|' | b'>')) {
                // The entry's name stays; its lines follow.
                return (section == Section::All).then(Vec::new);
            }
            if section == Section::All || is_secret_data(v) {
                return Some(vec![(value, "key-name")]);
            }
            return None;
        }
        if col < k.col {
            self.spans.k8s = None;
            return None;
        }
        k.section = None;
        k.entry_col = None;
        if col == k.col
            && let Some((key, value)) = entry(t)
        {
            let v = &t[value];
            match key {
                b"kind" => k.secret = Some(v == b"Secret"),
                b"stringData" => k.section = Some(Section::All),
                b"data" => {
                    k.section = match k.secret {
                        Some(true) => Some(Section::All),
                        Some(false) => None,
                        None => Some(Section::Base64),
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// Whether a Docker json-file record is a partial one (its `log` does not end its line: the next record goes on
/// with it) that may end inside a key's header, read from its last bytes only: `"log"` comes first, then
/// `"stream"` (and `"attrs"`, when labels are logged, which may hide it), then `"time"`.
pub(super) fn is_partial_record(line: &[u8]) -> bool {
    let tail = &line[line.len().saturating_sub(128)..];
    memchr::memmem::rfind(tail, b"\",\"stream\":").is_some_and(|i| {
        let log = &tail[..i];
        !log.ends_with(b"\\n") && log.last().is_some_and(|b| matches!(b, b'-' | b' ' | b'A'..=b'Z'))
    })
}

/// A TOML line's multi-line string under a secret key (`password = """`) and its inline tables' pairs.
fn toml_edits(body: &[u8], spans: &mut Spans, edits: &mut Edits) {
    if let Some(c) = TOML_OPEN.captures(body)
        && let (Some(k), Some(d)) = (c.get(1), c.get(2))
        && rules::is_secret_key(unquote(k.as_bytes()))
    {
        let close: &'static [u8] = if d.as_bytes() == b"\"\"\"" { b"\"\"\"" } else { b"'''" };
        match memchr::memmem::find(&body[d.end()..], close) {
            Some(c) => edits.push((d.end()..d.end() + c, "key-name")),
            None => {
                edits.push((trimmed(body, d.end()), "key-name"));
                spans.span = Some(Span::Quoted { close });
            }
        }
    }
    let Some(brace) = memchr::memchr(b'{', body) else { return };
    for c in TOML_INLINE.captures_iter(&body[brace..]) {
        if let (Some(k), Some(v)) = (c.get(1), c.get(2))
            && rules::is_secret_key(unquote(k.as_bytes()))
        {
            edits.push((brace + v.start() + 1..brace + v.end() - 1, "key-name"));
        }
    }
}

/// Calls for every `\\\"key\\\":\\\"value\\\"` pair under a secret key: JSON inside a JSON string inside a JSON
/// string, or deeper (`\\\\\\\"`), up to five levels. One level (`\"key\":\"value\"`) is the line rules'. A
/// level's quotes are preceded by exactly its number of backslashes (3, 7, 15, 31), so a value ends at the first
/// quote with that many; one scan per level, whatever the line holds.
fn nested_escaped_pairs(body: &[u8], edits: &mut Edits) {
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &body[i..]).map(|q| i + q) {
        i = q + 1;
        let k = backslashes_before(body, q);
        if !matches!(k, 3 | 7 | 15 | 31) {
            continue;
        }
        let key_start = q + 1;
        let key_len = body[key_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            .count();
        let key_end = key_start + key_len;
        let Some(after_key) = escaped_quote_at(body, key_end, k) else { continue };
        let j = skip_ws(body, after_key);
        if body.get(j) != Some(&b':') {
            continue;
        }
        let Some(value_start) = escaped_quote_at(body, skip_ws(body, j + 1), k) else { continue };
        let mut v = value_start;
        let value_end = loop {
            let Some(q) = memchr::memchr(b'"', &body[v..]).map(|q| v + q) else { return };
            if backslashes_before(body, q) == k {
                break q - k;
            }
            v = q + 1;
        };
        if key_len > 0 && rules::is_secret_key(&body[key_start..key_end]) {
            edits.push((value_start..value_end, "key-name"));
        }
        // A value may hold a deeper document: read on inside it.
        i = value_start;
    }
}

fn backslashes_before(body: &[u8], q: usize) -> usize {
    body[..q].iter().rev().take_while(|b| **b == b'\\').count()
}

/// Where what follows `k` backslashes and a quote at `at` starts.
fn escaped_quote_at(body: &[u8], at: usize, k: usize) -> Option<usize> {
    let run = body.get(at..at + k + 1)?;
    (run[..k].iter().all(|b| *b == b'\\') && run[k] == b'"').then_some(at + k + 1)
}

/// A YAML or JSON entry of a Kubernetes object: its key and its value's range in `t` (inside its quotes).
fn entry(t: &[u8]) -> Option<(&[u8], Range<usize>)> {
    let (key, mut j) = if t.first() == Some(&b'"') {
        let end = string_end(t, 1)?;
        let j = skip_ws(t, end + 1);
        if t.get(j) != Some(&b':') {
            return None;
        }
        (&t[1..end], j + 1)
    } else {
        let colon = memchr::memchr(b':', t)?;
        if t.get(colon + 1).is_some_and(|b| *b != b' ') {
            return None;
        }
        (unquote(t[..colon].trim_ascii_end()), colon + 1)
    };
    j = skip_ws(t, j);
    let mut end = j + t[j..].trim_ascii_end().len();
    if t[j..end].ends_with(b",") && t.first() == Some(&b'"') {
        end -= 1;
    }
    if let Some(close) = t.get(j).and_then(|b| quote_close(*b))
        && let Some(c) = find_close(&t[j + 1..end], close)
    {
        return Some((key, j + 1..j + 1 + c));
    }
    if let Some(c) = memchr::memmem::find(&t[j..end], b" #") {
        end = j + c;
    }
    Some((key, j..end))
}

/// A value shaped as a Secret's `data` entry: canonical base64, not a word, a number or a hex digest (which a
/// ConfigMap's `data` may hold).
fn is_secret_data(v: &[u8]) -> bool {
    v.len() >= 8
        && v.len().is_multiple_of(4)
        && is_base64(v)
        && !v.iter().all(u8::is_ascii_hexdigit)
        && !rules::is_harmless_value(v)
}

fn is_base64(t: &[u8]) -> bool {
    t.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

/// An armor header (`Version: GnuPG v2`, `Proc-Type: 4,ENCRYPTED`, PuTTY's `Encryption: none`): kept.
fn is_armor_header(t: &[u8]) -> bool {
    t.first().is_some_and(u8::is_ascii_alphabetic)
        && memchr::memchr(b':', t).is_some_and(|i| t[..i].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-'))
}

/// A line's prefix or suffix as a shape: each run of digits as one `0`. `2026-12-04T08:00:00.123Z stderr F ` is
/// the prefix of every line of the same log, whatever its time.
fn shape(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for &b in text {
        let b = if b.is_ascii_digit() { b'0' } else { b };
        if !(b == b'0' && out.last() == Some(&b'0')) {
            out.push(b);
        }
    }
    out
}

/// How many bytes of `text` a shape spans from its start (or, reading both reversed, from its end).
fn span_of(mut text: impl Iterator<Item = u8>, shape: impl Iterator<Item = u8>) -> Option<usize> {
    let mut n = 0;
    let mut next = text.next();
    for s in shape {
        let b = next?;
        if s == b'0' {
            if !b.is_ascii_digit() {
                return None;
            }
            while next.is_some_and(|b| b.is_ascii_digit()) {
                n += 1;
                next = text.next();
            }
        } else if b == s {
            n += 1;
            next = text.next();
        } else {
            return None;
        }
    }
    Some(n)
}

/// The part of a line between a prefix and a suffix of the given shapes.
fn between(line: &[u8], prefix: &[u8], suffix: &[u8]) -> Option<Range<usize>> {
    let start = span_of(line.iter().copied(), prefix.iter().copied())?;
    let end = line.len() - span_of(line[start..].iter().rev().copied(), suffix.iter().rev().copied())?;
    Some(start..end)
}

/// The last bytes of a text, as many as an END marker can have.
fn last_bytes(text: &[u8]) -> Vec<u8> {
    text[text.len().saturating_sub(64)..].to_vec()
}

/// `line[from..]` without its surrounding blanks.
fn trimmed(line: &[u8], from: usize) -> Range<usize> {
    let from = from.min(line.len());
    let start = from + line[from..].iter().take_while(|b| b.is_ascii_whitespace()).count();
    let end = line.len() - line[start..].iter().rev().take_while(|b| b.is_ascii_whitespace()).count();
    start..end.max(start)
}

fn quote_close(q: u8) -> Option<&'static [u8]> {
    match q {
        b'"' => Some(b"\""),
        b'\'' => Some(b"'"),
        _ => None,
    }
}

/// Where a quoted value closes in `t`: at the first `close` not escaped (`\"`; YAML doubles a single quote).
fn find_close(t: &[u8], close: &[u8]) -> Option<usize> {
    if close.len() > 1 {
        return memchr::memmem::find(t, close);
    }
    let mut i = 0;
    while let Some(c) = memchr::memchr(close[0], &t[i..]).map(|c| i + c) {
        let escaped = if close[0] == b'"' { backslashes_before(t, c) % 2 == 1 } else { t.get(c + 1) == Some(&b'\'') };
        if !escaped {
            return Some(c);
        }
        i = c + if close[0] == b'"' { 1 } else { 2 };
    }
    None
}

#[cfg(test)]
mod tests {
    use crate::{
        config::Secret,
        redact::{FingerprintKey, Format, MARK_PREFIX, Redactor, Tally},
    };

    fn redactor() -> Redactor {
        Redactor::new(vec![], FingerprintKey::site(&Secret::new("7".repeat(32))).unwrap())
    }

    fn text(r: &Redactor, input: &str, format: Format) -> String {
        String::from_utf8(r.text(format).lines(input.as_bytes(), &Tally::default()).into_owned()).unwrap()
    }

    /// The service's lines (each with its `\n`, or without it for a partial record) as Docker's json-file records,
    /// redacted; what the service's lines read as afterwards.
    fn docker(r: &Redactor, logs: &[&str]) -> String {
        let records: String = logs
            .iter()
            .map(|l| serde_json::json!({"log": l, "stream": "stderr", "time": "t"}).to_string() + "\n")
            .collect();
        let out = text(r, &records, Format::DockerJson);
        out.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("each record stays JSON");
                assert_eq!(v["time"], "t");
                v["log"].as_str().unwrap().to_string()
            })
            .collect()
    }

    fn check(name: &str, out: &str, gone: &[&str], kept: &[&str]) {
        for g in gone {
            assert!(!out.contains(g), "{name}: {g:?} survived in\n{out}");
        }
        for k in kept {
            assert!(out.contains(k), "{name}: {k:?} lost in\n{out}");
        }
        assert!(out.contains(MARK_PREFIX), "{name}: nothing marked in\n{out}");
    }

    /// Shapes a service can print, so they are read both from a text artifact and from a Docker log.
    #[test]
    fn keys_that_span_lines_are_removed_in_text_and_in_docker_logs() {
        let r = redactor();
        let prefixed = "2026-12-04T08:00:00.123Z loading key\n2026-12-04T08:00:00.123Z -----BEGIN RSA PRIVATE KEY-----\n2026-12-04T08:00:00.124Z MIIEowIBAAKCAQEAprefixedBodyOne\n2026-12-04T08:00:00.1255Z prefixedBodyTwo+/=\n2026-12-04T08:00:00.126Z -----END RSA PRIVATE KEY-----\n2026-12-04T08:00:00.127Z listening on 8443\nMODE=x\n";
        let cri = "2026-12-04T08:00:00.123456789Z stderr F -----BEGIN PRIVATE KEY-----\n2026-12-04T08:00:00.123456790Z stderr F MIIEvQcriBodyOne\n2026-12-04T08:00:00.12345679Z stderr F criBodyTwo==\n2026-12-04T08:00:00.123456791Z stderr F -----END PRIVATE KEY-----\n2026-12-04T08:00:00.123456792Z stderr F ready\n";
        let json_lines = "{\"level\":\"info\",\"msg\":\"-----BEGIN PRIVATE KEY-----\",\"ts\":1}\n{\"level\":\"info\",\"msg\":\"MIIEvQjsonLineBody\",\"ts\":22}\n{\"level\":\"info\",\"msg\":\"-----END PRIVATE KEY-----\",\"ts\":333}\n{\"level\":\"info\",\"msg\":\"abcdef\",\"ts\":4444}\n";
        let pgp = "gpg export:\n-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\nComment: caracal signing\n\nlQOYBGVjcGdwU2VjcmV0Qm9keU9uZQ\nPgpSecretBodyTwo+/xyz\n=AbCd\n-----END PGP PRIVATE KEY BLOCK-----\ndone\nabcdef\n";
        let pgp_one = "{\"key\":\"-----BEGIN PGP PRIVATE KEY BLOCK-----\\nVersion: x\\n\\nlQOYonelinePgpBody\\n=AbCd\\n-----END PGP PRIVATE KEY BLOCK-----\\n\",\"ok\":\"yes\"}\n";
        let putty2 = "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nComment: rsa-key-20261204\nPublic-Lines: 2\nAAAAB3NzaC1yc2EPublicLineOne\nPublicLineTwo\nPrivate-Lines: 2\nAAABAPuttyPrivateOne\nPuttyPrivateTwo+/=\nPrivate-MAC: 0123abcd\nabcdef\n";
        let putty3 = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: aes256-cbc\nComment: ed25519-key\nPublic-Lines: 1\nAAAAC3NzaC1lZDI1NTE5PublicV3\nKey-Derivation: Argon2id\nArgon2-Memory: 8192\nArgon2-Passes: 13\nArgon2-Parallelism: 1\nArgon2-Salt: 0a1b2c3d4e5f\nPrivate-Lines: 1\nPuttyV3PrivateLine+/==\nPrivate-MAC: 9f86d081\nabcdef\n";
        let level1 = serde_json::json!({"inner": r#"{"password":"double-secret","session_id":"s-2"}"#}).to_string();
        let level2 = serde_json::json!({"body": level1}).to_string();
        let level3 = serde_json::json!({"msg": level2}).to_string();
        let triple = format!("upstream {}\n", level3.replace("double-secret", "triple-secret"));
        let nested = format!("{level2}\n");
        for (name, input, gone, kept) in [
            (
                "timestamped PEM",
                prefixed,
                &["MIIEowIBAAKCAQEAprefixedBodyOne", "prefixedBodyTwo"][..],
                &[
                    "2026-12-04T08:00:00.124Z [REDACTED:",
                    "loading key",
                    "-----END RSA PRIVATE KEY-----\n",
                    "listening on 8443\nMODE=x\n",
                ][..],
            ),
            (
                "CRI PEM",
                cri,
                &["MIIEvQcriBodyOne", "criBodyTwo"],
                &["stderr F [REDACTED:", "stderr F -----END PRIVATE KEY-----", "stderr F ready"],
            ),
            (
                "a JSON log line per line of a key",
                json_lines,
                &["MIIEvQjsonLineBody"],
                &["\"msg\":\"-----END PRIVATE KEY-----\",\"ts\":333}", "\"msg\":\"abcdef\",\"ts\":4444}"],
            ),
            (
                "PGP",
                pgp,
                &["lQOYBGVjcGdwU2VjcmV0Qm9keU9uZQ", "PgpSecretBodyTwo"],
                &["gpg export:\n", "Version: GnuPG v2", "-----END PGP PRIVATE KEY BLOCK-----\ndone\nabcdef\n"],
            ),
            (
                "PGP on one line",
                pgp_one,
                &["lQOYonelinePgpBody"],
                &["\"ok\":\"yes\"", "-----END PGP PRIVATE KEY BLOCK"],
            ),
            (
                "PuTTY 2",
                putty2,
                &["PuttyPrivateOne", "PuttyPrivateTwo"],
                &["Comment: rsa-key-20261204", "PublicLineOne", "Private-Lines: 2", "Private-MAC: 0123abcd\nabcdef\n"],
            ),
            (
                "PuTTY 3",
                putty3,
                &["PuttyV3PrivateLine"],
                &["Argon2-Salt: 0a1b2c3d4e5f", "PublicV3", "Private-MAC: 9f86d081\nabcdef\n"],
            ),
            ("doubly escaped JSON", &nested, &["double-secret"], &[r#"\\\"session_id\\\":\\\"s-2\\\""#]),
            ("triply escaped JSON", &triple, &["triple-secret"], &[r#"\\\\\\\"session_id\\\\\\\":\\\\\\\"s-2"#]),
        ] {
            for format in [Format::Text, Format::Json] {
                check(&format!("{name} in {format:?}"), &text(&r, input, format), gone, kept);
            }
            let lines: Vec<&str> = input.split_inclusive('\n').collect();
            check(&format!("{name} in a Docker log"), &docker(&r, &lines), gone, kept);
        }
    }

    #[test]
    fn a_key_cut_across_docker_partial_records_or_long_line_pieces_is_removed_up_to_its_end() {
        let r = redactor();
        let body = "MIIEsplitBodyQkFTRTY0c2VjcmV0Ym9keXBhcnRvbmU\\nc3BsaXRzZWNyZXRib2R5cGFydHR3bw+/";
        let line = format!(
            r#"{{"level":"error","msg":"bad key","key":"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\n","request_id":"req-1","password":"after-the-key"}}"#
        );
        let gone_windows: Vec<&str> = (0..body.len() - 8).map(|i| &body[i..i + 8]).collect();
        // Cut inside the body twice, and right after the header.
        let end = line.find("-----END").unwrap();
        for cuts in [vec![80, 120], vec![line.find("\\nMIIE").unwrap()], vec![60, 61, 62], vec![90, end + 7, end + 9]] {
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in &cuts {
                pieces.push(&line[from..*c]);
                from = *c;
            }
            let last = format!("{}\n", &line[from..]);
            pieces.push(&last);
            pieces.push("next line stays\n");
            let out = docker(&r, &pieces);
            check(&format!("docker {cuts:?}"), &out, &gone_windows, &[r#""request_id":"req-1""#, "next line stays\n"]);
            assert!(!out.contains("after-the-key"), "{out}");
            // The writer's pieces of a line longer than 1 MiB reach the text redactor the same way.
            let mut t = r.text(Format::Text);
            let out: String = pieces
                .iter()
                .map(|p| String::from_utf8(t.line(p.as_bytes(), &Tally::default()).into_owned()).unwrap())
                .collect();
            check(&format!("pieces {cuts:?}"), &out, &gone_windows, &[r#""request_id":"req-1""#, "next line stays\n"]);
        }
        // Whole, the line is one key and the rest stays; a truncated key is removed to the end of its line only.
        let out =
            text(&r, "key -----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEtruncatedBody\nnext line stays\n", Format::Text);
        check("truncated", &out, &["MHcCAQEEtruncatedBody"], &["next line stays\n"]);
    }

    #[test]
    fn multi_line_values_under_secret_keys_are_removed_and_what_follows_is_kept() {
        let r = redactor();
        let yaml = "db:\n  password:\n    # set at install\n    hunter2-next-line\n    continued-plain\n\n  user: caracal\n  token: \"first-quoted\n    second \\\" quoted\"\n  apiKey: 'single-first\n    single ''second'''\n  secretKeyRef:\n    name: db\n    key: password\n  secrets:\n    - postgresPassword\n  after: kept\n";
        let toml = "[db]\npassword = \"\"\"\nmulti-line-secret-one\nmulti-line-secret-two\"\"\"\nuser = \"caracal\"\ntoken = '''literal-secret'''\nprivate_key = '''\nliteral-multi\n'''\nhost = \"db\"\nconn = { user = \"u\", password = \"inline-secret\", \"api_key\" = 'inline-key' }\n";
        let env = "PRIVATE_KEY=\"-----BEGIN RSA PRIVATE KEY-----\nMIIEenvBodyOne\nenvBodyTwo\n-----END RSA PRIVATE KEY-----\"\nDB_PASSWORD='first env line\nsecond env line'\nMODE=x\nLOG_LEVEL=debug\n";
        for (name, format, input, gone, kept) in [
            (
                "YAML",
                Format::Yaml,
                yaml,
                &["hunter2-next-line", "continued-plain", "first-quoted", "second", "single-first", "single"][..],
                &[
                    "user: caracal",
                    "  secretKeyRef:\n    name: db\n    key: password\n",
                    "- postgresPassword",
                    "after: kept",
                ][..],
            ),
            (
                "TOML",
                Format::Toml,
                toml,
                &[
                    "multi-line-secret-one",
                    "multi-line-secret-two",
                    "literal-secret",
                    "literal-multi",
                    "inline-secret",
                    "inline-key",
                ],
                &["user = \"caracal\"", "host = \"db\"", "user = \"u\""],
            ),
            (
                "env",
                Format::Env,
                env,
                &["MIIEenvBodyOne", "envBodyTwo", "first env line", "second env line"],
                &["MODE=x\nLOG_LEVEL=debug\n"],
            ),
        ] {
            check(name, &text(&r, input, format), gone, kept);
        }
    }

    #[test]
    fn kubernetes_secrets_data_is_removed_and_other_objects_data_kept() {
        let r = redactor();
        let yaml = "apiVersion: v1\ndata:\n  tls.crt: Q0VSVElGSUNBVEU=\n  tls.key: a2V5LWJvZHktc2VjcmV0\n  password.txt: aHVudGVyMi1wYXNzd29yZA==\nkind: Secret\nmetadata:\n  name: caracal-tls\ntype: kubernetes.io/tls\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: registry\nstringData:\n  config.json: |\n    {\"auths\": {\"r\": {\"auth\": \"c3RyaW5nZGF0YQ\"}}}\n  username: robot\ndata:\n  .dockerconfigjson: eyJhdXRocyI6e319\n  ca.crt: Y2EtY2VydA==\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  LOG_LEVEL: debug\n  checksum: 5d41402abc4b2a76b9719d911017c592\n  mode: c2VjcmV0TW9kZQ==\n  app.yaml: |\n    listen: 8080\n";
        let yaml = format!("{yaml}---\nkind: Secret\napiVersion: v1\ndata:\n  anything: kind-came-first\n");
        let out = text(&r, &yaml, Format::Yaml);
        check(
            "YAML Secret",
            &out,
            &[
                "a2V5LWJvZHktc2VjcmV0",
                "aHVudGVyMi1wYXNzd29yZA",
                "c3RyaW5nZGF0YQ",
                "robot",
                "eyJhdXRocyI6e319",
                "Y2EtY2VydA",
                "kind-came-first",
            ],
            &[
                "name: caracal-tls",
                "type: kubernetes.io/tls",
                "name: registry",
                "  config.json: |\n",
                "LOG_LEVEL: debug",
                "checksum: 5d41402abc4b2a76b9719d911017c592",
                "mode: c2VjcmV0TW9kZQ==",
                "listen: 8080",
            ],
        );
        let json = "{\n    \"apiVersion\": \"v1\",\n    \"data\": {\n        \"password.txt\": \"aHVudGVyMi1qc29u\",\n        \"tls.key\": \"a2V5LWpzb24tc2VjcmV0\"\n    },\n    \"kind\": \"Secret\",\n    \"metadata\": {\n        \"name\": \"caracal-tls\",\n        \"namespace\": \"caracal\"\n    },\n    \"type\": \"kubernetes.io/tls\"\n}\n";
        let kept = ["\"name\": \"caracal-tls\"", "\"namespace\": \"caracal\"", "\"type\": \"kubernetes.io/tls\""];
        check("JSON Secret", &text(&r, json, Format::Json), &["aHVudGVyMi1qc29u", "a2V5LWpzb24tc2VjcmV0"], &kept);
        let lines: Vec<&str> = json.split_inclusive('\n').collect();
        check("JSON Secret in a Docker log", &docker(&r, &lines), &["aHVudGVyMi1qc29u", "a2V5LWpzb24tc2VjcmV0"], &kept);
        // Its entries' names are secret keys wherever they appear.
        let out =
            text(&r, "{\"tls.key\":\"loose-key\",\".dockercfg\":\"loose-cfg\",\"tls.crt\":\"cert\"}\n", Format::Text);
        check("names", &out, &["loose-key", "loose-cfg"], &["\"tls.crt\":\"cert\""]);
    }

    #[test]
    fn lines_after_a_header_in_prose_or_a_closed_value_are_read_as_any() {
        let r = redactor();
        for (format, input) in [
            (Format::Text, "2026-12-04T08:00:00Z error: want -----BEGIN PRIVATE KEY-----\nretrying now\nabcdef\n"),
            (Format::Text, "expected -----BEGIN PGP PRIVATE KEY BLOCK-----\nnext: line\n"),
            (Format::Text, "PuTTY-User-Key-File-2 is the header we wanted\nand then prose\n"),
            (
                Format::Yaml,
                "auth:\n  secretKeyRef:\n    name: db\n    key: password\n  secrets:\n    - a\n  token_count: 3\n",
            ),
            (Format::Toml, "password = \"\"\"\"\"\"\nhost = \"db\"\n"),
            (Format::Env, "DB_PASSWORD=''\nMODE=x\n"),
            (Format::Yaml, "apiVersion: v1\nkind: ConfigMap\ndata:\n  token_count: \"3\"\n  mode: c2VjcmV0TW9kZQ==\n"),
        ] {
            assert_eq!(text(&r, input, format), input, "{format:?}");
        }
    }
}
