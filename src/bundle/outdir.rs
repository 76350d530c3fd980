//! The output directory, which other users may be able to write to (on a shared host, the attacker whose traces
//! are being collected). Everything preserve writes there is made inside a private (0700) directory it created
//! itself, through directory handles that never follow a link, and renamed into the output directory only when
//! finished: a link planted at any name preserve uses is replaced by the rename, never followed.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, openat, renameat},
    sys::stat::{Mode, fchmod, fstat, mkdirat},
    unistd::{UnlinkatFlags, unlinkat},
};

/// The output directory, held open: a rename of its path while a bundle is written changes nothing.
#[derive(Debug)]
pub struct OutDir {
    path: PathBuf,
    fd: OwnedFd,
}

/// A directory preserve created for itself inside the output directory, readable and writable by its owner only.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl OutDir {
    /// Opens the output directory, creating it (and its parents) when missing. The path is the operator's own
    /// setting: a link there is followed, once, here; nothing below it ever is.
    pub fn open(path: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(path)?;
        let file =
            File::options().read(true).custom_flags(libc_flags(OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)).open(path)?;
        Ok(Self { path: path.to_path_buf(), fd: file.into() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why another user could tamper with what is written here, when one could: the directory is writable by
    /// its group or by everyone (the check ssh makes of its own files). `None` when only its owner can write.
    pub fn exposure(&self) -> Option<String> {
        let st = fstat(self.fd.as_fd()).ok()?;
        let mode = st.st_mode & 0o7777;
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (false, false) => return None,
            (true, false) => "its group",
            (false, true) => "every user",
            (true, true) => "its group and every user",
        };
        Some(format!(
            "output directory {} (mode {mode:04o}) is writable by {who}: another user could replace or remove \
             bundles there; make it writable by the user preserve runs as only (chmod go-w)",
            self.path.display()
        ))
    }

    /// Creates `name` as a new private directory. Fails when anything at all is already there: a directory an
    /// attacker made in advance is never used.
    pub fn private(&self, name: &str) -> io::Result<PrivateDir> {
        single_component(name)?;
        mkdirat(self.fd.as_fd(), name, Mode::S_IRWXU)?;
        let fd = open_dir(self.fd.as_fd(), name)?;
        let st = fstat(fd.as_fd())?;
        if st.st_uid != nix::unistd::geteuid().as_raw() {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "the new directory is not ours"));
        }
        // mkdir's mode is masked by the umask, which can only take bits away; set it exactly all the same.
        fchmod(fd.as_fd(), Mode::S_IRWXU)?;
        Ok(PrivateDir { path: self.path.join(name), fd })
    }

    /// Creates a new private directory named `prefix`, a random part and `suffix`; a name already taken (by
    /// chance, or by someone who guessed it) is skipped for another. Returns the name and the directory.
    pub fn private_unique(&self, prefix: &str, suffix: &str) -> io::Result<(String, PrivateDir)> {
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for _ in 0..8 {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(io::Error::other)?;
            let name = format!("{prefix}.{}{suffix}", hex::encode(random));
            match self.private(&name) {
                Ok(dir) => return Ok((name, dir)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Removes the private directory `name` and everything in it. The standard library's removal does not follow
    /// links, not even one planted in place of the directory (that link is what is removed then).
    pub fn remove_private(&self, name: &str) -> io::Result<()> {
        single_component(name)?;
        std::fs::remove_dir_all(self.path.join(name))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PrivateDir {
    /// Where it is, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a new file at `relative` (a `/`-separated path, its folders made as needed, private too), opened
    /// for writing. Fails when anything is already there; never follows a link.
    pub fn create_file(&self, relative: &str) -> io::Result<File> {
        let (dir, name) = self.walk(relative, true)?;
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
        let fd =
            openat(dir.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd), name, flags, Mode::from_bits_truncate(0o600))?;
        Ok(File::from(fd))
    }

    /// Opens the file at `relative` for reading, refusing links on the way.
    pub fn open_file(&self, relative: &str) -> io::Result<File> {
        let (dir, name) = self.walk(relative, false)?;
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(dir.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd), name, flags, Mode::empty())?;
        Ok(File::from(fd))
    }

    pub fn remove_file(&self, relative: &str) -> io::Result<()> {
        let (dir, name) = self.walk(relative, false)?;
        Ok(unlinkat(dir.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd), name, UnlinkatFlags::NoRemoveDir)?)
    }

    /// Moves the file `relative` (directly in this directory) into `out` as `name`, replacing whatever is there:
    /// a link planted at `name` is itself replaced, its target untouched.
    pub fn publish(&self, relative: &str, out: &OutDir, name: &str) -> io::Result<()> {
        single_component(relative)?;
        single_component(name)?;
        Ok(renameat(self.fd.as_fd(), relative, out.fd(), name)?)
    }

    /// Writes `content` as `<name>.partial` here, synced, and renames it into `out` as `name`: a side file appears
    /// whole or not at all.
    pub fn write_into(&self, out: &OutDir, name: &str, content: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let tmp = format!("{name}.partial");
        let mut f = self.create_file(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        self.publish(&tmp, out, name)
    }

    /// The directory holding the last component of `relative`, opened without following links (`None`: this
    /// one), and that last component.
    fn walk<'r>(&self, relative: &'r str, create: bool) -> io::Result<(Option<OwnedFd>, &'r str)> {
        let mut parts: Vec<&str> = relative.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        single_component(name)?;
        let mut dir: Option<OwnedFd> = None;
        for part in parts {
            single_component(part)?;
            let at = dir.as_ref().map_or(self.fd.as_fd(), AsFd::as_fd);
            if create {
                match mkdirat(at, part, Mode::S_IRWXU) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            dir = Some(open_dir(at, part)?);
        }
        Ok((dir, name))
    }
}

/// Opens for reading a file preserve wrote into an output directory (a side file, a previous bundle), refusing a
/// link at its name (`ELOOP`: preserve never makes one) and never blocking on a FIFO planted there.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc_flags(OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC))
        .open(path)
}

fn open_dir(at: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    Ok(openat(at, name, flags, Mode::empty())?)
}

/// One plain name: no separator, not `.` or `..`, not empty.
fn single_component(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("`{name}` is not a plain file name")));
    }
    Ok(())
}

