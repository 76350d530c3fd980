//! The last line against a leak: every byte written to any artifact is scanned for the run's known secret values,
//! after redaction and whatever path the bytes took. An artifact that holds one is never archived; its collector
//! fails, saying which secret (by rule and fingerprint, never the value) and where.

use std::sync::Arc;

use super::{Known, fingerprint_of_marker};

/// Watches one artifact's bytes as they are written.
pub struct LeakWatch {
    known: Arc<Known>,
    /// The last bytes of the previous write, so a value split across two writes is still seen.
    tail: Vec<u8>,
    found: Option<String>,
}

impl LeakWatch {
    pub fn new(known: Arc<Known>) -> Self {
        Self { tail: Vec::with_capacity(known.longest), known, found: None }
    }

    /// Scans the next bytes of the artifact.
    pub fn scan(&mut self, buf: &[u8]) {
        if self.found.is_some() || buf.is_empty() {
            return;
        }
        let keep = self.known.longest.saturating_sub(1);
        let hit = if self.tail.is_empty() {
            self.known.find(buf)
        } else {
            // Only the seam needs the copy: the tail plus as much of `buf` as a value could reach into it.
            let mut seam = self.tail.clone();
            seam.extend_from_slice(&buf[..buf.len().min(keep)]);
            self.known.ac.find(&seam[..]).or_else(|| self.known.find(buf))
        };
        if let Some(m) = hit {
            let (rule, marker) = &self.known.rules[m.pattern().as_usize()];
            self.found = Some(format!("{rule} (fingerprint {})", fingerprint_of_marker(marker)));
            return;
        }
        if buf.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&buf[buf.len() - keep..]);
        } else {
            self.tail.extend_from_slice(buf);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }

    /// The secret found, if any: its rule and fingerprint.
    pub fn found(&self) -> Option<&str> {
        self.found.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Secret, redact::Redactor};

    fn watch() -> LeakWatch {
        let key = crate::redact::FingerprintKey::per_bundle().unwrap();
        let r = Redactor::new(vec![("secret file auditHmacKey".into(), Secret::new("0123456789abcdef"))], key);
        LeakWatch::new(r.known().unwrap())
    }

    #[test]
    fn a_value_split_across_writes_is_still_found() {
        let mut w = watch();
        w.scan(b"line one\nkey=01234567");
        assert!(w.found().is_none());
        w.scan(b"89abcdef\n");
        assert!(w.found().unwrap().starts_with("secret file auditHmacKey (fingerprint "), "{:?}", w.found());
        let mut w = watch();
        for b in b"x 0123456789abcdef y" {
            w.scan(std::slice::from_ref(b));
        }
        assert!(w.found().is_some(), "byte by byte");
    }

    #[test]
    fn clean_bytes_pass() {
        let mut w = watch();
        w.scan(b"0123456789abcde");
        w.scan(b"_ and 123456789abcdef");
        assert!(w.found().is_none());
    }
}
