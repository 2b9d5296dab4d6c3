//! Each user's file tree and the one rule that guards it: every path a client
//! sends is resolved inside that user's root or refused.
//!
//! The client sees its root as `/` (as under OpenSSH's `ChrootDirectory`);
//! relative paths start there too, since the root is the login directory. A
//! `..` that would climb above `/` is refused rather than clamped, so a client
//! learns that it tried to leave. Symlinks are never created by the gateway;
//! one placed in a root by someone else is followed only while its target
//! stays inside that root.

use std::{
    io,
    path::{Path, PathBuf},
};

/// The directories every user root has.
pub(crate) const LAYOUT: [&str; 3] = ["input", "finished", "error"];

#[derive(Debug)]
pub(crate) enum PathError {
    /// The path leaves the user's root (by `..` or through a symlink).
    Escape,
    /// Not a usable path (a NUL byte, for one).
    Invalid(&'static str),
    Io(io::Error),
}

impl From<io::Error> for PathError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// A client path, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Where it is on this machine.
    pub(crate) real: PathBuf,
    /// Relative to the user's root, `/`-separated, no leading `/`; empty for the root.
    pub(crate) rel: String,
}

/// One user's root.
#[derive(Clone, Debug)]
pub(crate) struct UserTree {
    user: String,
    root: PathBuf,
}

impl UserTree {
    /// Creates `<data_dir>/<user>` and its [`LAYOUT`] directories if missing.
    pub(crate) fn create(data_dir: &Path, user: &str) -> io::Result<Self> {
        let root = data_dir.join(user);
        for dir in LAYOUT {
            std::fs::create_dir_all(root.join(dir))?;
        }
        // Canonical, so symlink checks compare like with like.
        let root = std::fs::canonicalize(&root)?;
        Ok(Self {
            user: user.to_string(),
            root,
        })
    }

    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// Resolves `path` lexically, then checks that what exists of it on disk
    /// stays inside the root once symlinks are followed. Blocking: call it
    /// from a blocking task.
    pub(crate) fn resolve(&self, path: &str) -> Result<Resolved, PathError> {
        let rel = normalize(path)?;
        let real = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(&rel)
        };
        self.check_inside(&real)?;
        Ok(Resolved { real, rel })
    }

    /// The deepest existing ancestor of `real` (itself included) must
    /// canonicalize to a place inside the root. A dangling symlink fails here
    /// too, so `open(O_CREAT)` can never create a file through one.
    fn check_inside(&self, real: &Path) -> Result<(), PathError> {
        let mut probe = real.to_path_buf();
        loop {
            match std::fs::symlink_metadata(&probe) {
                Ok(_) => {
                    let canonical = std::fs::canonicalize(&probe)?;
                    return if canonical.starts_with(&self.root) {
                        Ok(())
                    } else {
                        Err(PathError::Escape)
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !probe.pop() || !probe.starts_with(&self.root) {
                        return Err(PathError::Escape);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The lexical part of [`UserTree::resolve`]: `/`-separated components with
/// `.` and empty parts dropped and `..` applied, refusing to climb above the root.
pub(crate) fn normalize(path: &str) -> Result<String, PathError> {
    if path.contains('\0') {
        return Err(PathError::Invalid("path contains a NUL byte"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(PathError::Escape);
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Option<String> {
        normalize(p).ok()
    }

    #[test]
    fn normalizes_inside_root() {
        assert_eq!(norm(""), Some(String::new()));
        assert_eq!(norm("."), Some(String::new()));
        assert_eq!(norm("/"), Some(String::new()));
        assert_eq!(norm("input/a.csv"), Some("input/a.csv".into()));
        assert_eq!(norm("/input//./a.csv"), Some("input/a.csv".into()));
        assert_eq!(norm("input/../finished/a"), Some("finished/a".into()));
        assert_eq!(norm("input/.."), Some(String::new()));
    }

    #[test]
    fn refuses_to_climb_out() {
        assert!(matches!(normalize(".."), Err(PathError::Escape)));
        assert!(matches!(
            normalize("/../etc/passwd"),
            Err(PathError::Escape)
        ));
        assert!(matches!(normalize("input/../../x"), Err(PathError::Escape)));
        assert!(matches!(normalize("a\0b"), Err(PathError::Invalid(_))));
    }

    #[test]
    fn absolute_paths_stay_in_root() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let tree = UserTree::create(dir.path(), "etl")?;
        let r = tree.resolve("/etc/passwd").map_err(|e| format!("{e:?}"))?;
        assert!(r.real.starts_with(dir.path().canonicalize()?.join("etl")));
        assert_eq!(r.rel, "etc/passwd");
        for d in LAYOUT {
            assert!(dir.path().join("etl").join(d).is_dir());
        }
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_out_of_root_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("secret"), "x")?;
        let tree = UserTree::create(dir.path(), "etl")?;
        let root = dir.path().join("etl");
        std::os::unix::fs::symlink(outside.path(), root.join("out"))?;
        std::os::unix::fs::symlink(root.join("input"), root.join("in2"))?;
        std::os::unix::fs::symlink("/nonexistent/x", root.join("dangling"))?;
        assert!(matches!(tree.resolve("out/secret"), Err(PathError::Escape)));
        assert!(matches!(
            tree.resolve("out/new-file"),
            Err(PathError::Escape)
        ));
        assert!(matches!(tree.resolve("out"), Err(PathError::Escape)));
        assert!(tree.resolve("dangling").is_err());
        assert!(tree.resolve("in2/a.csv").is_ok());
        Ok(())
    }
}
