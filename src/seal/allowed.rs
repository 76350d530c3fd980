//! OpenSSH's `allowed_signers` file (ssh-keygen(1), "ALLOWED SIGNERS"): which principals a public key signs for,
//! in which namespaces and when. `ssh-key` reads keys and signatures but not this file, and the crates that do
//! bring their own key types, so its small line format is read here: `principals [options] keytype base64
//! [comment]`, principals comma-separated (quoted when they hold spaces), options `namespaces="..."`,
//! `valid-after="..."`, `valid-before="..."` and `cert-authority`. Certificate authorities are not supported:
//! preserve signs with plain keys, so such lines name no signer here.

use std::path::{Path, PathBuf};

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};
use ssh_key::{PublicKey, public::KeyData};

/// An allowed_signers file is a list of keys; one larger than this is not one.
const FILE_LIMIT: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AllowedSignersError {
    #[error("--allowed-signers {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--allowed-signers {}: larger than {FILE_LIMIT} bytes; not an allowed_signers file", path.display())]
    TooLarge { path: PathBuf },
    #[error("--allowed-signers {}, line {line}: {detail}", path.display())]
    Line { path: PathBuf, line: usize, detail: String },
}

#[derive(Debug, Clone)]
struct Entry {
    principals: Vec<String>,
    namespaces: Option<Vec<String>>,
    valid_after: Option<Timestamp>,
    valid_before: Option<Timestamp>,
    key: KeyData,
}

/// The signers one file allows.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    entries: Vec<Entry>,
}

impl AllowedSigners {
    pub fn read(path: &Path) -> Result<Self, AllowedSignersError> {
        let read = |source| AllowedSignersError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, FILE_LIMIT + 1), &mut text).map_err(read)?;
        if text.len() as u64 > FILE_LIMIT {
            return Err(AllowedSignersError::TooLarge { path: path.to_path_buf() });
        }
        Self::parse(&text).map_err(|(line, detail)| AllowedSignersError::Line {
            path: path.to_path_buf(),
            line,
            detail,
        })
    }

    /// Parses the file's text; a bad line is `(line number, what is wrong)`.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(entry) = parse_line(line).map_err(|d| (i + 1, d))? {
                entries.push(entry);
            }
        }
        Ok(Self { entries })
    }

    /// The principals `key` may sign for in `namespace` at `now`; empty when it is not an allowed signer there.
    pub fn principals(&self, key: &KeyData, namespace: &str, now: Timestamp) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| &e.key == key)
            .filter(|e| e.namespaces.as_ref().is_none_or(|ns| ns.iter().any(|p| glob(p, namespace))))
            .filter(|e| e.valid_after.is_none_or(|t| now >= t) && e.valid_before.is_none_or(|t| now < t))
            .flat_map(|e| e.principals.iter().cloned())
            .collect()
    }
}

/// One line; `None` for a certificate authority's.
fn parse_line(line: &str) -> Result<Option<Entry>, String> {
    let mut tokens = tokens(line)?.into_iter();
    let principals: Vec<String> = tokens
        .next()
        .ok_or("no principals")?
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    if principals.is_empty() {
        return Err("no principals".into());
    }
    let mut rest: Vec<String> = tokens.collect();
    // Options come before the key type; the key type is recognised by parsing what follows as a key.
    let mut options = Vec::new();
    let key = loop {
        if rest.len() < 2 {
            return Err("no public key (expected `principals [options] keytype base64`)".into());
        }
        let candidate = format!("{} {}", rest[0], rest[1]);
        if let Ok(k) = PublicKey::from_openssh(&candidate) {
            break k;
        }
        options.push(rest.remove(0));
    };
    let (mut namespaces, mut valid_after, mut valid_before, mut ca) = (None, None, None, false);
    for opt in options.iter().flat_map(|o| split_options(o)) {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), Some(v.trim_matches('"').to_string())),
            None => (opt.to_ascii_lowercase(), None),
        };
        match (name.as_str(), value) {
            ("cert-authority", None) => ca = true,
            ("namespaces", Some(v)) => namespaces = Some(v.split(',').map(|s| s.trim().to_string()).collect()),
            ("valid-after", Some(v)) => valid_after = Some(parse_time(&v)?),
            ("valid-before", Some(v)) => valid_before = Some(parse_time(&v)?),
            (other, _) => return Err(format!("unknown option `{other}`")),
        }
    }
    if ca {
        return Ok(None);
    }
    Ok(Some(Entry { principals, namespaces, valid_after, valid_before, key: key.key_data().clone() }))
}

/// Whitespace-separated tokens; double quotes keep spaces (and commas) inside one.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let (mut cur, mut quoted, mut any) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if any {
        out.push(cur);
    }
    // The principals token loses its quotes; option values keep theirs until split.
    if let Some(first) = out.first_mut() {
        *first = first.replace('"', "");
    }
    Ok(out)
}

/// `a,b="x,y",c` into its options, commas inside quotes kept.
fn split_options(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

/// `YYYYMMDD[HHMM[SS]][Z]`: UTC with `Z`, the system's time zone without, as ssh-keygen reads it.
fn parse_time(v: &str) -> Result<Timestamp, String> {
    let bad = || format!("`{v}` is not a time (YYYYMMDD[HHMM[SS]][Z])");
    let (digits, utc) = match v.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (v, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| digits.get(r).map_or(Ok(0), |s| s.parse::<i16>()).map_err(|_| bad());
    let dt =
        DateTime::new(n(0..4)?, n(4..6)? as i8, n(6..8)? as i8, n(8..10)? as i8, n(10..12)? as i8, n(12..14)? as i8, 0)
            .map_err(|_| bad())?;
    let tz = if utc { TimeZone::UTC } else { TimeZone::system() };
    tz.to_timestamp(dt).map_err(|_| bad())
}

/// OpenSSH's pattern match: `*` any run, `?` one character.
fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDO0VQD9TIdICZLWFWwtf7s8/aENve8twGTEmNV0myh5";

    fn key() -> KeyData {
        PublicKey::from_openssh(KEY).unwrap().key_data().clone()
    }

    #[test]
    fn principals_options_and_quotes_are_read_as_openssh_reads_them() {
        let text = format!(
            "# responders\n\
             \"ir lead@example.org,bob@example.org\" {KEY} laptop\n\
             carol@example.org namespaces=\"git,pres*\" {KEY}\n\
             dave@example.org namespaces=\"git\" {KEY}\n\
             erin@example.org valid-before=\"20200101Z\" {KEY}\n\
             frank@example.org cert-authority {KEY}\n"
        );
        let a = AllowedSigners::parse(&text).unwrap();
        let now = Timestamp::now();
        assert_eq!(
            a.principals(&key(), "preserve", now),
            ["ir lead@example.org", "bob@example.org", "carol@example.org"]
        );
        assert_eq!(a.principals(&key(), "git", now).len(), 4);
        let before = "2019-06-01T00:00:00Z".parse().unwrap();
        assert!(a.principals(&key(), "preserve", before).contains(&"erin@example.org".to_string()));
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = AllowedSigners::parse(&format!("ok@example.org {KEY}\nbad@example.org nokey\n")).unwrap_err();
        assert_eq!(err.0, 2);
        let err = AllowedSigners::parse(&format!("x@example.org valid-after=\"yesterday\" {KEY}\n")).unwrap_err();
        assert!(err.1.contains("yesterday"), "{err:?}");
        let err = AllowedSigners::parse(&format!("x@example.org frobnicate {KEY}\n")).unwrap_err();
        assert!(err.1.contains("frobnicate"), "{err:?}");
    }
}
