//! The redaction engine: removes secrets from every text artifact before it is written. Three kinds of rules, in
//! this order: known secret *values* (every credential the run resolved, Caracal's secret files, secrets passed in
//! environment variables), matched exactly; *value patterns* for credentials nobody told us about (bearer tokens,
//! JWTs, cloud and chat tokens, PEM private keys, passwords in URLs); and *key-name* rules applied to the structure
//! of JSON, YAML, TOML, env and `key=value` text (Caracal's list of secret key names, minus the evidence ids).
//!
//! Each secret becomes a marker `[REDACTED:<fingerprint>]`, the fingerprint being HMAC-SHA256 keyed by the site's
//! fingerprint key or a random per-bundle key, neither ever written into a bundle ([`fingerprint`]), first 16 hex:
//! the same secret on two services shows the same marker, and only the site key's holder can check a candidate.
//! [`guard`] then checks every written byte for known values, as a last line.

mod encodings;
pub mod fingerprint;
pub mod guard;
pub mod rules;
mod structured;

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use serde::{Deserialize, Serialize};

use crate::config::Secret;
pub use fingerprint::FingerprintKey;
pub use structured::{Format, TextRedactor};

/// How every marker starts; a value that already holds one is not redacted again.
pub const MARK_PREFIX: &str = "[REDACTED:";
/// At most this many distinct fingerprints are recorded per rule.
const MAX_FINGERPRINTS: usize = 32;
/// Values shorter than this are not matched: they would mangle ordinary text (and are not credentials).
pub const MIN_SECRET_LEN: usize = 4;

/// The known secret values of a run, found with one searcher; shared with the leak [`guard`].
pub struct Known {
    /// Teddy (SIMD) for the handful of values a run knows. The automaton's own prefilter picks bytes that are rare
    /// in prose, and hex digits are: on Caracal's hex-heavy rows and logs (hashes, ids) it stopped at nearly every
    /// byte, and the scan of every written byte was most of an export's CPU (docs/performance.md).
    packed: Option<aho_corasick::packed::Searcher>,
    /// For more values than Teddy takes.
    ac: AhoCorasick,
    /// Per value: its rule (where it came from) and its marker.
    pub(crate) rules: Vec<(String, String)>,
    /// Per value: its length, to carry enough of one write into the next for a value that straddles them.
    pub(crate) longest: usize,
}

pub struct Redactor {
    key: FingerprintKey,
    known: Option<Arc<Known>>,
    structured: structured::Rules,
}

impl Known {
    fn new(values: &[String], rules: Vec<(String, String)>) -> Self {
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(values)
            .expect("literal patterns always build");
        let packed = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostLongest)
            .builder()
            .extend(values)
            .build();
        Self { packed, ac, rules, longest: values.iter().map(String::len).max().unwrap_or(0) }
    }

    /// The leftmost-longest known value in `haystack`.
    pub(crate) fn find(&self, haystack: &[u8]) -> Option<aho_corasick::Match> {
        match &self.packed {
            Some(p) => p.find(haystack),
            None => self.ac.find(haystack),
        }
    }

    pub(crate) fn is_match(&self, haystack: &[u8]) -> bool {
        self.find(haystack).is_some()
    }

    /// Where the first known value at or after `from` starts.
    pub(crate) fn next_at(&self, haystack: &[u8], from: usize) -> Option<usize> {
        let span = aho_corasick::Span::from(from..haystack.len());
        match &self.packed {
            Some(p) => p.find_in(haystack, span).map(|m| m.start()),
            None => self.ac.find(aho_corasick::Input::new(haystack).span(span)).map(|m| m.start()),
        }
    }

    /// Every known value in `haystack`, leftmost-longest, not overlapping.
    pub(crate) fn find_iter<'h>(&'h self, haystack: &'h [u8]) -> impl Iterator<Item = aho_corasick::Match> + 'h {
        let (packed, ac) = match &self.packed {
            Some(p) => (Some(p.find_iter(haystack)), None),
            None => (None, Some(self.ac.find_iter(haystack))),
        };
        packed.into_iter().flatten().chain(ac.into_iter().flatten())
    }
}

impl std::fmt::Debug for Known {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Known").field("values", &self.rules.len()).finish()
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("values", &self.known.as_ref().map_or(0, |k| k.rules.len())).finish()
    }
}

