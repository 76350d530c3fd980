//! Redaction of one text artifact, line by line: known values, value patterns, then the key-name rules read from
//! the structure of the line's format. Streaming, so a state carries across lines: inside a PEM key, inside a
//! YAML block scalar under a secret key. Lines without any sign of a secret (the common case) cost one scan.

use std::{
    borrow::Cow,
    ops::{Deref, Range},
};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;

use super::{Redactor, Tally, holds_marker, rules};

mod spans;

/// How to read an artifact's lines for key-name rules. Known values and value patterns apply to every format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Free text: `"key":"value"` pairs and `key=value` pairs (logfmt, query strings) wherever they appear.
    Text,
    /// JSON or JSON Lines: as text (string pairs are found at any depth, pretty-printed or not).
    Json,
    /// YAML: also `key: value` lines and block scalars (`key: |`) under a secret key.
    Yaml,
    /// TOML: also `key = "value"` with spaces.
    Toml,
    /// Shell env files: also `KEY = value`, `export KEY=value`.
    Env,
    /// Docker json-file log lines: the `log` field is the service's own line, redacted as JSON text.
    DockerJson,
}

impl Format {
    /// Its name, as the manifest records it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "plain",
            Self::Json => "json",
            Self::Yaml => "yaml",
            Self::Toml => "toml",
            Self::Env => "env",
            Self::DockerJson => "docker-json",
        }
    }

    /// The format of an artifact, from its name and media type.
    pub fn of(path: &str, media_type: &str) -> Self {
        let name = path.rsplit('/').next().unwrap_or(path);
        if path.contains("-json.log") {
            Self::DockerJson
        } else if name.ends_with(".env") || name.starts_with(".env") || name == "env" || media_type == "text/x-env" {
            Self::Env
        } else if media_type.contains("yaml") || name.ends_with(".yml") || name.ends_with(".yaml") {
            Self::Yaml
        } else if media_type.contains("toml") || name.ends_with(".toml") {
            Self::Toml
        } else if media_type.contains("json") || name.ends_with(".json") || name.ends_with(".jsonl") {
            Self::Json
        } else {
            Self::Text
        }
    }
}

/// The compiled rules, built once per redactor.
pub(super) struct Rules {
    /// Anchors and key fragments together: a line without any (most lines) needs no rule at all.
    any: Prefilter,
    /// Fragments one of which every value pattern needs (case-insensitive): lines without any skip the regexes.
    anchors: Prefilter,
    /// Fragments of secret key names as they appear in raw text: lines without any skip the key rules.
    keys: Prefilter,
    /// The anchors of the credential-only rules data (rows, stream entries) is searched for.
    data_anchors: Prefilter,
    /// Per entry of [`DATA_ANCHORS`]: the patterns (indices into `patterns`) a line holding it is searched with,
    /// and whether it also calls for `data_pair`. A row holding only `://` (a resource URL) is searched for a
    /// URL's password alone, and only when it holds an `@` too.
    data_gates: Vec<(Vec<usize>, bool)>,
    /// Per entry of [`rules::PATTERN_ANCHORS`]: the patterns a line holding it is searched with.
    text_gates: Vec<Vec<usize>>,
    patterns: Vec<rules::Pattern>,
    pem_begin: Regex,
    pem_end: Regex,
    /// `key=value`, the key after a delimiter (and `--flag=value`); logfmt, query strings, env lines, Compose's
    /// `- KEY=value`.
    pair: Regex,
    /// `key = value` with spaces: TOML and env files.
    spaced_pair: Regex,
    /// `\"key\":\"value\"`: a JSON document logged inside a JSON string (a request body in a log field).
    escaped_json_pair: Regex,
    /// `key: value` of a YAML line (also `- key: value`).
    yaml: Regex,
    /// `key: value` inside a YAML flow mapping `{a: 1, password: x}`.
    yaml_flow_pair: Regex,
    /// `"key": value` / `'key': value` (JSON without its string value, a Python dict's repr).
    quoted_colon_pair: Regex,
    /// `key: value` in prose and headers (`password: X`, `X-Api-Key: X`, `Cookie: a=b; c=d`).
    colon_pair: Regex,
    /// `Key:value` inside a Go struct printed with `%+v`: `{Host:db Password:X}`.
    go_field: Regex,
    /// In data: a password's pair however it is written (`password=X`, `"password": "X"`, `\"pwd\":\"X\"`).
    data_pair: Regex,
}

