//! The spellings a known secret takes in the systems preserve reads: escaped in JSON (once by a service's own log
//! line, twice when Docker wraps that line, with Go's `\u003c`-style escapes), percent-encoded in URLs and forms, and
//! base64-encoded (a Redis binary value, a row, a Kubernetes Secret). Each is matched, redacted and scanned for like
//! the value itself, under the same marker.

use base64::Engine;

/// A secret shorter than this is not looked for in base64: its fragments would be too short to be told from chance.
const MIN_BASE64_SECRET: usize = 8;

/// Every other spelling of `value` worth looking for, each with the name of its encoding; the value itself is not
/// among them. No spelling is repeated.
pub fn variants(value: &str) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    let mut push = |name: &'static str, v: String| {
        if v != value && !v.is_empty() && !out.iter().any(|(_, o)| *o == v) {
            out.push((name, v));
        }
    };
    // Escaped once (a JSON log line), twice (that line inside Docker's record, or in a Redis value that a JSON line
    // then shows) and three times, each time in serde's style or Go's; and each as a CSV field doubles its quotes.
    let mut escaped = vec![value.to_string()];
    for (depth, name) in ["json-escaped", "json-escaped twice", "json-escaped thrice"].into_iter().enumerate() {
        let mut next = Vec::new();
        for e in &escaped[escaped.len() - 2usize.pow(depth as u32)..] {
            next.push(json_escaped(e, false));
            next.push(json_escaped(e, true));
        }
        for n in &next {
            push(name, n.clone());
        }
        escaped.extend(next);
    }
    for e in &escaped {
        if e.contains('"') {
            push("csv-quoted", e.replace('"', "\"\""));
        }
    }

    let url = percent_encoding::utf8_percent_encode(value, URL_COMPONENT).to_string();
    push("url-encoded", url.clone());
    push("url-encoded", lower_hex_escapes(&url));
    push("url-encoded", form_encoded(value));

    for b64 in base64_fragments(value.as_bytes()) {
        push("base64", b64);
    }
    out
}

/// RFC 3986 component encoding: all but the unreserved characters.
const URL_COMPONENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `application/x-www-form-urlencoded`: spaces as `+`.
fn form_encoded(value: &str) -> String {
    value
        .split(' ')
        .map(|part| percent_encoding::utf8_percent_encode(part, URL_COMPONENT).to_string())
        .collect::<Vec<_>>()
        .join("+")
}

fn lower_hex_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut chars = encoded.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            out.extend(chars.by_ref().take(2).map(|h| h.to_ascii_lowercase()));
        }
    }
    out
}

/// The inside of a JSON string holding `value`, as serde (`html = false`) or Go's encoder (`html = true`, which also
/// escapes `<`, `>`, `&`, U+2028 and U+2029) writes it.
fn json_escaped(value: &str, html: bool) -> String {
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let inner = quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default();
    if !html {
        return inner.to_string();
    }
    let mut out = String::with_capacity(inner.len());
    for c in inner.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// What every base64 encoding of a text holding `value` contains, wherever the value starts: base64 encodes in
/// groups of three bytes, so for each of the three alignments the encoding of the whole groups the value fills is a
/// fixed string (the one or two characters at either end, shared with neighbouring bytes, are not). In the standard
/// and the URL-safe alphabets.
fn base64_fragments(value: &[u8]) -> Vec<String> {
    if value.len() < MIN_BASE64_SECRET {
        return Vec::new();
    }
    let mut out = Vec::new();
    for shift in 0..3 {
        let whole = (value.len() - shift) / 3 * 3;
        let groups = &value[shift..shift + whole];
        for engine in [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE] {
            out.push(engine.encode(groups));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    fn found(value: &str, text: &str) -> bool {
        text.contains(value) || variants(value).iter().any(|(_, v)| text.contains(v.as_str()))
    }

    #[test]
    fn every_spelling_real_systems_write_is_found() {
        let secret = "p&ss<w>rd\"with/odd+chars é";
        let once = serde_json::to_string(secret).unwrap();
        let twice = serde_json::to_string(&format!("{{\"msg\":{once}}}")).unwrap();
        let go = once.replace('&', "\\u0026").replace('<', "\\u003c").replace('>', "\\u003e");
        let docker = serde_json::to_string(&format!("{{\"msg\":{go}}}\n")).unwrap();
        for text in [once.clone(), twice, go, docker] {
            assert!(found(secret, &text), "{text}");
        }
        let url = format!("https://h/cb?token={}&x=1", percent_encoding::utf8_percent_encode(secret, URL_COMPONENT));
        assert!(found(secret, &url));
        assert!(found(secret, &url.to_lowercase().replace("https://h/cb?token=", "")), "lower-case hex escapes");
        assert!(found(secret, &format!("a={}", form_encoded(secret))));
    }

    #[test]
    fn base64_finds_the_value_at_every_offset_in_every_alphabet() {
        let secret = "hunter2-but-longer?>";
        for prefix in ["", "a", "ab", "abc", "some binary\u{0}\u{1} around "] {
            let blob = format!("{prefix}{secret}{prefix}");
            for engine in
                [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE_NO_PAD]
            {
                let text = engine.encode(blob.as_bytes());
                assert!(found(secret, &text), "{prefix:?} {text}");
            }
        }
        assert!(base64_fragments(b"short").is_empty(), "a short value has no reliable fragment");
        assert!(!found(secret, &base64::engine::general_purpose::STANDARD.encode("hunter2-but-shorter")));
    }

    #[test]
    fn a_plain_value_has_only_its_base64_spellings() {
        let v = variants("AbCdEf0123456789");
        assert!(v.iter().all(|(name, _)| *name == "base64"), "{v:?}");
    }
}
