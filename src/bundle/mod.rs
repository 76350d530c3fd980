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

/// An archive's file name: `<id>.tar.zst`, or `<id>.tar.zst.age` when it is encrypted for its recipients.
pub fn archive_name(id: &str, encrypted: bool) -> String {
    if encrypted { format!("{id}.tar.zst.age") } else { format!("{id}.tar.zst") }
}

/// The bundle id of an archive's file name, and whether the archive is encrypted; `None`: not a bundle's name.
pub fn split_archive_name(name: &str) -> Option<(&str, bool)> {
    match name.strip_suffix(".tar.zst.age") {
        Some(id) => Some((id, true)),
        None => name.strip_suffix(".tar.zst").map(|id| (id, false)),
    }
}

/// [`split_archive_name`] of a path's file name.
pub fn archive_id(archive: &std::path::Path) -> Option<(&str, bool)> {
    split_archive_name(archive.file_name()?.to_str()?)
}

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