impl Rules {
    pub(super) fn new() -> Self {
        let regex = |re: &str| Regex::new(re).expect("valid regex");
        // An unquoted value runs to a blank, `&`, `;`, a quote or a closing bracket: `password=a,b` whole.
        let value = r#"("(?:[^"\\]|\\.)*"|'[^']*'|[^\s&;"'<>)}\]\\\x00]+)"#;
        let patterns = rules::patterns();
        Self {
            any: Prefilter::new(
                rules::PATTERN_ANCHORS
                    .iter()
                    .copied()
                    .chain(rules::raw_key_fragments())
                    .chain(spans::ANCHORS.iter().copied()),
            ),
            anchors: Prefilter::new(rules::PATTERN_ANCHORS.iter().copied()),
            keys: Prefilter::new(rules::raw_key_fragments()),
            data_anchors: Prefilter::new(DATA_ANCHORS.iter().copied()),
            data_gates: data_gates(&patterns),
            text_gates: rules::PATTERN_ANCHORS.iter().map(|a| gated(a, &patterns)).collect(),
            patterns,
            pem_begin: rules::pem_begin(),
            pem_end: rules::pem_end(),
            pair: regex(&format!(
                r#"(?:^|[\s?&;,({{\["'\x00])-{{0,2}}(?:export\s+)?([A-Za-z_][A-Za-z0-9_.\-]{{0,127}})={value}"#
            )),
            spaced_pair: regex(&format!(
                r#"^\s*(?:export\s+)?["']?([A-Za-z_][A-Za-z0-9_.\-]{{0,127}})["']?\s*=\s*{value}"#
            )),
            escaped_json_pair: regex(r#"\\"([A-Za-z0-9_.\-]{1,128})\\"\s*:\s*\\"([^"\\]*)\\""#),
            yaml: regex(r#"^(\s*(?:-\s+)?)("[^"]*"|'[^']*'|[^\s#"'\-][^:#]*?|-[^\s:#][^:#]*?)\s*:(?:\s+(.*?))?\s*$"#),
            yaml_flow_pair: regex(r#"([A-Za-z_][A-Za-z0-9_.\-]*)\s*:\s*("[^"]*"|'[^']*'|[^,}\s][^,}]*)"#),
            // The three colon-pair rules are searched from a secret key found before a colon (`colon_edits`),
            // anchored within two bytes of it: a search that fails there stops there, not at the line's end.
            quoted_colon_pair: regex(
                r#"\A(?s:.){0,2}?["']([A-Za-z_][A-Za-z0-9_.\-]{0,127})["']\s*:\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;}\]'"{\[][^\s,;}\]'"]*)"#,
            ),
            colon_pair: regex(
                r#"\A(?s:.){0,2}?(?:^|[\s{,(\[<>;|])([A-Za-z_][A-Za-z0-9_.\-]{0,127})\s*:[ \t]+("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;}\]'"{\[][^\s,;}\]'"]*)"#,
            ),
            go_field: regex(r#"\A(?s:.){0,2}?(?:\{|&\{|\s)([A-Z][A-Za-z0-9_]*):([^\s{}\[\]]+)"#),
            data_pair: regex(
                r#"(?i)([a-z0-9_.\-]*(?:pass|passwd|password|passphrase|pwd|secret|api_key|apikey|api-key|private_key|privatekey))(?:\\*["'])?\s*[:=]\s*(?:\\*["'])?((?:[^\s"'\\&;,}\]]|\\u[0-9a-fA-F]{4})+)"#,
            ),
        }
    }

    /// Every value-pattern hit in `text`: rule and the secret's range.
    pub(super) fn pattern_hits(&self, text: &[u8]) -> Vec<(&'static str, Range<usize>)> {
        self.pattern_hits_with(text, self.anchors.fragments_in(text))
    }

    /// [`Rules::pattern_hits`] with the anchors `text` holds already known.
    fn pattern_hits_with(&self, text: &[u8], anchors: Option<u64>) -> Vec<(&'static str, Range<usize>)> {
        // Only the patterns the anchors the text holds call for: a log line naming `redis://` is not searched
        // for JWTs and cloud keys (searching every pattern on every anchored line doubled a log's redaction).
        let Some(anchors) = anchors else { return self.patterns.iter().flat_map(|p| self.pattern(p, text)).collect() };
        let mut wanted = [false; 64];
        for (i, patterns) in self.text_gates.iter().enumerate() {
            if anchors & (1 << i) != 0 {
                patterns.iter().for_each(|p| wanted[*p] = true);
            }
        }
        let mut hits = Vec::new();
        for (i, p) in self.patterns.iter().enumerate() {
            if wanted[i] && p.all.iter().all(|f| memchr::memmem::find(text, f.as_bytes()).is_some()) {
                hits.extend(self.pattern(p, text));
            }
        }
        hits
    }

    /// The hits of the credential-only rules (every value pattern, and a password's pair) in data. Data comes
    /// in batches of many rows: only the lines holding one of [`DATA_ANCHORS`] are searched (searching every batch
    /// that held one anywhere was a Postgres export's largest redaction cost, docs/performance.md).
    pub(super) fn data_hits(&self, text: &[u8]) -> Vec<(&'static str, Range<usize>)> {
        let mut hits = Vec::new();
        // A URL's password first, apart: data is full of URLs (`resource://billing/0` in every audit row), and
        // anchoring on `://` made nearly every row a candidate; every match holds an `@`, which most data has not.
        if let Some(url) = self.patterns.iter().find(|p| p.rule == "url-password") {
            let mut done = 0;
            for at in memchr::memchr_iter(b'@', text) {
                if at < done {
                    continue;
                }
                let start = memchr::memrchr(b'\n', &text[..at]).map_or(0, |i| i + 1);
                let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |i| at + i);
                done = end;
                if memchr::memmem::find(&text[start..at], b"://").is_some() {
                    hits.extend(
                        self.pattern(url, &text[start..end])
                            .into_iter()
                            .map(|(r, x)| (r, x.start + start..x.end + start)),
                    );
                }
            }
        }
        self.data_anchors.each_line_with(text, |line, anchors| {
            let at = line.start;
            let line = &text[line];
            let shifted = |(rule, r): (&'static str, Range<usize>)| (rule, r.start + at..r.end + at);
            // Only the patterns the anchors found call for, and of those only the ones whose other fragments
            // the line holds: most rows that hold an anchor hold a URL without a password.
            let mut wanted = [false; 64];
            let mut pair = false;
            for (i, (patterns, with_pair)) in self.data_gates.iter().enumerate() {
                if anchors & (1 << i) != 0 {
                    patterns.iter().for_each(|p| wanted[*p] = true);
                    pair |= with_pair;
                }
            }
            for (i, p) in self.patterns.iter().enumerate() {
                if wanted[i]
                    && p.rule != "url-password"
                    && p.all.iter().all(|f| memchr::memmem::find(line, f.as_bytes()).is_some())
                {
                    hits.extend(self.pattern(p, line).into_iter().map(shifted));
                }
            }
            if !pair {
                return;
            }
            for c in self.data_pair.captures_iter(line) {
                if let (Some(k), Some(v)) = (c.get(1), c.get(2))
                    && rules::is_secret_key(k.as_bytes())
                    && !holds_marker(v.as_bytes())
                    && !rules::is_harmless(v.as_bytes(), false)
                {
                    hits.push(("password", v.start() + at..v.end() + at));
                }
            }
        });
        hits
    }

    /// The hits of one pattern.
    fn pattern(&self, p: &rules::Pattern, text: &[u8]) -> Vec<(&'static str, Range<usize>)> {
        let mut hits = Vec::new();
        {
            for caps in p.regex.captures_iter(text) {
                if let Some(m) = caps.get(p.group)
                    && !holds_marker(m.as_bytes())
                {
                    let range = unquoted(text, m.range());
                    let value = &text[range.clone()];
                    let skip = match p.rule {
                        // `https://host:8443/path/@user`: a port and a path, no password.
                        "url-password" => is_port_and_path(value),
                        "command-line" => rules::is_harmless(value, false),
                        _ => false,
                    };
                    if !skip {
                        hits.push((p.rule, range));
                    }
                }
            }
        }
        hits
    }
}

/// `key: value` pairs outside JSON's own string pairs: prose and header lines (`password: X`, `X-Api-Key: X`), a
/// Python dict's repr (`{'password': 'X'}`), a Go struct's (`{Password:X}`), and every value of a `Cookie:` header.
///
/// The pair regexes run only from keys that hold a secret key's fragment and stand before a colon, each for the
/// one pair starting there: a JSON log line has a dozen pairs, and reading them all on every line that named a
/// session was a log's largest redaction cost (docs/performance.md).
fn colon_edits(rules: &Rules, body: &[u8], edits: &mut Vec<(Range<usize>, &'static str)>) {
    if memchr::memchr(b':', body).is_none() {
        return;
    }
    for start in rules.keys.keys_before_colon(body) {
        // The pair's opening (a quote, a delimiter, `&{`) is at most two bytes before its key.
        let from = start.saturating_sub(2);
        let at = |m: Option<regex::bytes::Match<'_>>| m.is_some_and(|m| m.start() + from <= start);
        colon_pair_at(rules, body, from, &at, edits);
    }
}

/// The pair `colon_edits` finds starting within two bytes of `from`'s window start.
fn colon_pair_at(
    rules: &Rules,
    body: &[u8],
    from: usize,
    starts_here: &dyn Fn(Option<regex::bytes::Match<'_>>) -> bool,
    edits: &mut Vec<(Range<usize>, &'static str)>,
) {
    let window = &body[from..];
    let shift = |r: Range<usize>| r.start + from..r.end + from;
    if let Some(c) = rules.quoted_colon_pair.captures(window)
        && starts_here(c.get(0))
        && let (Some(k), Some(v)) = (c.get(1), c.get(2))
        && rules::is_secret_key(k.as_bytes())
    {
        edits.push((unquoted(body, shift(v.range())), "key-name"));
    }
    if let Some(c) = rules.colon_pair.captures(window)
        && starts_here(c.get(0))
    {
        let (Some(k), Some(v)) = (c.get(1), c.get(2)) else { return };
        let key = k.as_bytes();
        if key.eq_ignore_ascii_case(b"cookie") || key.eq_ignore_ascii_case(b"set-cookie") {
            cookie_edits(body, v.start() + from, edits);
            return;
        }
        // In prose a plural names a collection (`admin_tokens: permission denied for table admin_tokens`).
        let plural = key.last().is_some_and(|b| b.eq_ignore_ascii_case(&b's'))
            && !key.get(key.len().wrapping_sub(2)).is_some_and(|b| b.eq_ignore_ascii_case(&b's'));
        if rules::is_secret_key(key) && !plural {
            let range = unquoted(body, shift(v.range()));
            // `Authorization: Token X`: the credential after the scheme is a value pattern's (`auth-header`).
            if !AUTH_SCHEMES.iter().any(|s| body[range.clone()].eq_ignore_ascii_case(s.as_bytes())) {
                edits.push((range, "key-name"));
            }
        }
    }
    if memchr::memchr(b'{', body).is_some()
        && let Some(c) = rules.go_field.captures(window)
        && starts_here(c.get(0))
        && let (Some(k), Some(v)) = (c.get(1), c.get(2))
        && rules::is_secret_key(k.as_bytes())
    {
        edits.push((shift(v.range()), "key-name"));
    }
}

const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "apikey", "api-key", "negotiate", "ntlm", "key"];

/// Every cookie's value in a `Cookie:` or `Set-Cookie:` header's value starting at `start`: a cookie is a session's
/// credential whatever its name. `Set-Cookie`'s attributes (`Path=/`, `Max-Age=3600`) are kept.
fn cookie_edits(body: &[u8], start: usize, edits: &mut Vec<(Range<usize>, &'static str)>) {
    const ATTRIBUTES: &[&str] =
        &["path", "domain", "expires", "max-age", "samesite", "secure", "httponly", "partitioned", "priority"];
    let mut at = start;
    for part in body[start..].split(|b| *b == b';') {
        let part_start = at;
        at += part.len() + 1;
        let Some(eq) = memchr::memchr(b'=', part) else { continue };
        let name = part[..eq].trim_ascii();
        if ATTRIBUTES.iter().any(|a| name.eq_ignore_ascii_case(a.as_bytes())) {
            continue;
        }
        let value_start = part_start + eq + 1;
        let value_end = part_start + part.trim_ascii_end().len();
        if value_start < value_end {
            edits.push((unquoted(body, value_start..value_end), "cookie"));
        }
    }
}

/// Whether what a URL pattern took for a password is a port followed by a path (`8443/v1/x`). Digits alone are a
/// password (`redis://default:8675309@cache`): before an `@` there is no port.
fn is_port_and_path(v: &[u8]) -> bool {
    let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
    (1..=5).contains(&digits) && v.get(digits) == Some(&b'/')
}

/// For each of [`DATA_ANCHORS`], the patterns it calls for (those gated on a fragment it contains or that
/// contains it: `pass` calls for the `password` ones) and whether it calls for a password's pair.
fn data_gates(patterns: &[rules::Pattern]) -> Vec<(Vec<usize>, bool)> {
    const PAIR_KEYS: &[&str] = &["pass", "pwd", "secret", "api_key", "apikey", "api-key", "private"];
    DATA_ANCHORS.iter().map(|anchor| (gated(anchor, patterns), PAIR_KEYS.iter().any(|k| related(anchor, k)))).collect()
}

/// The patterns (indices) an anchor calls for: those gated on a fragment it contains or that contains it.
fn gated(anchor: &str, patterns: &[rules::Pattern]) -> Vec<usize> {
    assert!(patterns.len() <= 64, "patterns fit a bit set");
    patterns.iter().enumerate().filter(|(_, p)| p.any.iter().any(|f| related(anchor, f))).map(|(i, _)| i).collect()
}

fn related(anchor: &str, fragment: &str) -> bool {
    let anchor = anchor.to_ascii_lowercase();
    fragment.contains(anchor.trim()) || anchor.contains(fragment)
}

/// Fragments one of which every credential-only shape in data holds (see [`Rules::data_hits`]).
const DATA_ANCHORS: &[&str] = &[
    "pass",
    "pwd",
    "secret",
    "api_key",
    "apikey",
    "api-key",
    "private",
    "bearer",
    "basic",
    "authorization",
    "redis-cli",
    "mysql",
    "mariadb",
    // Every fragment is 3 bytes or more: a 2-byte one lets Teddy's SIMD filter through so many candidates that
    // the search cost a Postgres export 12% of its CPU (docs/performance.md). A flag's `--` is where the command
    // line pattern looks for it, after a blank or a quote.
    " --",
    "\t--",
    "\"--",
    "'--",
    " -u ",
    " -U ",
    "akia",
    "asia",
    "aiza",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "eyj",
];

/// Whether a text holds any of a few fragments, ignoring ASCII case: the test every line passes first.
///
/// The text is lowercased into a scratch buffer and searched for the lowercased fragments with Teddy (SIMD). A
/// case-insensitive automaton allows no such prefilter: it stepped through every byte, the largest single cost of
/// redacting logs (docs/performance.md).
struct Prefilter {
    /// Every fragment, for [`Prefilter::each_line_with`], which tells them apart.
    teddy: Option<aho_corasick::packed::Searcher>,
    /// For [`Prefilter::is_match`]: only the fragments no other one is part of (a line holding `password` holds
    /// `pass`), in groups small enough for Teddy. Teddy takes a few dozen fragments; past that the prefilter fell
    /// back to the automaton, which stepped through every byte of every line of a log (docs/performance.md).
    groups: Vec<aho_corasick::packed::Searcher>,
    /// Without Teddy (no SSSE3): the automaton.
    automaton: AhoCorasick,
}

impl Prefilter {
    fn new<'a>(fragments: impl Iterator<Item = &'a str>) -> Self {
        let lower: Vec<String> = fragments.map(|f| f.to_ascii_lowercase()).collect();
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            .build(&lower)
            .expect("literal patterns always build");
        let teddy = aho_corasick::packed::Config::new().builder().extend(&lower).build();
        let mut unique = lower.clone();
        unique.sort_unstable();
        unique.dedup();
        let minimal: Vec<&String> =
            unique.iter().filter(|f| !unique.iter().any(|g| g != *f && f.contains(g.as_str()))).collect();
        let built: Option<Vec<_>> = minimal
            .chunks(64)
            .map(|chunk| aho_corasick::packed::Config::new().builder().extend(chunk).build())
            .collect();
        Self { teddy, groups: built.unwrap_or_default(), automaton }
    }

    /// Which fragments `text` holds (bit `i`: the `i`th, overlapping ones included); `None` when this cannot tell
    /// (no Teddy here), so the caller searches for everything.
    fn fragments_in(&self, text: &[u8]) -> Option<u64> {
        let teddy = self.teddy.as_ref()?;
        thread_local! {
            static LOWER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        Some(LOWER.with_borrow_mut(|lower| {
            lower.clear();
            lower.extend(text.iter().map(u8::to_ascii_lowercase));
            let mut bits = 0u64;
            let mut from = 0;
            while let Some(m) = teddy.find_in(&lower[..], aho_corasick::Span::from(from..lower.len())) {
                bits |= 1 << m.pattern().as_usize();
                from = m.start() + 1;
            }
            if lower.capacity() > 1 << 20 {
                *lower = Vec::new();
            }
            bits
        }))
    }

    /// Where the keys holding a fragment start in `line`, for each that stands before a colon (after its closing
    /// quote or escape, if any, and blanks): `password: X`, `"client_secret": "X"`, `\"pwd\":`, `{Password:X}`.
    fn keys_before_colon(&self, line: &[u8]) -> Vec<usize> {
        let is_key = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        let mut starts: Vec<usize> = Vec::new();
        let mut check = |at: usize| {
            let start = line[..at].iter().rposition(|b| !is_key(*b)).map_or(0, |i| i + 1);
            if starts.last() == Some(&start) {
                return;
            }
            let mut end = at + line[at..].iter().position(|b| !is_key(*b)).unwrap_or(line.len() - at);
            while end < line.len() && matches!(line[end], b'"' | b'\'' | b'\\') {
                end += 1;
            }
            while end < line.len() && matches!(line[end], b' ' | b'\t') {
                end += 1;
            }
            if line.get(end) == Some(&b':') {
                starts.push(start);
            }
        };
        match &self.teddy {
            Some(teddy) => {
                let lower: Vec<u8> = line.iter().map(u8::to_ascii_lowercase).collect();
                let mut from = 0;
                while let Some(m) = teddy.find_in(&lower, aho_corasick::Span::from(from..lower.len())) {
                    check(m.start());
                    from = m.start() + 1;
                }
            }
            None => {
                for m in self.automaton.find_iter(line) {
                    check(m.start());
                }
            }
        }
        starts
    }

    /// Calls `f` with the range of every line of `text` that holds a fragment, once per line, and which fragments
    /// it holds (bit `i`: the `i`th; as found left to right without overlaps, so a fragment inside another's match
    /// counts as the first).
    fn each_line_with(&self, text: &[u8], mut f: impl FnMut(Range<usize>, u64)) {
        let line_of = |pos: usize| {
            let start = memchr::memrchr(b'\n', &text[..pos]).map_or(0, |i| i + 1);
            let end = memchr::memchr(b'\n', &text[pos..]).map_or(text.len(), |i| pos + i);
            start..end
        };
        let mut from = 0;
        let Some(teddy) = &self.teddy else {
            while from < text.len() {
                let Some(m) = self.automaton.find(&text[from..]) else { return };
                let line = line_of(from + m.start());
                let bits =
                    self.automaton.find_iter(&text[line.clone()]).fold(0u64, |b, m| b | 1 << m.pattern().as_usize());
                from = line.end + 1;
                f(line, bits);
            }
            return;
        };
        let lower: Vec<u8> = text.iter().map(u8::to_ascii_lowercase).collect();
        while from < text.len() {
            let Some(m) = teddy.find_in(&lower, aho_corasick::Span::from(from..lower.len())) else { return };
            let line = line_of(m.start());
            let mut bits = 1u64 << m.pattern().as_usize();
            let mut at = m.end();
            while let Some(n) = teddy.find_in(&lower, aho_corasick::Span::from(at..line.end)) {
                bits |= 1 << n.pattern().as_usize();
                at = n.end();
            }
            from = line.end + 1;
            f(line, bits);
        }
    }

    fn is_match(&self, text: &[u8]) -> bool {
        if self.groups.is_empty() {
            return self.automaton.is_match(text);
        }
        thread_local! {
            static LOWER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        LOWER.with_borrow_mut(|lower| {
            lower.clear();
            lower.extend(text.iter().map(u8::to_ascii_lowercase));
            let hit = self.groups.iter().any(|g| g.find(&lower[..]).is_some());
            if lower.capacity() > 1 << 20 {
                *lower = Vec::new(); // one huge line does not pin its size for the thread's life
            }
            hit
        })
    }
}

/// The line-by-line redactor of one artifact. `R` is how it holds the redactor: borrowed for a text redacted in
/// one call, shared (`Arc`) by an artifact's writer that redacts as it is written.
pub struct TextRedactor<R: Deref<Target = Redactor> + Clone> {
    r: R,
    format: Format,
    /// Inside a PEM private key that began on an earlier line.
    in_pem: bool,
    /// Inside a YAML block scalar under a secret key: the indentation of that key.
    yaml_block: Option<usize>,
    /// A YAML `name:` naming a secret (`- name: CARACAL_VAULT_TOKEN`, Kubernetes' env lists) was just read, at this
    /// column: the `value:` beside it is the secret.
    yaml_secret_name: Option<usize>,
    /// JSON: an object whose `"name"` names a secret is still open at the end of the line read (a pretty-printed
    /// Kubernetes env entry): its `"value"` on a later line is the secret.
    json_secret_name: bool,
    /// For Docker logs: the redactor of the services' own lines, which keeps its own state.
    inner: Option<Box<TextRedactor<R>>>,
    /// Secrets that span lines in other shapes ([`spans`]).
    spans: spans::Spans,
}

impl<R: Deref<Target = Redactor> + Clone> TextRedactor<R> {
    pub fn new(r: R, format: Format) -> Self {
        Self {
            r,
            format,
            in_pem: false,
            yaml_block: None,
            yaml_secret_name: None,
            json_secret_name: false,
            inner: None,
            spans: Default::default(),
        }
    }

    /// Redacts whole lines (a body, a file's text); borrowed when nothing matched.
    pub fn lines<'a>(&mut self, input: &'a [u8], tally: &Tally) -> Cow<'a, [u8]> {
        let mut out: Option<Vec<u8>> = None;
        let mut start = 0;
        // Where the next line that any rule or known value could need starts to be, found for the whole chunk
        // in one pass rather than line by line (the per-line searches were most of a log's redaction cost).
        // Logs only: a YAML or JSON document's lines are all read, for the Kubernetes object they may be part of.
        let r = self.r.clone();
        let mut ahead = Ahead::new(&r, input, matches!(self.format, Format::Text | Format::DockerJson));
        for line in input.split_inclusive(|b| *b == b'\n') {
            let end = start + line.len();
            let nothing = ahead.quiet_until(end, start);
            let quiet = nothing
                && line.ends_with(b"\n")
                && self.idle()
                && !(self.format == Format::DockerJson && spans::is_partial_record(line));
            // A line the chunk's search found something in need not be searched again before it is read.
            let found = ahead.enabled() && !nothing;
            let clean = if quiet { Cow::Borrowed(line) } else { self.line_found(line, tally, found) };
            match (&mut out, clean) {
                (None, Cow::Borrowed(_)) => {}
                (None, Cow::Owned(c)) => {
                    let mut o = Vec::with_capacity(input.len() + 64);
                    o.extend_from_slice(&input[..start]);
                    o.extend_from_slice(&c);
                    out = Some(o);
                }
                (Some(o), c) => o.extend_from_slice(&c),
            }
            start += line.len();
        }
        out.map_or(Cow::Borrowed(input), Cow::Owned)
    }

    /// Whether no multi-line state is open: a line with nothing for any rule then leaves the state as it is.
    fn idle(&self) -> bool {
        !self.in_pem
            && self.yaml_block.is_none()
            && self.yaml_secret_name.is_none()
            && !self.json_secret_name
            && !self.spans.active()
            && !self.spans.cut
            && !self.in_inner_state()
            && self.inner.as_ref().is_none_or(|i| !i.spans.cut)
    }

    /// Redacts one line (with or without its line end).
    pub fn line<'a>(&mut self, line: &'a [u8], tally: &Tally) -> Cow<'a, [u8]> {
        self.line_found(line, tally, false)
    }

    /// [`TextRedactor::line`]; `found`: a fragment or known value is known to be in it.
    fn line_found<'a>(&mut self, line: &'a [u8], tally: &Tally, found: bool) -> Cow<'a, [u8]> {
        if self.format == Format::DockerJson
            && let Some(record) = self.docker_line(line, tally, found)
        {
            return record.map_or(Cow::Borrowed(line), Cow::Owned);
        }
        let text = self.r.redact_known(line, tally);
        let (body_len, end) = {
            let (body, end) = split_line_end(&text);
            (body.len(), end)
        };
        self.spans.start_line(&text[..body_len], end == 0);
        let edits = self.edits(&text[..body_len]);
        let references = matches!(self.format, Format::Yaml | Format::Env | Format::Toml);
        apply(&self.r, text, body_len, end, edits, references, tally)
    }

    /// The ranges of `body` (a line without its end) to redact, and by which rule; moves the multi-line state.
    fn edits(&mut self, body: &[u8]) -> Vec<(Range<usize>, &'static str)> {
        let mut edits: Vec<(Range<usize>, &'static str)> = Vec::new();
        if let Some(spanned) = self.span_edits(body) {
            return spanned;
        }
        let rules = &self.r.structured;
        if self.in_pem {
            if let Some(m) = rules.pem_end.find(body) {
                self.in_pem = false;
                edits.push((0..m.start(), "private-key"));
                return edits;
            }
            if is_pem_body(body) {
                edits.push((0..body.len(), "private-key"));
                return edits;
            }
            // Not a key's line after all (a message that merely named the header): read it as any other.
            self.in_pem = false;
        }
        if let Some(indent) = self.yaml_block {
            let own = body.iter().take_while(|b| **b == b' ').count();
            if body.trim_ascii().is_empty() {
                return edits;
            }
            if own > indent {
                edits.push((own..body.len(), "key-name"));
                return edits;
            }
            self.yaml_block = None;
        }
        // Two passes decide for most lines: the value patterns' anchors (which also say which patterns to run)
        // and the secret keys' fragments; a line with neither (nor a PuTTY key's header) needs no rule at all.
        let anchors = rules.anchors.fragments_in(body);
        let keyed = rules.keys.is_match(body);
        if anchors == Some(0)
            && !keyed
            && !self.json_secret_name
            && memchr::memmem::find(body, spans::ANCHORS[0].as_bytes()).is_none()
        {
            if self.format == Format::Yaml && self.yaml_secret_name.is_some() {
                self.yaml_edits(body, false, &mut edits);
            }
            return edits;
        }
        edits.extend(rules.pattern_hits_with(body, anchors).into_iter().map(|(rule, range)| (range, rule)));
        // A key's body follows on the next lines only when its header ends the line.
        if memchr::memmem::find(body, b"PRIVATE KEY").is_some()
            && let Some(b) = rules.pem_begin.find(body)
            && body[b.end()..].trim_ascii().is_empty()
        {
            self.in_pem = true;
        }
        if keyed || self.json_secret_name {
            json_pairs(body, &mut self.json_secret_name, |r| edits.push((r, "key-name")));
        }
        if keyed {
            if memchr::memmem::find(body, b"\\\"").is_some() {
                for c in rules.escaped_json_pair.captures_iter(body) {
                    if let (Some(k), Some(v)) = (c.get(1), c.get(2))
                        && rules::is_secret_key(k.as_bytes())
                    {
                        edits.push((v.range(), "key-name"));
                    }
                }
            }
            if matches!(self.format, Format::Text | Format::Json | Format::DockerJson) {
                colon_edits(rules, body, &mut edits);
            }
        }
        if keyed && memchr::memchr(b'=', body).is_some() {
            // `key = value` with spaces is read only where the format has it: in prose it is not a pair.
            let spaced = matches!(self.format, Format::Toml | Format::Env).then_some(&rules.spaced_pair);
            for re in std::iter::once(&rules.pair).chain(spaced) {
                for c in re.captures_iter(body) {
                    if let (Some(k), Some(v)) = (c.get(1), c.get(2))
                        && rules::is_secret_key(k.as_bytes())
                    {
                        let range = unquoted(body, v.range());
                        // An env file's unquoted value is the rest of the line (Compose's `--env-file` reads
                        // `PASSWORD=correct horse battery` as one value), up to a ` #` comment.
                        let range = if self.format == Format::Env && range == v.range() {
                            range.start..rest_of_line(body, range.start)
                        } else {
                            range
                        };
                        edits.push((range, "key-name"));
                    }
                }
            }
        }
        self.span_starts(body, keyed, &mut edits);
        if self.format == Format::Yaml {
            self.yaml_edits(body, keyed, &mut edits);
        }
        edits
    }

    /// YAML's key rules: `key: value`, a block scalar under a secret key, a flow mapping, and Kubernetes'
    /// `- name: SECRET_NAME` / `value: …` pairs.
    fn yaml_edits(&mut self, body: &[u8], keyed: bool, edits: &mut Vec<(Range<usize>, &'static str)>) {
        let rules = &self.r.structured;
        let Some(c) = rules.yaml.captures(body) else { return };
        let Some(k) = c.get(2) else { return };
        let key = unquote(k.as_bytes());
        let value = c.get(3).filter(|v| !v.as_bytes().is_empty());
        let named_secret = self.yaml_secret_name.take();
        if key == b"value" && named_secret == Some(k.start()) {
            if let Some(v) = value {
                edits.push((yaml_scalar(body, v.range()), "key-name"));
            }
            return;
        }
        if key == b"name"
            && let Some(v) = value
            && rules::is_secret_key(unquote(&body[yaml_scalar(body, v.range())]))
        {
            self.yaml_secret_name = Some(k.start());
            return;
        }
        let Some(v) = value else { return };
        if v.as_bytes()[0] == b'{' {
            // A flow mapping: its own pairs, whatever the key holding it.
            for p in rules.yaml_flow_pair.captures_iter(v.as_bytes()) {
                if let (Some(pk), Some(pv)) = (p.get(1), p.get(2))
                    && rules::is_secret_key(pk.as_bytes())
                {
                    let r = unquoted(v.as_bytes(), pv.range());
                    edits.push((v.start() + r.start..v.start() + r.end, "key-name"));
                }
            }
            return;
        }
        if !keyed || !rules::is_secret_key(key) {
            return;
        }
        match v.as_bytes()[0] {
            b'|' | b'>' => self.yaml_block = Some(k.start()),
            b'[' | b'*' | b'#' => {} // a list is read by its items; an alias is a reference; a comment nothing
            b'&' | b'!' => {
                // An anchor or a tag, then the value: `password: &pw hunter2`, `token: !!str abc`.
                let after = v.as_bytes().iter().position(u8::is_ascii_whitespace);
                if let Some(sp) = after {
                    let start = v.start() + sp + 1;
                    let scalar = yaml_scalar(body, start..v.end());
                    edits.push((scalar, "key-name"));
                }
            }
            _ => edits.push((yaml_scalar(body, v.range()), "key-name")),
        }
    }

    /// A Docker json-file line: its `log` field redacted as the service's own JSON line, the line re-encoded only
    /// when something was redacted. `None` when the line is not such a record (it is then redacted as JSON text);
    /// `Some(None)` when it is one and holds nothing to redact.
    fn docker_line(&mut self, line: &[u8], tally: &Tally, found: bool) -> Option<Option<Vec<u8>>> {
        // Cheap test first: most lines hold nothing to redact.
        let rules = &self.r.structured;
        if !found
            && !self.r.known.as_ref().is_some_and(|k| k.is_match(line))
            && !rules.any.is_match(line)
            && !self.in_inner_state()
            && !spans::is_partial_record(line)
        {
            return Some(None);
        }
        let mut record: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(line).ok()?;
        let serde_json::Value::String(log) = record.remove("log")? else { return None };
        let inner = self.inner.get_or_insert_with(|| Box::new(TextRedactor::new(self.r.clone(), Format::Json)));
        let clean = inner.line(log.as_bytes(), tally);
        // Docker's own fields (`stream`, `time`, `attrs`) pass the JSON rules too; the line is re-encoded, once,
        // only when something changed.
        // Docker's own `stream` and `time`, as Docker writes them, hold nothing to redact: read only what else is there.
        let plain = record.iter().all(|(k, v)| match (k.as_str(), v) {
            ("stream", serde_json::Value::String(s)) => s == "stdout" || s == "stderr",
            ("time", serde_json::Value::String(t)) => {
                t.len() <= 40
                    && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'T' | b'Z' | b':' | b'.' | b'-' | b'+'))
            }
            _ => false,
        });
        let mut rest = serde_json::Value::Object(record);
        let changed = !plain && {
            let before = rest.clone();
            super::redact_json(&mut rest, &self.r, tally);
            rest != before
        };
        if matches!(clean, Cow::Borrowed(_)) && !changed {
            return Some(None);
        }
        let serde_json::Value::Object(mut record) = rest else { return None };
        record.insert("log".into(), serde_json::Value::String(String::from_utf8_lossy(&clean).into_owned()));
        let mut out = serde_json::to_vec(&record).ok()?;
        if line.ends_with(b"\n") {
            out.push(b'\n');
        }
        Some(Some(out))
    }

    fn in_inner_state(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| {
            i.in_pem || i.yaml_block.is_some() || i.yaml_secret_name.is_some() || i.json_secret_name || i.spans.active()
        })
    }
}

/// The next place in a chunk where a line may need redaction: the first fragment any rule looks for (ignoring
/// case) or known value at or after a position. `None` inside when it cannot tell (no Teddy here): every line is
/// then redacted on its own.
struct Ahead<'a> {
    redactor: &'a Redactor,
    input: &'a [u8],
    lower: Option<Vec<u8>>,
    /// The next fragment's start and the next known value's, each searched again only once passed: a search
    /// that finds nothing has looked to the end of the chunk.
    next_fragment: Vec<Option<usize>>,
    next_known: Option<usize>,
}

