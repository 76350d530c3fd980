//! The redaction engine: removes secrets from every text artifact before it is written. Two kinds of rules:
//! known secret *values* (every credential the site config references, Caracal's secret files, secrets passed in
//! environment variables), matched exactly; and *patterns* for credentials nobody told us about (passwords in URLs,
//! bearer tokens, JWTs). The manifest records rule, count and a keyed fingerprint per redaction, never the value.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    sync::Mutex,
};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use hmac::{KeyInit, Mac};
use regex::bytes::Regex;

use crate::{bundle::manifest::RedactionRecord, config::Secret};

/// What replaces a redacted value.
pub const MARK: &str = "[REDACTED]";
/// At most this many distinct fingerprints are recorded per rule.
const MAX_FINGERPRINTS: usize = 32;
/// Values shorter than this are not matched: they would mangle ordinary text (and are not credentials).
pub const MIN_SECRET_LEN: usize = 4;

struct Pattern {
    rule: &'static str,
    regex: Regex,
    /// The capture group holding the secret; the rest of the match is kept.
    secret_group: usize,
}

pub struct Redactor {
    values: Option<AhoCorasick>,
    /// For each value pattern: rule name and fingerprint.
    value_rules: Vec<(String, String)>,
    /// Cheap SIMD substring scans that must hit before any pattern can: `://`, `eyJ`, `earer`/`EARER` (bearer).
    prefilter: Vec<memchr::memmem::Finder<'static>>,
    patterns: Vec<Pattern>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("values", &self.value_rules.len()).finish()
    }
}

/// Redactions counted for one collector.
#[derive(Debug, Default)]
pub struct Tally {
    rules: Mutex<BTreeMap<String, (u64, BTreeSet<String>)>>,
}

impl Tally {
    fn add(&self, rule: &str, fingerprint: Option<&str>) {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let entry = rules.entry(rule.to_string()).or_default();
        entry.0 += 1;
        if let Some(fp) = fingerprint
            && entry.1.len() < MAX_FINGERPRINTS
        {
            entry.1.insert(fp.to_string());
        }
    }

    /// Counts `n` redactions by a rule that removes whole values without seeing them (excluded columns).
    pub fn add_rule(&self, rule: &str, n: u64) {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules.entry(rule.to_string()).or_default().0 += n;
    }

    pub fn records(&self) -> Vec<RedactionRecord> {
        let rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        rules
            .iter()
            .map(|(rule, (count, fps))| RedactionRecord {
                rule: rule.clone(),
                count: *count,
                fingerprints: fps.iter().cloned().collect(),
            })
            .collect()
    }
}

/// Keyed fingerprint of a secret: HMAC-SHA256 keyed by the value over a fixed label, first 16 hex digits. It proves
/// which secret was present to someone who holds it, and reveals nothing to anyone else.
pub fn fingerprint(value: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(value).expect("HMAC takes keys of any length");
    mac.update(b"preserve/fingerprint/v1");
    hex::encode(&mac.finalize().into_bytes()[..8])
}

impl Redactor {
    /// Builds a redactor for the given secret values (label, value). Labels name the rule, e.g. `credential env:X`.
    pub fn new(secrets: Vec<(String, Secret)>) -> Self {
        let mut seen = BTreeSet::new();
        let mut values = Vec::new();
        let mut value_rules = Vec::new();
        for (label, secret) in secrets {
            let v = secret.expose();
            if v.len() < MIN_SECRET_LEN || !seen.insert(v.to_string()) {
                continue;
            }
            value_rules.push((label, fingerprint(v.as_bytes())));
            values.push(v.to_string());
        }
        let values = (!values.is_empty()).then(|| {
            AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&values)
                .expect("literal patterns always build")
        });
        let prefilter =
            ["://", "eyJ", "earer", "EARER"].iter().map(|n| memchr::memmem::Finder::new(n).into_owned()).collect();
        let patterns = vec![
            Pattern {
                rule: "url-password",
                regex: Regex::new(r#"(?i)\b[a-z][a-z0-9+.\-]*://[^\s:/@"'<>]*:([^\s@/"'<>]+)@"#).expect("valid regex"),
                secret_group: 1,
            },
            Pattern {
                rule: "bearer-token",
                regex: Regex::new(r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{8,}=*)").expect("valid regex"),
                secret_group: 1,
            },
            Pattern {
                rule: "jwt",
                regex: Regex::new(r"\b(eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)")
                    .expect("valid regex"),
                secret_group: 1,
            },
        ];
        Self { values, value_rules, prefilter, patterns }
    }

