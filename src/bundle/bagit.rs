//! BagIt 1.0 (RFC 8493) tag files: rendering them for the writer and parsing them for `verify`.

use std::fmt::Write as _;

pub const BAGIT_TXT: &str = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n";

/// Renders a manifest line per file, in the order given: `<sha256>  <path>` (two spaces, so `sha256sum -c` reads it
/// too). CR, LF and `%` in paths are percent-encoded as RFC 8493 §2.1.3 requires.
pub fn render_manifest<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (sha, path) in entries {
        let _ = writeln!(out, "{sha}  {}", encode_path(path));
    }
    out
}

pub fn encode_path(path: &str) -> String {
    path.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

pub fn decode_path(path: &str) -> String {
    path.replace("%0D", "\r").replace("%0d", "\r").replace("%0A", "\n").replace("%0a", "\n").replace("%25", "%")
}

/// Parses a manifest file into (path, sha256) pairs; malformed lines are returned as errors by line number.
pub fn parse_manifest(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(2, [' ', '\t']);
        let sha = parts.next().unwrap_or_default();
        let path = parts.next().map(|p| p.trim_start_matches([' ', '\t'])).unwrap_or_default();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) || path.is_empty() {
            errors.push(format!("line {}: not `<sha256>  <path>`", i + 1));
            continue;
        }
        entries.push((decode_path(path), sha.to_ascii_lowercase()));
    }
    (entries, errors)
}

/// `bag-info.txt` fields in order.
pub fn render_bag_info(fields: &[(&str, String)]) -> String {
    let mut out = String::new();
    for (k, v) in fields {
        // A value must stay on one line; newlines in free text would forge further fields.
        let v = v.replace(['\r', '\n'], " ");
        let _ = writeln!(out, "{k}: {v}");
    }
    out
}

/// Reads a field from `bag-info.txt` or `bagit.txt`.
pub fn tag_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_with_awkward_names() {
        let sha = "a".repeat(64);
        let text = render_manifest([(sha.as_str(), "data/x/100% done\nreally")]);
        assert_eq!(text, format!("{sha}  data/x/100%25 done%0Areally\n"));
        let (entries, errors) = parse_manifest(&text);
        assert!(errors.is_empty());
        assert_eq!(entries, vec![("data/x/100% done\nreally".to_string(), sha)]);
    }

    #[test]
    fn fields_are_single_line() {
        let t = render_bag_info(&[("Source-Organization", "Evil\nPayload-Oxum: 1.1".into())]);
        assert_eq!(tag_field(&t, "Payload-Oxum"), None);
    }
}