impl<'a> Ahead<'a> {
    fn new(redactor: &'a Redactor, input: &'a [u8], enabled: bool) -> Self {
        let lower = (enabled && !redactor.structured.any.groups.is_empty()).then(|| input.to_ascii_lowercase());
        let groups = redactor.structured.any.groups.len();
        Self { redactor, input, lower, next_fragment: vec![None; groups], next_known: None }
    }

    fn enabled(&self) -> bool {
        self.lower.is_some()
    }

    /// Whether nothing any rule looks for starts before `end`; `from` (the line's start) only moves forward.
    fn quiet_until(&mut self, end: usize, from: usize) -> bool {
        let Some(lower) = &self.lower else { return false };
        for (g, next) in self.redactor.structured.any.groups.iter().zip(self.next_fragment.iter_mut()) {
            if next.is_none_or(|n| n < from) {
                let found = g.find_in(lower, aho_corasick::Span::from(from..lower.len())).map(|m| m.start());
                *next = Some(found.unwrap_or(lower.len()));
            }
        }
        if self.next_known.is_none_or(|n| n < from) {
            let found = self.redactor.known.as_ref().and_then(|k| k.next_at(self.input, from));
            self.next_known = Some(found.unwrap_or(self.input.len()));
        }
        self.next_fragment.iter().all(|n| n.unwrap_or(0) >= end) && self.next_known.unwrap_or(0) >= end
    }
}