/// What one rule redacted in one collector, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionRecord {
    pub rule: String,
    pub count: u64,
    /// Fingerprints of the redacted values, as in their markers (see `bundle::manifest::RedactionScheme`); at most
    /// 32 per rule.
    pub fingerprints: Vec<String>,
}

/// Redactions counted for one collector.
#[derive(Debug, Default)]
pub struct Tally {
    rules: Mutex<BTreeMap<String, (u64, BTreeSet<String>)>>,
}

impl Tally {
    fn add(&self, rule: &str, fingerprint: &str) {
        let mut rules = self.rules.lock().unwrap_or_else(|p| p.into_inner());
        let entry = rules.entry(rule.to_string()).or_default();
        entry.0 += 1;
        if entry.1.len() < MAX_FINGERPRINTS {
            entry.1.insert(fingerprint.to_string());
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

impl Redactor {
    /// A redactor for the given secret values (label, value), its markers keyed by `key`. Labels name the rule,
    /// e.g. `credential env:X`.
    pub fn new(secrets: Vec<(String, Secret)>, key: FingerprintKey) -> Self {
        let mut seen = BTreeSet::new();
        let mut values = Vec::new();
        let mut rules = Vec::new();
        for (label, secret) in secrets {
            let v = secret.expose_secret();
            if v.len() < MIN_SECRET_LEN || !seen.insert(v.to_string()) {
                continue;
            }
            let marker = marker_with(&key, v.as_bytes());
            // Its other spellings (escaped in JSON, URL-encoded, base64) read as the same marker.
            for (encoding, spelling) in encodings::variants(v) {
                if seen.insert(spelling.clone()) {
                    rules.push((format!("{label} ({encoding})"), marker.clone()));
                    values.push(spelling);
                }
            }
            rules.push((label, marker));
            values.push(v.to_string());
        }
        let known = (!values.is_empty()).then(|| Arc::new(Known::new(&values, rules)));
        Self { key, known, structured: structured::Rules::new() }
    }

    /// The key of this redactor's fingerprints.
    pub fn key(&self) -> &FingerprintKey {
        &self.key
    }

    /// The keyed fingerprint of a secret: HMAC-SHA256(key, value), first 16 hex digits.
    pub fn fingerprint(&self, value: &[u8]) -> String {
        self.key.fingerprint(value)
    }

    /// The marker that replaces `value`.
    pub fn marker(&self, value: &[u8]) -> String {
        marker_with(&self.key, value)
    }

    /// The known values, for the leak guard; `None` when the run knows no secret.
    pub fn known(&self) -> Option<Arc<Known>> {
        self.known.clone()
    }

    /// Redacts a whole text of no particular format (a message, a small report).
    pub fn redact<'a>(&self, input: &'a [u8], tally: &Tally) -> Cow<'a, [u8]> {
        self.redact_as(input, Format::Text, tally)
    }

    /// Redacts a whole text in `format`, line by line (a PEM key or a YAML block spans lines). Borrowed when
    /// nothing matched, which is the common case.
    pub fn redact_as<'a>(&self, input: &'a [u8], format: Format, tally: &Tally) -> Cow<'a, [u8]> {
        self.text(format).lines(input, tally)
    }

    /// A line-by-line redactor for one artifact in `format`.
    pub fn text(&self, format: Format) -> TextRedactor<&Redactor> {
        TextRedactor::new(self, format)
    }

    /// Replaces known secret values only: for data that is evidence as it is (Redis entries, Postgres rows, whose
    /// signatures and hashes must not be taken for credentials), where only the run's own secrets are removed.
    pub fn redact_known<'a>(&self, input: &'a [u8], tally: &Tally) -> Cow<'a, [u8]> {
        let Some(known) = &self.known else { return Cow::Borrowed(input) };
        if !known.is_match(input) {
            return Cow::Borrowed(input);
        }
        let mut out = Vec::with_capacity(input.len() + 32);
        let mut last = 0;
        for m in known.find_iter(input) {
            out.extend_from_slice(&input[last..m.start()]);
            let (rule, marker) = &known.rules[m.pattern().as_usize()];
            out.extend_from_slice(marker.as_bytes());
            tally.add(rule, fingerprint_of_marker(marker));
            last = m.end();
        }
        out.extend_from_slice(&input[last..]);
        Cow::Owned(out)
    }

    /// Redacts data that is evidence as it is (Redis entries, Postgres rows, stored Rego): the run's known values,
    /// and the two shapes that are credentials whatever table holds them, a URL's password and the password of a SQL
    /// statement (`pg_stat_activity` showing `ALTER ROLE … PASSWORD '…'`). No key rules and no token patterns: a
    /// signature, a hash or an HMAC in a row is what the responder must see.
    pub fn redact_data<'a>(&self, input: &'a [u8], tally: &Tally) -> Cow<'a, [u8]> {
        let text = self.redact_known(input, tally);
        let hits: Vec<_> = self.structured.data_hits(&text).into_iter().map(|(rule, range)| (range, rule)).collect();
        let len = text.len();
        structured::apply(self, text, len, 0, hits, false, tally)
    }

    /// Masks secrets in place with `*`, keeping every length: for binary artifacts whose framing counts bytes
    /// (a `pg_dump` custom archive), where a marker would corrupt the file. Known values and value patterns apply
    /// (no key rules: there is no text structure to read); only secrets that start before `until` are masked (a
    /// stream masks the part it writes now, and leaves a secret that starts in its kept tail for the next pass).
    /// Returns how many were masked.
    pub fn mask(&self, buf: &mut [u8], until: usize, tally: &Tally) -> usize {
        let mut masked = 0;
        if let Some(known) = &self.known {
            let found: Vec<_> = known.find_iter(&*buf).filter(|m| m.start() < until).collect();
            for m in found {
                let (rule, marker) = &known.rules[m.pattern().as_usize()];
                tally.add(rule, fingerprint_of_marker(marker));
                buf[m.range()].fill(b'*');
                masked += 1;
            }
        }
        for (rule, range) in self.structured.pattern_hits(buf) {
            if range.start >= until || buf[range.clone()].iter().all(|b| *b == b'*') {
                continue;
            }
            tally.add(rule, &self.fingerprint(&buf[range.clone()]));
            buf[range].fill(b'*');
            masked += 1;
        }
        masked
    }

    pub fn redact_str(&self, input: &str, tally: &Tally) -> String {
        String::from_utf8_lossy(&self.redact(input.as_bytes(), tally)).into_owned()
    }

    /// Replaces `value` by its marker, counted under `rule`.
    pub fn replace(&self, value: &[u8], rule: &str, tally: &Tally) -> String {
        let marker = self.marker(value);
        tally.add(rule, fingerprint_of_marker(&marker));
        marker
    }
}

