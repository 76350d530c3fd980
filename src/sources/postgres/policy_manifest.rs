//! What a policy-set manifest says, independent of the database: which `policy_versions` it references, and the
//! forms of it whose SHA-256 can be `manifest_sha256`. Kept apart from the queries so the rules are tested alone.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Keys whose string values (directly, or in arrays) name policy versions for certain.
const EXPLICIT_KEYS: [&str; 3] = ["policy_version_id", "policy_version_ids", "policy_versions"];

/// Strings looked at, at most, when guessing: a manifest is small (Caracal caps it at 256 entries), so a
/// document with more strings than this is not one, and is not walked further.
const MAX_STRINGS: usize = 10_000;

/// The policy versions a manifest refers to, in the manifest's order, each once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Ids under an explicit key: each must exist, a missing one is a finding.
    pub explicit: Vec<String>,
    /// Any other string of the manifest: an id only if a policy version has it.
    pub candidates: Vec<String>,
}

/// Walks the manifest. Caracal writes `[{"policy_version_id": "<id>"}, ...]`; also accepted, anywhere in the
/// document: a string or array of strings under `policy_version_id`, `policy_version_ids` or `policy_versions`,
/// and the `id` of an object inside those. Every other string (`{"policies": ["pv-1"]}`, a bare array of ids) is a
/// candidate, kept by the caller only when a policy version with that id exists.
pub fn references(manifest: &Value) -> References {
    let mut refs = References::default();
    let mut seen = 0usize;
    walk(manifest, false, &mut refs, &mut seen);
    refs.candidates.retain(|c| !refs.explicit.contains(c));
    refs
}

fn walk(v: &Value, explicit: bool, refs: &mut References, seen: &mut usize) {
    match v {
        Value::String(s) => {
            *seen += 1;
            if *seen > MAX_STRINGS || s.is_empty() {
                return;
            }
            let list = if explicit { &mut refs.explicit } else { &mut refs.candidates };
            if !list.contains(s) {
                list.push(s.clone());
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, explicit, refs, seen)),
        Value::Object(map) => {
            for (k, x) in map {
                walk(x, EXPLICIT_KEYS.contains(&k.as_str()) || (explicit && k == "id"), refs, seen);
            }
        }
        _ => {}
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A stored hash as comparable hex: trimmed, lowercase, without the `\x` a `bytea` column prints with.
pub fn normalize_hex(stored: &str) -> String {
    let s = stored.trim();
    s.strip_prefix("\\x").unwrap_or(s).to_ascii_lowercase()
}

/// How the stored `manifest_sha256` compares with the manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ManifestHash {
    pub stored: Option<String>,
    /// SHA-256 of the compact form (Caracal's API hashes `JSON.stringify` of the manifest it stores).
    pub computed: String,
    /// SHA-256 of the text as the database returns it (what a writer hashing `manifest_json::text` would get).
    pub computed_stored_text: String,
    /// Which form matched: `compact`, `stored_text`, or none.
    pub matched: Option<&'static str>,
    pub ok: bool,
    /// Whether the compact form is surely the text Caracal hashed: an array of one-key objects (no key order to
    /// lose). A mismatch of another shape may only be jsonb's reordering.
    pub reproducible: bool,
}

/// Checks `stored` against both forms of the manifest: `parsed`, re-serialized compactly (for Caracal's
/// manifests, arrays of one-key objects, exactly `JSON.stringify`'s output: the same escapes, no spaces, and
/// `jsonb` keeps array order), and `text`, the column as read.
pub fn manifest_hash(parsed: Option<&Value>, text: &str, stored: Option<&str>) -> ManifestHash {
    let compact = parsed.and_then(|v| serde_json::to_string(v).ok()).unwrap_or_else(|| text.to_string());
    let computed = sha256_hex(compact.as_bytes());
    let computed_stored_text = sha256_hex(text.as_bytes());
    let want = stored.map(normalize_hex);
    let matched = match &want {
        Some(w) if *w == computed => Some("compact"),
        Some(w) if *w == computed_stored_text => Some("stored_text"),
        _ => None,
    };
    let reproducible = parsed.and_then(Value::as_array).is_some_and(|a| {
        a.iter().all(|e| e.as_object().is_some_and(|o| o.len() == 1 && o.values().all(|v| !v.is_object())))
    });
    ManifestHash { stored: want, computed, computed_stored_text, matched, ok: matched.is_some(), reproducible }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn caracal_manifests_reference_their_policy_version_ids_in_order() {
        let m =
            json!([{ "policy_version_id": "pv-b" }, { "policy_version_id": "pv-a" }, { "policy_version_id": "pv-b" }]);
        assert_eq!(references(&m), References { explicit: vec!["pv-b".into(), "pv-a".into()], candidates: vec![] });
    }

    #[test]
    fn other_shapes_give_explicit_ids_and_candidates() {
        let m = json!({
            "policy_versions": [{ "id": "pv-1", "name": "base" }, "pv-2"],
            "policy_version_ids": ["pv-3"],
            "policies": ["pv-4", "pv-1"],
            "schema_version": "2026-03-16",
        });
        let r = references(&m);
        assert_eq!(r.explicit, ["pv-3", "pv-1", "pv-2"]);
        assert_eq!(r.candidates, ["pv-4", "base", "2026-03-16"], "kept only if such a policy version exists");
        assert_eq!(references(&json!(["pv-9"])).candidates, ["pv-9"]);
    }

    #[test]
    fn manifest_hash_matches_caracals_json_stringify_form() {
        // What Caracal hashed: JSON.stringify, no spaces. What jsonb gives back: a space after each colon.
        let written = r#"[{"policy_version_id":"pv-1"},{"policy_version_id":"pv-\"2\"é"}]"#;
        let stored = sha256_hex(written.as_bytes());
        let as_read = r#"[{"policy_version_id": "pv-1"}, {"policy_version_id": "pv-\"2\"é"}]"#;
        let parsed: Value = serde_json::from_str(as_read).unwrap();
        let h = manifest_hash(Some(&parsed), as_read, Some(&stored.to_uppercase()));
        assert_eq!((h.ok, h.matched), (true, Some("compact")));
        let h = manifest_hash(Some(&parsed), as_read, Some(&format!("\\x{}", sha256_hex(as_read.as_bytes()))));
        assert_eq!((h.ok, h.matched), (true, Some("stored_text")), "a bytea column and the stored text form");
        let h = manifest_hash(Some(&parsed), as_read, Some(&sha256_hex(b"[]")));
        assert!(!h.ok && h.matched.is_none());
        assert!(!manifest_hash(Some(&parsed), as_read, None).ok, "no stored hash is not a match");
    }
}