/// Replaces the edited ranges of a line's body (`text[..body_len]`, overlaps merged) by markers of what they held;
/// the line's end (`end` bytes after the body) is kept.
pub(super) fn apply<'a>(
    redactor: &Redactor,
    text: Cow<'a, [u8]>,
    body_len: usize,
    end: usize,
    mut edits: Vec<(Range<usize>, &'static str)>,
    references: bool,
    tally: &Tally,
) -> Cow<'a, [u8]> {
    edits.retain(|(r, _)| r.start < r.end && r.end <= body_len);
    // A value rule's finding inside a key's value wins: `"authorization":"Bearer X"` keeps `Bearer` and marks
    // X as it is marked wherever else it appears.
    let found: Vec<Range<usize>> =
        edits.iter().filter(|(_, rule)| *rule != "key-name").map(|(r, _)| r.clone()).collect();
    edits.retain(|(r, rule)| *rule != "key-name" || !found.iter().any(|f| f.start < r.end && r.start < f.end));
    if edits.is_empty() {
        return text;
    }
    edits.sort_by_key(|(r, _)| (r.start, std::cmp::Reverse(r.end)));
    let mut out = Vec::with_capacity(text.len() + 32 * edits.len());
    let mut last = 0;
    for (r, rule) in edits {
        if r.start < last {
            continue; // inside an edit already made
        }
        let value = &text[r.clone()];
        if holds_marker(value) || rules::is_harmless(value, references) && rule == "key-name" {
            continue;
        }
        out.extend_from_slice(&text[last..r.start]);
        out.extend_from_slice(redactor.replace(value, rule, tally).as_bytes());
        last = r.end;
    }
    if last == 0 && out.is_empty() {
        return text;
    }
    out.extend_from_slice(&text[last..body_len]);
    out.extend_from_slice(&text[body_len..body_len + end]);
    Cow::Owned(out)
}

