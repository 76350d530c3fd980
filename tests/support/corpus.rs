//! The redaction corpus (`tests/corpus/redaction.toml`) as the harness uses it: each entry's canary or the known
//! value's spelling put into its text, the texts gathered by where they are written, and every string that must
//! not survive (canaries, the known value and each of its spellings), computed here with serde_json,
//! percent-encoding and base64, never with preserve's own code.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

/// Where an entry's text is written (the corpus's `in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// A log line, an HTTP body, a command's output.
    Text,
    /// Docker json-file records, one per line, plain and as a service's JSON line.
    Docker,
    Yaml,
    Env,
    Toml,
    Json,
    /// An HTTP response header, `Name: value`.
    Header,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    known_file: String,
    known_value: String,
    #[serde(default)]
    secret: Vec<SecretShape>,
    #[serde(default)]
    keep: Vec<KeepEntry>,
    #[serde(default)]
    known: Vec<KnownEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretShape {
    shape: String,
    text: String,
    #[serde(rename = "in")]
    places: Vec<Place>,
    #[serde(default)]
    data: bool,
    /// `"upper"` for shapes whose secret is upper case only (AWS access keys).
    #[serde(default)]
    canary: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepEntry {
    text: String,
    #[serde(rename = "in", default)]
    places: Vec<Place>,
    #[serde(default)]
    data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    Raw,
    Json,
    GoJson,
    JsonTwice,
    Url,
    Form,
    Base64,
    Base64url,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnownEntry {
    encoding: Encoding,
    text: String,
    #[serde(rename = "in")]
    places: Vec<Place>,
    #[serde(default)]
    data: bool,
    #[serde(default)]
    offset: usize,
}

/// One entry, ready to be written: its text with `{S}` or `{K}` filled in.
#[derive(Debug, Clone)]
pub struct Planted {
    /// How a failure names it: `secret #3 "bearer header"`.
    pub label: String,
    pub text: String,
    pub places: Vec<Place>,
    pub data: bool,
}

/// A string that must appear nowhere, and what it stands for.
#[derive(Debug, Clone)]
pub struct Needle {
    pub value: String,
    /// `secret #3 "bearer header"`, or `known value, base64 (standard, alignment 1)`.
    pub what: String,
    /// Only a part of the known value: named when no whole spelling is on the same line.
    pub part: bool,
}

pub struct Corpus {
    pub path: PathBuf,
    /// File name under `$CARACAL_HOME/secrets/` and the value in it.
    pub known_file: String,
    pub known_value: String,
    pub secrets: Vec<Planted>,
    pub known: Vec<Planted>,
    pub keeps: Vec<Planted>,
    pub needles: Vec<Needle>,
}

/// The canary of the `index`th secret entry: alphanumeric, 16 characters, unique to the entry and never a prefix of
/// another's (the `Q` ends it).
pub fn canary(index: usize, upper: bool) -> String {
    let c = format!("Cnry07q4Zt9x{index:03}Q");
    if upper { c.to_ascii_uppercase() } else { c }
}

impl Corpus {
    pub fn load(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(file.known_value.len() >= 12, "{}: known_value must be at least 12 bytes", path.display());
        let mut needles = Vec::new();
        let secrets = file
            .secret
            .iter()
            .enumerate()
            .map(|(i, s)| {
                assert!(s.text.contains("{S}"), "{}: secret {:?} has no {{S}}", path.display(), s.shape);
                let upper = match s.canary.as_deref() {
                    None => false,
                    Some("upper") => true,
                    Some(other) => {
                        panic!("{}: secret {:?}: canary {other:?} (only \"upper\")", path.display(), s.shape)
                    }
                };
                let c = canary(i + 1, upper);
                let label = format!("secret #{} {:?}", i + 1, s.shape);
                needles.push(Needle { value: c.clone(), what: label.clone(), part: false });
                Planted { label, text: s.text.replace("{S}", &c), places: s.places.clone(), data: s.data }
            })
            .collect();
        let known = file
            .known
            .iter()
            .enumerate()
            .map(|(i, k)| {
                assert!(k.text.contains("{K}"), "{}: known entry {} has no {{K}}", path.display(), i + 1);
                let encoded = encode(&file.known_value, k.encoding, k.offset);
                let how = match k.encoding {
                    Encoding::Base64 | Encoding::Base64url => format!("{:?} offset {}", k.encoding, k.offset),
                    e => format!("{e:?}"),
                };
                Planted {
                    label: format!("known #{} ({how})", i + 1),
                    text: k.text.replace("{K}", &encoded),
                    places: k.places.clone(),
                    data: k.data,
                }
            })
            .collect();
        needles.extend(spellings(&file.known_value));
        let keeps = file
            .keep
            .iter()
            .enumerate()
            .map(|(i, k)| Planted {
                label: format!("keep #{} {:?}", i + 1, k.text),
                text: k.text.clone(),
                places: k.places.clone(),
                data: k.data,
            })
            .collect();
        Self {
            path: path.to_path_buf(),
            known_file: file.known_file,
            known_value: file.known_value,
            secrets,
            known,
            keeps,
            needles,
        }
    }

    /// Every entry that plants something (secrets, then the known value's spellings).
    pub fn planted(&self) -> impl Iterator<Item = &Planted> {
        self.secrets.iter().chain(&self.known)
    }

    /// Every entry written in `place` (keeps too), in corpus order.
    pub fn written_in(&self, place: Place) -> Vec<&Planted> {
        self.planted().chain(&self.keeps).filter(|p| p.places.contains(&place)).collect()
    }

    /// The texts that rows and stream entries hold: `data = true` entries, keeps included.
    pub fn data(&self) -> Vec<&Planted> {
        self.planted().chain(&self.keeps).filter(|p| p.data).collect()
    }

    /// The entries whose written text holds `needle`: who planted a survivor.
    pub fn planted_by(&self, needle: &str) -> Vec<&str> {
        self.planted().filter(|p| p.text.contains(needle)).map(|p| p.label.as_str()).collect()
    }
}

/// A JSON string's inside, as serde_json writes it.
pub fn json_inner(s: &str) -> String {
    let q = serde_json::to_string(s).expect("a string serializes");
    q[1..q.len() - 1].to_string()
}

/// Go's `encoding/json` escaping (`<`, `>`, `&` as `\u003c`, `\u003e`, `\u0026`) of serialized JSON: safe on a whole
/// document, since those characters only occur inside its strings.
pub fn go_escape(json: &str) -> String {
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// RFC 3986 unreserved characters stay, everything else is percent-encoded.
const COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn url(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COMPONENT).to_string()
}

/// `application/x-www-form-urlencoded`: as a URL component, with spaces as `+`.
fn form(s: &str) -> String {
    url(s).replace("%20", "+")
}

/// The bytes written before the value in a base64 blob of offset `n`.
const OTHER_DATA: &[u8] = b"\x00\xfe";

fn base64_blob(value: &str, offset: usize, url_safe: bool) -> String {
    assert!(offset <= 2, "base64 offset is 0, 1 or 2");
    let mut blob = OTHER_DATA[..offset].to_vec();
    blob.extend_from_slice(value.as_bytes());
    if url_safe {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(blob)
    } else {
        base64::engine::general_purpose::STANDARD.encode(blob)
    }
}

/// `value` as `encoding` writes it.
pub fn encode(value: &str, encoding: Encoding, offset: usize) -> String {
    match encoding {
        Encoding::Raw => value.into(),
        Encoding::Json => json_inner(value),
        Encoding::GoJson => go_escape(&json_inner(value)),
        Encoding::JsonTwice => json_inner(&json_inner(value)),
        Encoding::Url => url(value),
        Encoding::Form => form(value),
        Encoding::Base64 => base64_blob(value, offset, false),
        Encoding::Base64url => base64_blob(value, offset, true),
    }
}

/// Every spelling of the known value that must appear nowhere: the value, each alphanumeric run of 6 or more
/// characters in it (so a value cut short by a redaction, or spelled in a way not listed here, still shows), its
/// JSON escapes (once, Go's, twice in each combination, three times), as CSV quotes it, its percent and form
/// encodings (upper and lower case hex), and what base64 of any text holding it must contain: for each of the three
/// alignments, the encoding of the whole 3-byte groups it fills, in both alphabets.
pub fn spellings(value: &str) -> Vec<Needle> {
    let mut out: Vec<Needle> = Vec::new();
    let mut push = |v: String, what: String| {
        if !out.iter().any(|n| n.value == v) {
            let part = what.starts_with("the part");
            out.push(Needle { value: v, what: format!("known value, {what}"), part });
        }
    };
    push(value.into(), "as it is".into());
    for run in value.split(|c: char| !c.is_ascii_alphanumeric()).filter(|r| r.len() >= 6) {
        push(run.into(), format!("the part {run:?}"));
    }
    push(json_inner(value), "JSON-escaped".into());
    push(go_escape(&json_inner(value)), "JSON-escaped as Go does".into());
    push(json_inner(&json_inner(value)), "JSON-escaped twice".into());
    push(json_inner(&go_escape(&json_inner(value))), "JSON-escaped by Go, then again".into());
    push(go_escape(&json_inner(&go_escape(&json_inner(value)))), "JSON-escaped by Go twice".into());
    // Spellings preserve is not asked to know, listed so a survivor is named precisely: Docker's daemon (Go) escaping
    // a service's JSON line that serde-style escaping wrote, a third escape, PostgreSQL's CSV doubling quotes.
    push(
        go_escape(&json_inner(&json_inner(value))),
        "JSON-escaped, then again by Go (a service's line in Docker's)".into(),
    );
    push(json_inner(&json_inner(&json_inner(value))), "JSON-escaped three times".into());
    push(go_escape(&json_inner(&json_inner(&json_inner(value)))), "JSON-escaped twice, then by Go".into());
    for (what, v) in [
        ("as it is", value.to_string()),
        ("JSON-escaped", json_inner(value)),
        ("JSON-escaped as Go does", go_escape(&json_inner(value))),
        ("JSON-escaped twice", json_inner(&json_inner(value))),
    ] {
        push(v.replace('"', "\"\""), format!("{what}, then quoted as CSV (\" doubled)"));
    }
    let u = url(value);
    push(u.clone(), "percent-encoded".into());
    push(lower_hex(&u), "percent-encoded, lower-case hex".into());
    push(form(value), "form-encoded".into());
    let bytes = value.as_bytes();
    for align in 0..3 {
        let whole = (bytes.len() - align) / 3 * 3;
        let groups = &bytes[align..align + whole];
        push(base64::engine::general_purpose::STANDARD.encode(groups), format!("base64 (standard, alignment {align})"));
        push(base64::engine::general_purpose::URL_SAFE.encode(groups), format!("base64 (URL-safe, alignment {align})"));
    }
    out
}

fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut rest = encoded;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..=i]);
        let hex = rest.get(i + 1..i + 3).unwrap_or_default();
        out.push_str(&hex.to_ascii_lowercase());
        rest = &rest[(i + 1 + hex.len())..];
    }
    out.push_str(rest);
    out
}