    /// Redacts `input`, counting into `tally`. Borrowed when nothing matched, which is the common case.
    pub fn redact<'a>(&self, input: &'a [u8], tally: &Tally) -> Cow<'a, [u8]> {
        let mut text = Cow::Borrowed(input);
        if let Some(ac) = &self.values
            && ac.is_match(input)
        {
            let mut out = Vec::with_capacity(input.len());
            let mut last = 0;
            for m in ac.find_iter(input) {
                out.extend_from_slice(&input[last..m.start()]);
                out.extend_from_slice(MARK.as_bytes());
                let (rule, fp) = &self.value_rules[m.pattern().as_usize()];
                tally.add(rule, Some(fp));
                last = m.end();
            }
            out.extend_from_slice(&input[last..]);
            text = Cow::Owned(out);
        }
        if !self.prefilter.iter().any(|f| f.find(text.as_ref()).is_some()) {
            return text;
        }
        for p in &self.patterns {
            if !p.regex.is_match(&text) {
                continue;
            }
            let mut out = Vec::with_capacity(text.len());
            let mut last = 0;
            for caps in p.regex.captures_iter(&text) {
                let Some(secret) = caps.get(p.secret_group) else { continue };
                if secret.as_bytes() == MARK.as_bytes() {
                    continue;
                }
                out.extend_from_slice(&text[last..secret.start()]);
                out.extend_from_slice(MARK.as_bytes());
                // No fingerprint for a pattern hit: it may be a weak password, which a fingerprint would let
                // anyone test guesses against. Known values are fingerprinted; they are the site's own keys.
                tally.add(p.rule, None);
                last = secret.end();
            }
            out.extend_from_slice(&text[last..]);
            text = Cow::Owned(out);
        }
        text
    }

    /// Masks secrets in place with `*`, keeping every length: for binary artifacts whose framing counts bytes
    /// (a `pg_dump` custom archive), where a shorter or longer replacement would corrupt the file. The same rules
    /// as [`Redactor::redact`], known values first; only secrets that start before `until` are masked (a stream
    /// masks the part it writes now, and leaves a secret that starts in its kept tail for the next pass). Returns
    /// how many were masked.
    pub fn mask(&self, buf: &mut [u8], until: usize, tally: &Tally) -> usize {
        let mut masked = 0;
        let mut fill = |buf: &mut [u8], ranges: Vec<std::ops::Range<usize>>| {
            masked += ranges.len();
            ranges.into_iter().for_each(|r| buf[r].fill(b'*'));
        };
        if let Some(ac) = &self.values {
            let found: Vec<_> = ac
                .find_iter(&*buf)
                .filter(|m| m.start() < until)
                .map(|m| {
                    let (rule, fp) = &self.value_rules[m.pattern().as_usize()];
                    tally.add(rule, Some(fp));
                    m.range()
                })
                .collect();
            fill(buf, found);
        }
        if self.prefilter.iter().any(|f| f.find(buf).is_some()) {
            for p in &self.patterns {
                let found: Vec<_> = p
                    .regex
                    .captures_iter(buf)
                    .filter_map(|caps| caps.get(p.secret_group))
                    .filter(|m| m.start() < until && !m.as_bytes().iter().all(|b| *b == b'*'))
                    .map(|m| {
                        tally.add(p.rule, None);
                        m.range()
                    })
                    .collect();
                fill(buf, found);
            }
        }
        masked
    }

    pub fn redact_str(&self, input: &str, tally: &Tally) -> String {
        String::from_utf8_lossy(&self.redact(input.as_bytes(), tally)).into_owned()
    }
}

/// Redacts every string inside a JSON value in place (manifest fields, details).
pub fn redact_json(value: &mut serde_json::Value, redactor: &Redactor, tally: &Tally) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(clean) = redactor.redact(s.as_bytes(), tally) {
                *s = String::from_utf8_lossy(&clean).into_owned();
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| redact_json(v, redactor, tally)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|v| redact_json(v, redactor, tally)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(vec![("credential env:X".into(), Secret::new("s3cr3t-value"))])
    }

    #[test]
    fn known_values_are_replaced_and_counted_with_fingerprint() {
        let t = Tally::default();
        let out = redactor().redact(b"a s3cr3t-value b s3cr3t-value", &t);
        assert_eq!(out.as_ref(), b"a [REDACTED] b [REDACTED]");
        let r = t.records();
        assert_eq!(r[0].rule, "credential env:X");
        assert_eq!(r[0].count, 2);
        assert_eq!(r[0].fingerprints, vec![fingerprint(b"s3cr3t-value")]);
        assert!(!r[0].fingerprints[0].contains("s3cr3t"));
    }

    #[test]
    fn patterns_catch_unknown_credentials_but_keep_evidence_ids() {
        let t = Tally::default();
        let line = br#"{"msg":"connect","url":"postgres://audit:pw123456@db:5432/caracal","auth":"Bearer abcdefgh12345678","session_id":"sess_01","request_id":"req-1"}"#;
        let out = String::from_utf8(redactor().redact(line, &t).into_owned()).unwrap();
        assert!(out.contains("postgres://audit:[REDACTED]@db:5432/caracal"), "{out}");
        assert!(out.contains("Bearer [REDACTED]"), "{out}");
        assert!(out.contains(r#""session_id":"sess_01""#) && out.contains("req-1"), "{out}");
        let url_rule = t.records().into_iter().find(|r| r.rule == "url-password").unwrap();
        assert!(url_rule.fingerprints.is_empty(), "no fingerprint of a possibly weak, unknown password");
        let jwt = b"token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.sig-part_1 end";
        assert_eq!(redactor().redact(jwt, &t).as_ref(), b"token [REDACTED] end");
    }

    #[test]
    fn masking_keeps_every_length() {
        let t = Tally::default();
        let mut buf = b"\x00\x07pw=s3cr3t-value; url=postgres://u:hunter2x@db/x\n\xff".to_vec();
        let len = buf.len();
        assert_eq!(redactor().mask(&mut buf, len, &t), 2);
        assert_eq!(buf.len(), len);
        assert_eq!(&buf[..], b"\x00\x07pw=************; url=postgres://u:********@db/x\n\xff");
        assert_eq!(redactor().mask(&mut buf, len, &t), 0, "masked text is not masked twice");
        // A secret that starts after `until` is left for the next pass; one that starts before is masked whole.
        let mut buf = b"key s3cr3t-value tail s3cr3t-value".to_vec();
        assert_eq!(redactor().mask(&mut buf, 8, &t), 1);
        assert_eq!(&buf[..], b"key ************ tail s3cr3t-value");
    }

    #[test]
    fn untouched_text_is_borrowed() {
        let t = Tally::default();
        assert!(matches!(redactor().redact(b"plain line", &t), Cow::Borrowed(_)));
        assert!(t.records().is_empty());
    }
}
