//! Opening one file to collect: once, without blocking, and only on a file system that stores files. How much of
//! it is read is fixed at that moment (its size then), so a log another process keeps appending to, a FIFO
//! swapped in after the glob, or a kernel file such as `/proc/kmsg` cannot make a collector read without end.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use super::READ_BUFFER;

/// File systems whose files the kernel makes up as they are read: they report no size, may block on read
/// (`/proc/kmsg`), never end, or change between two reads. Magic numbers from `linux/magic.h`. `devtmpfs` shares
/// tmpfs's number, and holds only devices, which are not regular files anyway.
const PSEUDO_FILE_SYSTEMS: &[(u32, &str)] = &[
    (0x9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0x1cd1, "devpts"),
    (0xcafe_4a11, "bpf"),
    (0x6165_676c, "pstore"),
    (0xde5e_81e4, "efivarfs"),
    (0x6265_6570, "configfs"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x1980_0202, "mqueue"),
    (0x6e73_6673, "nsfs"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x4341_5d53, "smackfs"),
    (0x0765_5821, "resctrl"),
    (0x9fa2, "usbdevfs"),
];

/// A file opened for collection.
pub struct Opened {
    file: File,
    /// Its size when opened: all that is read of it (pseudo files report none).
    pub size_at_open: u64,
    /// The pseudo file system it is on, when the collector allowed one.
    pub pseudo: Option<&'static str>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{path}: not read: it is on {fs}, a pseudo file system, whose files the kernel makes up as they are read \
         (they may block or never end); set `pseudo_files = true` on the collector to read such files"
    )]
    PseudoFileSystem { path: String, fs: &'static str },
    #[error("{path}: not read: not a regular file")]
    NotRegular { path: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

impl OpenError {
    /// Whether the file was refused for what it is, rather than failing to open.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, OpenError::Io { .. })
    }
}

/// Opens `path` for reading. Non-blocking, so a FIFO or device put there since the glob matched cannot hang the
/// open; then judged on the opened handle, so what is checked is what is read.
pub fn open(path: &Path, allow_pseudo: bool) -> Result<Opened, OpenError> {
    let shown = || path.display().to_string();
    let io = |source| OpenError::Io { path: shown(), source };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(io)?;
    let fs_type = nix::sys::statfs::fstatfs(&file).map_err(|e| io(e.into()))?.filesystem_type().0;
    // `f_type` is 32 bits wide in the kernel whatever its C type; truncating keeps exactly those bits.
    let pseudo = PSEUDO_FILE_SYSTEMS.iter().find(|(magic, _)| *magic == fs_type as u32).map(|(_, name)| *name);
    if let Some(fs) = pseudo
        && !allow_pseudo
    {
        return Err(OpenError::PseudoFileSystem { path: shown(), fs });
    }
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular { path: shown() });
    }
    Ok(Opened { file, size_at_open: meta.len(), pseudo })
}

impl Opened {
    /// A reader from the start of the file, of at most `limit` bytes of it as stored (compressed, for `.gz`).
    pub fn reader(&self, gz: bool, limit: u64) -> io::Result<Box<dyn BufRead + Send>> {
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(0))?;
        let raw = file.take(limit);
        Ok(if gz {
            Box::new(BufReader::with_capacity(READ_BUFFER, flate2::read::MultiGzDecoder::new(BufReader::new(raw))))
        } else {
            Box::new(BufReader::with_capacity(READ_BUFFER, raw))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn proc_is_refused_unless_allowed_and_regular_files_are_sized_at_open() {
        let e = super::open("/proc/self/status".as_ref(), false).err().unwrap();
        assert!(e.to_string().contains("procfs, a pseudo file system"), "{e}");
        let allowed = super::open("/proc/self/status".as_ref(), true).unwrap();
        assert_eq!(allowed.pseudo, Some("procfs"));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.log");
        std::fs::write(&p, "one\n").unwrap();
        let o = super::open(&p, false).unwrap();
        std::fs::write(&p, "one\ntwo\n").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut o.reader(false, o.size_at_open).unwrap(), &mut text).unwrap();
        assert_eq!((o.size_at_open, text.as_str()), (4, "one\n"));
    }
}