fn libc_flags(flags: OFlag) -> i32 {
    flags.bits()
}

#[cfg(test)]
mod tests {
    use std::{io::Write, os::unix::fs::PermissionsExt};

    use super::*;

    #[test]
    fn files_are_made_privately_and_links_are_neither_followed_nor_kept() {
        let root = tempfile::tempdir().unwrap();
        let out = OutDir::open(&root.path().join("evidence")).unwrap();
        let victim = root.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();

        let private = out.private(".b.staging").unwrap();
        let mode = std::fs::metadata(private.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "only its owner may enter the staging directory");
        assert!(out.private(".b.staging").is_err(), "an existing directory is never taken over");

        let mut f = private.create_file("data/c/log.txt").unwrap();
        f.write_all(b"evidence").unwrap();
        std::os::unix::fs::symlink(&victim, private.path().join("data/c/planted")).unwrap();
        assert!(private.create_file("data/c/planted").is_err(), "a link is not written through");
        assert!(private.open_file("data/c/planted").is_err(), "nor read through");
        std::os::unix::fs::symlink(root.path(), private.path().join("data/linked")).unwrap();
        assert!(private.create_file("data/linked/x").is_err(), "a linked folder is not entered");

        std::os::unix::fs::symlink(&victim, out.path().join("final.txt")).unwrap();
        private.create_file("side").unwrap().write_all(b"side file").unwrap();
        private.publish("side", &out, "final.txt").unwrap();
        let final_meta = std::fs::symlink_metadata(out.path().join("final.txt")).unwrap();
        assert!(final_meta.is_file(), "the planted link was replaced by the file");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(out.path().join("final.txt")).unwrap(), b"side file");
    }

    #[test]
    fn an_output_directory_others_can_write_to_is_named() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("evidence");
        let out = OutDir::open(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(out.exposure(), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let why = out.exposure().unwrap();
        assert!(why.contains("1777") && why.contains("every user"), "{why}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(out.exposure().unwrap().contains("its group"));
    }
}