fn marker_with(key: &FingerprintKey, value: &[u8]) -> String {
    format!("{MARK_PREFIX}{}]", key.fingerprint(value))
}

fn fingerprint_of_marker(marker: &str) -> &str {
    &marker[MARK_PREFIX.len()..marker.len() - 1]
}

fn holds_marker(v: &[u8]) -> bool {
    memchr::memmem::find(v, MARK_PREFIX.as_bytes()).is_some()
}

/// Redacts a parsed JSON value in place (manifest fields, details, alerts): every string through the text rules,
/// and string values under secret keys whole.
pub fn redact_json(value: &mut serde_json::Value, redactor: &Redactor, tally: &Tally) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(clean) = redactor.redact(s.as_bytes(), tally) {
                *s = String::from_utf8_lossy(&clean).into_owned();
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| redact_json(v, redactor, tally)),
        serde_json::Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                match v {
                    serde_json::Value::String(s)
                        if rules::is_secret_key(k.as_bytes())
                            && !rules::is_harmless_value(s.as_bytes())
                            && !holds_marker(s.as_bytes()) =>
                    {
                        *s = redactor.replace(s.as_bytes(), "key-name", tally);
                    }
                    _ => redact_json(v, redactor, tally),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> FingerprintKey {
        FingerprintKey::site(&Secret::new(k.repeat(32))).unwrap()
    }

    fn redactor() -> Redactor {
        Redactor::new(vec![("credential env:X".into(), Secret::new("s3cr3t-value"))], key("7"))
    }

    fn text(r: &Redactor, input: &str, format: Format) -> String {
        String::from_utf8(r.redact_as(input.as_bytes(), format, &Tally::default()).into_owned()).unwrap()
    }

    #[test]
    fn known_values_become_markers_with_a_keyed_fingerprint() {
        let r = redactor();
        let t = Tally::default();
        let out = r.redact(b"a s3cr3t-value b s3cr3t-value", &t);
        let m = r.marker(b"s3cr3t-value");
        assert_eq!(out.as_ref(), format!("a {m} b {m}").as_bytes());
        assert_eq!(m.len(), MARK_PREFIX.len() + 16 + 1);
        let rec = &t.records()[0];
        assert_eq!((rec.rule.as_str(), rec.count), ("credential env:X", 2));
        assert_eq!(rec.fingerprints, vec![r.fingerprint(b"s3cr3t-value")]);
        // Another key, another fingerprint: the same secret is not linkable across keys by its marker alone.
        let other = Redactor::new(vec![], key("8"));
        assert_ne!(other.fingerprint(b"s3cr3t-value"), r.fingerprint(b"s3cr3t-value"));
    }

    #[test]
    fn the_same_unknown_secret_gets_the_same_marker_whichever_rule_found_it() {
        let r = redactor();
        let tok = "abcdefgh12345678zz";
        let log = text(&r, &format!("GET / Authorization: Bearer {tok}\n"), Format::Text);
        let json = text(&r, &format!("{{\"access_token\":\"{tok}\",\"session_id\":\"sess_1\"}}\n"), Format::Json);
        let m = r.marker(tok.as_bytes());
        assert!(log.contains(&format!("Bearer {m}")), "{log}");
        assert!(json.contains(&format!("\"access_token\":\"{m}\"")) && json.contains("\"sess_1\""), "{json}");
    }

    #[test]
    fn value_patterns_catch_credentials_by_shape() {
        let r = redactor();
        for (input, secret) in [
            ("dsn postgres://audit:pw123456@db:5432/caracal", "pw123456"),
            ("key AKIAIOSFODNN7EXAMPLE used", "AKIAIOSFODNN7EXAMPLE"),
            ("g AIzaSyA-1234567890abcdefghijklmnopqrstu x", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
            ("gh ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"),
            ("slack xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
            (
                "t eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.sig-part_1 end",
                "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.sig-part_1",
            ),
        ] {
            let out = text(&r, input, Format::Text);
            assert!(!out.contains(secret) && out.contains(&r.marker(secret.as_bytes())), "{input} -> {out}");
        }
    }

    #[test]
    fn pem_private_keys_are_removed_on_one_line_or_many() {
        let r = redactor();
        let one = text(
            &r,
            r#"{"key":"-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n"}"#,
            Format::Json,
        );
        assert!(!one.contains("MHcCAQEE"), "{one}");
        let many = text(
            &r,
            "cert: ok\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkq\nhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\nafter\n",
            Format::Text,
        );
        assert!(!many.contains("MIIEvQ") && !many.contains("hkiG9w"), "{many}");
        assert!(many.contains("-----END PRIVATE KEY-----\nafter\n") && many.starts_with("cert: ok\n"), "{many}");
        // A certificate is public: kept.
        let cert = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgI\n-----END CERTIFICATE-----\n";
        assert_eq!(text(&r, cert, Format::Text), cert);
    }

    #[test]
    fn key_rules_follow_the_structure_of_each_format() {
        let r = redactor();
        let yaml = "services:\n  sts:\n    environment:\n      STS_ADMIN_TOKEN: t0ken-value-1\n      LOG_LEVEL: info\n      POSTGRES_PASSWORD_FILE: /run/secrets/postgresPassword\n      - CARACAL_ADMIN_TOKEN=adm1n-value\n    secrets:\n      - postgresPassword\nsecrets:\n  postgresPassword:\n    file: ./secrets/postgresPassword\nauth:\n  privateKey: |\n    line-one-secret\n    line-two-secret\n  issuer: https://sts\n";
        let out = text(&r, yaml, Format::Yaml);
        for gone in ["t0ken-value-1", "adm1n-value", "line-one-secret", "line-two-secret"] {
            assert!(!out.contains(gone), "{gone} in\n{out}");
        }
        for kept in [
            "LOG_LEVEL: info",
            "/run/secrets/postgresPassword",
            "- postgresPassword",
            "file: ./secrets/postgresPassword",
            "issuer: https://sts",
        ] {
            assert!(out.contains(kept), "{kept} lost in\n{out}");
        }
        let env = "# caracal.env\nexport AUDIT_HMAC_KEY=\"0a1b2c3d4e5f\"\nCARACAL_LOG_LEVEL=debug\nMETRICS_BEARER='m3trics'\n";
        let out = text(&r, env, Format::Env);
        assert!(!out.contains("0a1b2c3d4e5f") && !out.contains("m3trics") && out.contains("LOG_LEVEL=debug"), "{out}");
        let toml =
            "[redis]\npassword = \"env:REDIS_PASSWORD\"\ntoken = \"inline-t0ken\"\nurl = \"redis://cache:6379\"\n";
        let out = text(&r, toml, Format::Toml);
        assert!(out.contains("env:REDIS_PASSWORD") && !out.contains("inline-t0ken") && out.contains("redis://cache"));
        let logfmt = "level=warn msg=\"auth failed\" client_secret=cl1ent-s3c session_id=sess_9 token_count=3\n";
        let out = text(&r, logfmt, Format::Text);
        assert!(!out.contains("cl1ent-s3c") && out.contains("session_id=sess_9") && out.contains("token_count=3"));
        let url = "GET /cb?code=x&state=y&access_token=acc3ss-t0k&zone_id=z1 HTTP/1.1\n";
        let out = text(&r, url, Format::Text);
        assert!(!out.contains("acc3ss-t0k") && out.contains("zone_id=z1") && out.contains("state=y"), "{out}");
    }

    #[test]
    fn kubernetes_env_lists_flow_mappings_anchors_and_trailing_blanks_in_yaml() {
        let r = redactor();
        let yaml = "extraEnv:\n  - name: CARACAL_VAULT_TOKEN\n    value: hvs.CAESIvault-0001\n  - name: LOG_LEVEL\n    value: debug\n  - name: GOOGLE_CLIENT_SECRET\n    valueFrom:\n      secretKeyRef: {name: caracal-runtime, key: googleClientSecret}\nsecrets: \ndb: {user: caracal, password: fl0w-secret}\nredis:\n  password: &pw anch0r-secret\n  token: !!str t4gged-secret\n";
        let out = text(&r, yaml, Format::Yaml);
        for gone in ["hvs.CAESIvault-0001", "fl0w-secret", "anch0r-secret", "t4gged-secret"] {
            assert!(!out.contains(gone), "{gone} in\n{out}");
        }
        for kept in
            ["value: debug", "valueFrom:", "name: caracal-runtime", "secrets: \n", "user: caracal", "&pw ", "!!str "]
        {
            assert!(out.contains(kept), "{kept} lost in\n{out}");
        }
    }

    #[test]
    fn kubernetes_env_lists_in_json_compact_or_pretty_in_either_order() {
        let r = redactor();
        // `kubectl get pod -o json` compact: the name before or after the value, one object per entry.
        let compact = r#"{"env":[{"name":"DATABASE_PASSWORD","value":"c0mpact-pw"},{"name":"LOG_LEVEL","value":"info"},{"value":"rev3rsed-t0k","name":"ADMIN_TOKEN"},{"name":"TLS_KEY","valueFrom":{"secretKeyRef":{"name":"caracal-runtime","key":"tlsKey"}}},{"name":"PORT","value":"8080"}]}"#;
        let out = text(&r, &format!("{compact}\n"), Format::Json);
        for gone in ["c0mpact-pw", "rev3rsed-t0k"] {
            assert!(!out.contains(gone), "{gone} in\n{out}");
        }
        for kept in [r#""value":"info""#, r#""value":"8080""#, r#""key":"tlsKey""#, r#""name":"caracal-runtime""#] {
            assert!(out.contains(kept), "{kept} lost in\n{out}");
        }
        // Pretty-printed over lines: the value on the line after the name, and not a value of the next entry.
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(compact).unwrap()).unwrap();
        let pretty = pretty.replace("c0mpact-pw", "pr3tty-pw").replace("rev3rsed-t0k", "pr3tty-t0k");
        let out = text(&r, &format!("{pretty}\n"), Format::Json);
        // (Pretty-printed, each object's `name` comes before its `value`, as Kubernetes writes them.)
        assert!(!out.contains("pr3tty-pw") && !out.contains("pr3tty-t0k"), "{out}");
        assert!(out.contains(r#""value": "info""#) && out.contains(r#""value": "8080""#), "{out}");
        assert!(out.contains(r#""name": "ADMIN_TOKEN""#), "{out}");
    }

    #[test]
    fn a_message_naming_a_pem_header_does_not_swallow_the_lines_after_it() {
        let r = redactor();
        let log =
            "failed to load key: expected \"-----BEGIN PRIVATE KEY-----\" header\nnext line stays\nand this one\n";
        assert_eq!(text(&r, log, Format::Text), log);
        // In Docker logs a key printed line by line is removed from the service's lines, and every record stays
        // a whole JSON record.
        let lines = ["-----BEGIN RSA PRIVATE KEY-----", "MIIEowIBAAKCAQEA7", "-----END RSA PRIVATE KEY-----", "after"];
        let docker: String = lines
            .iter()
            .map(|l| serde_json::json!({"log": format!("{l}\n"), "stream": "stderr", "time": "t"}).to_string() + "\n")
            .collect();
        let out = text(&r, &docker, Format::DockerJson);
        assert!(!out.contains("MIIEowIBAAKCAQEA7"), "{out}");
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("each record stays JSON");
            assert_eq!(v["time"], "t");
        }
        assert!(out.contains("after"), "{out}");
    }

    #[test]
    fn env_values_run_to_the_end_of_the_line_and_flags_and_nested_json_are_read() {
        let r = redactor();
        let out = text(&r, "SMTP_PASSWORD=correct horse battery # rotated\nMODE=x y\n", Format::Env);
        assert!(!out.contains("correct") && !out.contains("battery") && out.contains("# rotated"), "{out}");
        assert!(out.contains("MODE=x y"), "{out}");
        let argv = "caracal-cli --password=arg-s3cret --zone zone-a --token=tok-s3cret\n";
        let out = text(&r, argv, Format::Text);
        assert!(!out.contains("arg-s3cret") && !out.contains("tok-s3cret") && out.contains("--zone zone-a"), "{out}");
        let nested = r#"{"msg":"upstream","body":"{\"client_secret\":\"nested-s3cret\",\"session_id\":\"s-1\"}"}"#;
        let out = text(&r, nested, Format::Json);
        assert!(!out.contains("nested-s3cret") && out.contains(r#"\"session_id\":\"s-1\""#), "{out}");
        let basic = "proxy sent Authorization: Basic dXNlcjpodW50ZXIy\n";
        assert!(!text(&r, basic, Format::Text).contains("dXNlcjpodW50ZXIy"));
    }

    #[test]
    fn the_ledgers_digests_and_words_about_secrets_are_kept() {
        let r = redactor();
        let row = r#"{"ChainHMAC":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","IngestSignature":"c2ln","token_type":"Bearer","session_status":"revoked","token_expires_at":"2026-11-29T10:00:00Z"}"#;
        assert_eq!(text(&r, row, Format::Json), row);
    }

    #[test]
    fn data_keeps_its_signatures_but_not_credentials() {
        let r = redactor();
        let t = Tally::default();
        let row = b"42,ALTER ROLE caracalapi PASSWORD 'r0tated-pw',https://hook:h00k-pw@example/x,sig=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abc,s3cr3t-value\n";
        let out = String::from_utf8(r.redact_data(row, &t).into_owned()).unwrap();
        assert!(!out.contains("r0tated-pw") && !out.contains("h00k-pw") && !out.contains("s3cr3t-value"), "{out}");
        assert!(!out.contains("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.abc"), "a JWT is a bearer credential: {out}");
        // Each shape alone, in any case: its own anchor finds it (data is searched for these two anchors only).
        for (row, secret) in [
            (&b"7,create user x with Password 'n0-url-here'\n"[..], "n0-url-here"),
            (b"8,POSTGRES://u:only-a-url-pw@db/caracal\n", "only-a-url-pw"),
        ] {
            let out = String::from_utf8(r.redact_data(row, &t).into_owned()).unwrap();
            assert!(!out.contains(secret) && out.contains("[REDACTED:"), "{out}");
        }
    }

    /// Each shape the security review found passing, as `(format, line, secret)`: the secret goes, the rest stays.
    #[test]
    fn the_single_line_shapes_of_the_review_are_caught() {
        let r = redactor();
        for (format, line, secret) in [
            (Format::Text, "exec redis-cli --password Xx9flagpw ping", "Xx9flagpw"),
            (Format::Text, "exec redis-cli -h cache -a Xx9dasha ping", "Xx9dasha"),
            (Format::Text, "redis-server --requirepass Xx9reqpass --port 6379", "Xx9reqpass"),
            (Format::Text, "redis-server --masterauth 'Xx9master' --replicaof a 1", "Xx9master"),
            (Format::Text, "mysql -h db -u root -pXx9mysqlpw caracal", "Xx9mysqlpw"),
            (Format::Text, "curl -sS -u admin:Xx9curlpw https://api/v1", "Xx9curlpw"),
            (Format::Text, "config {'host': 'db', 'password': 'Xx9pyrepr'}", "Xx9pyrepr"),
            (Format::Text, "config &{Host:db Password:Xx9gorepr Port:5432}", "Xx9gorepr"),
            (Format::Text, "password: Xx9colonpw", "Xx9colonpw"),
            (Format::Text, "> X-Api-Key: Xx9apikeyhdr", "Xx9apikeyhdr"),
            (Format::Text, "> Authorization: Token Xx9tokenscheme", "Xx9tokenscheme"),
            (Format::Text, "> Cookie: theme=dark; sessionid=Xx9django; lang=en", "Xx9django"),
            (Format::Text, "Set-Cookie: JSESSIONID=Xx9java; Path=/; HttpOnly", "Xx9java"),
            (Format::Text, "Cookie: csrftoken=a; caracal_ui=Xx9anycookie", "Xx9anycookie"),
            (Format::Env, "DB_PASS=Xx9dbpass", "Xx9dbpass"),
            (Format::Env, "SMTP_PWD=Xx9smtppwd", "Xx9smtppwd"),
            (Format::Text, "pwd=Xx9pwdkey user=x", "Xx9pwdkey"),
            (Format::Yaml, "passphrase: Xx9phrase", "Xx9phrase"),
            (Format::Json, r#"{"auth":"Xx9authval","user":"u"}"#, "Xx9authval"),
            (Format::Env, "ENCRYPTION_KEY=Xx9enckey", "Xx9enckey"),
            (Format::Env, "JWT_SIGNING_KEY=Xx9signkey", "Xx9signkey"),
            (Format::Toml, r#"client_key = "Xx9clientkey""#, "Xx9clientkey"),
            (Format::Text, "x-auth: Xx9xauth", "Xx9xauth"),
            (Format::Text, "DB_PASSWORD=$XX9LOOKSLIKEVAR", "XX9LOOKSLIKEVAR"),
            (Format::Text, "login password=abc,Xx9afterComma", "Xx9afterComma"),
            (Format::Text, "dsn=postgres://app:p/ss@Xx9at@db:5432/caracal", "Xx9at"),
            (Format::Text, "dsn=redis://:Xx9sl/ash@cache:6379/0", "Xx9sl/ash"),
            (Format::Text, "HOME=/root\0DB_PASSWORD=Xx9environ\0PATH=/bin".replace("\\0", "\0").as_str(), "Xx9environ"),
            (Format::Text, "ALTER ROLE app PASSWORD E'Xx9escaped\\'s'", "Xx9escaped"),
            (Format::Text, "ALTER ROLE app PASSWORD $$Xx9dollar$$", "Xx9dollar"),
            (Format::Text, "ALTER ROLE app PASSWORD $q$Xx9tagged$q$", "Xx9tagged"),
            (Format::Text, "CREATE ROLE app PASSWORD U&'Xx9unicode'", "Xx9unicode"),
            // Review findings: a password of digits only; a backslash ending a standard string; a statement cut.
            (Format::Text, "dsn=redis://default:31337@cache:6379/0", ":31337@"),
            (Format::Text, "ALTER ROLE app PASSWORD 'Xx9backslash\\'", "Xx9backslash"),
            (Format::Text, "ALTER ROLE app PASSWORD 'Xx9backslash\\' VALID UNTIL 'infinity'", "Xx9backslash"),
            (Format::Text, "ALTER ROLE app PASSWORD 'Xx9cutshort", "Xx9cutshort"),
        ] {
            let out = text(&r, line, format);
            assert!(!out.contains(secret), "{format:?} {line:?} -> {out:?}");
            assert!(out.contains(MARK_PREFIX), "{out}");
        }
    }

    /// What the review found redacted though no secret: settings about secrets, and where a secret is kept.
    #[test]
    fn settings_about_secrets_are_kept() {
        let r = redactor();
        for (format, line) in [
            (Format::Env, "CARACAL_SECRET_BACKEND=builtin"),
            (Format::Env, "API_OPERATOR_AI_MAX_OUTPUT_TOKENS=4096"),
            (Format::Env, "STS_SECRET_VERIFY_CONCURRENCY=8"),
            (Format::Env, "SESSION_RETENTION_DAYS=30"),
            (Format::Env, "CARACAL_PASSWORD_SIGNUP=true"),
            (Format::Env, "GOOGLE_APPLICATION_CREDENTIALS=/run/secrets/gcp.json"),
            (Format::Yaml, "  CARACAL_SECRET_BACKEND: builtin"),
            (Format::Yaml, "  POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}"),
            (Format::Json, r#"{"session_id":"sess_01","sessionId":"s2","token_type":"Bearer"}"#),
            (Format::Text, "https://gateway:8443/v1/@me and author: ann, authority record ar_1"),
            (Format::Text, "ls --all -a /tmp; curl -u admin https://x"),
            // Review findings: the shell's working directory, an outcome after a secret's short name.
            (Format::Env, "PWD=/app"),
            (Format::Text, "HOME=/root\0PWD=/app\0OLDPWD=/\0".replace("\\0", "\0").as_str()),
            (Format::Text, "2026-12-04T10:00:00Z WARN gateway auth: denied"),
        ] {
            assert_eq!(text(&r, line, format), line, "{format:?}");
        }
    }

    #[test]
    fn data_gets_every_credential_only_shape_but_keeps_digests_and_signatures() {
        let r = redactor();
        let t = Tally::default();
        let digest = "9f86d081884c7d659a2feaea0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0";
        let sig = "sig=3q2-7w_signature-of-the-event";
        for (row, secret) in [
            ("1,Authorization: Bearer Xx9bearerrow", "Xx9bearerrow"),
            ("2,AKIAXX9AWSKEYROW0042", "AKIAXX9AWSKEYROW0042"),
            ("3,-----BEGIN RSA PRIVATE KEY-----\\nXx9pemrow\\n-----END RSA PRIVATE KEY-----", "Xx9pemrow"),
            ("4,login password=Xx9pairrow", "Xx9pairrow"),
            (r#"5,{"data":"{\"password\":\"Xx9escapedrow\"}"}"#, "Xx9escapedrow"),
            ("6,redis-cli -a Xx9clirow ping", "Xx9clirow"),
            ("7,eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJYeDlqd3Ryb3cifQ.Xx9jwtrow", "Xx9jwtrow"),
        ] {
            let row = format!("{row},{digest},{sig}\n");
            let out = String::from_utf8(r.redact_data(row.as_bytes(), &t).into_owned()).unwrap();
            assert!(!out.contains(secret), "{row} -> {out}");
            assert!(out.contains(digest) && out.contains(sig), "evidence stays: {out}");
        }
    }

    #[test]
    fn docker_json_file_lines_are_redacted_inside_the_log_field() {
        let r = redactor();
        let inner = r#"{"level":"info","password":"hunter2hunter2","agent_session_id":"as_1"}"#;
        let line = serde_json::json!({"log": format!("{inner}\n"), "stream": "stdout", "time": "2026-11-29T01:00:00Z"});
        let out = text(&r, &format!("{line}\n"), Format::DockerJson);
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        let log = back["log"].as_str().unwrap();
        assert!(!log.contains("hunter2") && log.contains(r#""agent_session_id":"as_1""#), "{log}");
        assert_eq!(back["time"], "2026-11-29T01:00:00Z");
    }

    #[test]
    fn masking_keeps_every_length() {
        let t = Tally::default();
        let r = redactor();
        let mut buf = b"\x00\x07pw=s3cr3t-value; url=postgres://u:hunter2x@db/x\n\xff".to_vec();
        let len = buf.len();
        assert_eq!(r.mask(&mut buf, len, &t), 2);
        assert_eq!(&buf[..], b"\x00\x07pw=************; url=postgres://u:********@db/x\n\xff");
        assert_eq!(r.mask(&mut buf, len, &t), 0, "masked text is not masked twice");
        let mut buf = b"key s3cr3t-value tail s3cr3t-value".to_vec();
        assert_eq!(r.mask(&mut buf, 8, &t), 1);
        assert_eq!(&buf[..], b"key ************ tail s3cr3t-value");
    }

    #[test]
    fn untouched_text_is_borrowed_and_markers_are_not_redacted_again() {
        let r = redactor();
        let t = Tally::default();
        assert!(matches!(r.redact(b"plain line\nanother\n", &t), Cow::Borrowed(_)));
        assert!(t.records().is_empty());
        let once = text(&r, "password=s3cr3t-value\n", Format::Env);
        assert_eq!(text(&r, &once, Format::Env), once);
    }

    #[test]
    fn json_values_under_secret_keys_are_replaced() {
        let r = redactor();
        let t = Tally::default();
        let mut v = serde_json::json!({"annotations": {"token": "abc123456", "session_id": "s1", "count": 3}});
        redact_json(&mut v, &r, &t);
        assert_eq!(v["annotations"]["token"], r.marker(b"abc123456"));
        assert_eq!(v["annotations"]["session_id"], "s1");
    }
}
