//! Whether an input a collector is pointed at (a glob pattern, a directory, a file) is there at all. Only an input
//! that is genuinely absent lets a collector be `skipped`: one that exists but cannot be looked into is a failure,
//! because skipping it would hide evidence.

use std::{
    io,
    path::{Component, Path, PathBuf},
};

/// What is at an input that yielded nothing.
#[derive(Debug)]
pub enum Presence {
    /// Everything up to the pattern's first wildcard exists: it just matches nothing.
    NoMatch,
    /// This path, the first of the input's that is missing, does not exist.
    Absent(PathBuf),
    /// This path could not be looked at (permissions, a file where a directory should be): not absent.
    Unreadable { path: PathBuf, error: io::Error },
}

impl Presence {
    /// Looks at `pattern` (a glob pattern), component by component up to its first wildcard.
    pub fn of(pattern: &str) -> Self {
        Self::walk(Path::new(pattern), true)
    }

    /// Looks at `path` (no wildcards), component by component.
    pub fn of_path(path: &Path) -> Self {
        Self::walk(path, false)
    }

    fn walk(path: &Path, glob: bool) -> Self {
        let mut walked = PathBuf::new();
        for component in path.components() {
            if glob
                && let Component::Normal(name) = component
                && name.to_string_lossy().contains(['*', '?', '['])
            {
                break;
            }
            walked.push(component);
            if !matches!(component, Component::Normal(_) | Component::ParentDir) {
                continue;
            }
            match std::fs::metadata(&walked) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Self::Absent(walked),
                Err(error) => return Self::Unreadable { path: walked, error },
            }
        }
        Self::NoMatch
    }

    /// Whether the input is genuinely absent (nothing to read, nothing hidden).
    pub fn is_absent(&self) -> bool {
        !matches!(self, Self::Unreadable { .. })
    }

    /// Why `pattern` yielded nothing, in a few words naming the path.
    pub fn reason(&self, pattern: &str) -> String {
        match self {
            Self::NoMatch => format!("no file matches `{pattern}`"),
            Self::Absent(path) => format!("`{}` does not exist", path.display()),
            Self::Unreadable { path, error } => format!("cannot look in `{}`: {error}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_missing_directory_is_named_and_an_unlistable_one_is_not_absent() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let cases = [
            (format!("{root}/gone/compose.yml"), format!("`{root}/gone` does not exist")),
            (format!("{root}/gone/*/x.log"), format!("`{root}/gone` does not exist")),
            (format!("{root}/home/compose.yml"), format!("`{root}/home/compose.yml` does not exist")),
            (format!("{root}/home/*.ndjson"), format!("no file matches `{root}/home/*.ndjson`")),
        ];
        for (pattern, reason) in cases {
            let p = Presence::of(&pattern);
            assert!(p.is_absent(), "{pattern}: {p:?}");
            assert_eq!(p.reason(&pattern), reason);
        }
        // A file where a directory should be: something is there, so it is not absent.
        let odd = format!("{root}/file/compose.yml");
        let p = Presence::of(&odd);
        assert!(!p.is_absent(), "{p:?}");
        assert!(p.reason(&odd).starts_with(&format!("cannot look in `{root}/file/compose.yml`")), "{}", p.reason(&odd));
    }
}
