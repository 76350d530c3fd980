//! The evidence bundle: staged artifacts, the manifest model, the archive writer and `verify`.

pub mod artifact;
pub mod bagit;
pub mod bounds;
pub mod fingerprints;
pub mod manifest;
pub mod outdir;
pub mod verify;
pub mod walk;
pub mod writer;

/// `preserve-<profile>-<UTC yyyymmddThhmmssZ>-<8 hex>`.
pub fn bundle_id(profile: &str, at: jiff::Timestamp) -> String {
    let mut random = [0u8; 4];
    // Without randomness two bundles in the same second would collide; fall back to the clock's nanoseconds.
    if getrandom::fill(&mut random).is_err() {
        random = at.subsec_nanosecond().to_le_bytes();
    }
    let profile: String =
        profile.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '+' { c } else { '_' }).collect();
    format!("preserve-{profile}-{}-{}", crate::time::compact_utc(at), hex::encode(random))
}