/// Whether a line can be part of a PEM body: base64, blank, or an encapsulated header (`Proc-Type: 4,ENCRYPTED`).
fn is_pem_body(body: &[u8]) -> bool {
    let t = body.trim_ascii();
    t.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        || (t.first().is_some_and(u8::is_ascii_alphabetic)
            && memchr::memmem::find(t, b": ")
                .is_some_and(|i| t[..i].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')))
}

/// Where an unquoted env value that starts at `start` ends: the line's end, before a ` #` comment and trailing
/// blanks.
fn rest_of_line(body: &[u8], start: usize) -> usize {
    let end = memchr::memmem::find(&body[start..], b" #").map_or(body.len(), |i| start + i);
    start + body[start..end].trim_ascii_end().len()
}

/// The line without its `\n` or `\r\n`, and the length of that ending.
fn split_line_end(line: &[u8]) -> (&[u8], usize) {
    let end = if line.ends_with(b"\r\n") {
        2
    } else if line.ends_with(b"\n") {
        1
    } else {
        0
    };
    (&line[..line.len() - end], end)
}

/// Calls `f` with the range of every JSON string value whose key is a secret, at any depth: the line is read as
/// a sequence of strings, each either a key (a `:` follows) or not. Non-string values are never secrets here.
///
/// Also the `"value"` of an object whose `"name"` (or `"key"`) is a secret's name, in either order: Kubernetes' env
/// entries (`{"name": "DATABASE_PASSWORD", "value": "..."}`) and the name/value lists of other APIs. Such an object
/// may be pretty-printed over several lines, name first: `named` carries, from one line to the next, that the
/// object the line ended in has a secret's name, so its `"value"` on a later line is found too.
fn json_pairs(line: &[u8], named: &mut bool, mut f: impl FnMut(Range<usize>)) {
    /// One object open on this line: whether its name is a secret's, and a value seen before the name.
    #[derive(Default)]
    struct Object {
        named: bool,
        value: Option<Range<usize>>,
    }
    // The object the line began in comes first; `{` and `}` outside strings open and close the rest.
    let mut open = vec![Object { named: *named, value: None }];
    let braces = |from: usize, to: usize, open: &mut Vec<Object>| {
        for b in &line[from..to] {
            match b {
                b'{' => open.push(Object::default()),
                b'}' => {
                    open.pop();
                    if open.is_empty() {
                        // An object closed that began on an earlier line: what follows is in one we know nothing of.
                        open.push(Object::default());
                    }
                }
                _ => {}
            }
        }
    };
    let mut i = 0;
    while let Some(q) = memchr::memchr(b'"', &line[i..]) {
        braces(i, i + q, &mut open);
        let key_start = i + q + 1;
        let Some(key_end) = string_end(line, key_start) else { break };
        let mut j = skip_ws(line, key_end + 1);
        if line.get(j) == Some(&b':') {
            j = skip_ws(line, j + 1);
            if line.get(j) == Some(&b'"') {
                let Some(value_end) = string_end(line, j + 1) else { break };
                let (key, value) = (&line[key_start..key_end], j + 1..value_end);
                let object = open.last_mut().expect("one object is always open");
                if rules::is_secret_key(key) {
                    f(value);
                } else if (key.eq_ignore_ascii_case(b"name") || key.eq_ignore_ascii_case(b"key"))
                    && rules::is_secret_key(&line[value.clone()])
                {
                    object.named = true;
                    if let Some(v) = object.value.take() {
                        f(v);
                    }
                } else if key.eq_ignore_ascii_case(b"value") {
                    if object.named {
                        f(value);
                    } else {
                        object.value = Some(value);
                    }
                }
                i = value_end + 1;
                continue;
            }
        }
        i = key_end + 1;
    }
    braces(i.min(line.len()), line.len(), &mut open);
    *named = open.last().is_some_and(|o| o.named);
}

/// The index of the quote closing a JSON string whose content starts at `start`.
fn string_end(line: &[u8], start: usize) -> Option<usize> {
    let mut k = start;
    while k < line.len() {
        match line[k] {
            b'\\' => k += 2,
            b'"' => return Some(k),
            _ => k += 1,
        }
    }
    None
}

fn skip_ws(line: &[u8], mut i: usize) -> usize {
    while line.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// A quoted value's content range (the quotes stay).
fn unquoted(text: &[u8], r: Range<usize>) -> Range<usize> {
    let v = &text[r.clone()];
    if v.len() >= 2 && (v[0] == b'"' || v[0] == b'\'') && v[v.len() - 1] == v[0] { r.start + 1..r.end - 1 } else { r }
}

fn unquote(k: &[u8]) -> &[u8] {
    if k.len() >= 2 && (k[0] == b'"' || k[0] == b'\'') { &k[1..k.len() - 1] } else { k }
}

/// A YAML scalar's range: inside its quotes, or up to a ` #` comment.
fn yaml_scalar(text: &[u8], r: Range<usize>) -> Range<usize> {
    let v = &text[r.clone()];
    if matches!(v[0], b'"' | b'\'')
        && let Some(close) = v[1..].iter().position(|b| *b == v[0])
    {
        return r.start + 1..r.start + 1 + close;
    }
    match memchr::memmem::find(v, b" #") {
        Some(c) => r.start..r.start + c,
        None => r,
    }
}
