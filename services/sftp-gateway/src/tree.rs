//! Each root's file tree and the one rule that guards it: every path a client
//! sends is resolved inside its user's root or refused. A root is a directory
//! of the data directory; users configured with the same root share one
//! [`UserTree`] (and its quota).
//!
//! The client sees its root as `/` (as under OpenSSH's `ChrootDirectory`);
//! relative paths start there too, since the root is the login directory. A
//! `..` that would climb above `/` is refused rather than clamped, so a client
//! learns that it tried to leave.
//!
//! The check and the use are one system call: the root is held open as a
//! directory descriptor, and every file or directory is reached from it with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, which the kernel refuses
//! if any component is a symbolic link or the walk would leave the root.
//! Directory operations (`mkdir`, `unlink`, `rename`) act on a name inside a
//! parent directory opened the same way. So a symlink swapped in between a
//! client's `stat` and its `open` cannot lead outside: there is no separate
//! check to race. Where `openat2` is missing (kernels before 5.6, or a
//! seccomp filter that hides it) the same walk is done one component at a
//! time with `O_NOFOLLOW`. Symbolic links are never followed, even when their
//! target stays inside the root; the gateway never creates one.

use std::{
    fs::{File, Metadata},
    io,
    os::fd::{AsFd, OwnedFd},
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
};

use rustix::{
    fs::{AtFlags, Mode, OFlags, ResolveFlags},
    io::Errno,
};

use crate::quota::Usage;

/// The directories every user root has.
pub(crate) const LAYOUT: [&str; 3] = ["input", "finished", ERROR_DIR];
/// Where connectors move the files they reject.
pub(crate) const ERROR_DIR: &str = "error";
/// Mode of new files and directories (less the umask).
const NEW_FILE_MODE: u32 = 0o666;
const NEW_DIR_MODE: u32 = 0o777;
/// Set once `openat2` turned out to be missing: walk instead.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
pub(crate) enum PathError {
    /// The path leaves the user's root (by `..`).
    Escape,
    /// Not a usable path (a NUL byte, for one).
    Invalid(&'static str),
}

/// A client path, resolved lexically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Relative to the user's root, `/`-separated, no leading `/`; empty for the root.
    pub(crate) rel: String,
}

/// One root, shared by every user configured with it.
#[derive(Debug)]
pub(crate) struct UserTree {
    /// The root's directory name under the data directory.
    name: String,
    root_fd: OwnedFd,
    usage: Usage,
}

impl UserTree {
    /// Creates `<data_dir>/<name>` and its [`LAYOUT`] directories if missing,
    /// and opens the root; no quota, no file size limit.
    #[cfg(test)]
    pub(crate) fn create(data_dir: &Path, name: &str) -> io::Result<Self> {
        Self::create_with_limits(data_dir, name, 0, 0)
    }

    /// [`UserTree::create`] with a quota and a file size limit (0: none),
    /// measuring what the root holds already.
    pub(crate) fn create_with_limits(
        data_dir: &Path,
        name: &str,
        quota: u64,
        max_file: u64,
    ) -> io::Result<Self> {
        let root = data_dir.join(name);
        for dir in LAYOUT {
            std::fs::create_dir_all(root.join(dir))?;
        }
        let root = std::fs::canonicalize(&root)?;
        let root_fd = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let usage = Usage::measure(&root, quota, max_file);
        Ok(Self {
            name: name.to_string(),
            root_fd,
            usage,
        })
    }

    /// The bytes this root holds, against its quota.
    pub(crate) fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The root's name: what trace contexts, announcements and notices are
    /// keyed by, so every user of the root shares them.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Resolves `path` lexically. Whether it exists, and that no symlink is
    /// on the way, is decided by the operation itself.
    pub(crate) fn resolve(&self, path: &str) -> Result<Resolved, PathError> {
        Ok(Resolved {
            rel: normalize(path)?,
        })
    }

    /// Opens `rel` beneath the root, following no symlink. Blocking.
    fn open_fd(&self, rel: &str, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        let path = if rel.is_empty() { "." } else { rel };
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        // openat2 refuses a mode unless it creates something.
        let mode = if flags.contains(OFlags::CREATE) {
            Mode::from_raw_mode(mode)
        } else {
            Mode::empty()
        };
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            // EAGAIN: the kernel saw a concurrent rename during the walk; retry.
            for _ in 0..8 {
                match rustix::fs::openat2(&self.root_fd, path, flags, mode, resolve) {
                    Err(Errno::AGAIN) => continue,
                    Err(Errno::NOSYS) => {
                        NO_OPENAT2.store(true, Ordering::Relaxed);
                        tracing::warn!(
                            "openat2 is not available; opening paths one component at a time with O_NOFOLLOW"
                        );
                        break;
                    }
                    other => return other.map_err(Into::into),
                }
            }
            if !NO_OPENAT2.load(Ordering::Relaxed) {
                return Err(Errno::AGAIN.into());
            }
        }
        self.walk_open(rel, flags, mode)
    }

    /// The portable walk: each directory opened from the previous one with
    /// `O_NOFOLLOW`, so no component may be a symlink. `rel` is normalized
    /// (no `..`), so the walk cannot climb out either.
    fn walk_open(&self, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = rustix::fs::openat(&self.root_fd, ".", dir_flags, Mode::empty())?;
        let mut parts = rel.split('/').filter(|p| !p.is_empty());
        let Some(mut name) = parts.next() else {
            return Ok(rustix::fs::openat(&dir, ".", flags, mode)?);
        };
        for next in parts {
            dir = rustix::fs::openat(&dir, name, dir_flags, Mode::empty())?;
            name = next;
        }
        Ok(rustix::fs::openat(&dir, name, flags, mode)?)
    }

    /// Opens the file `rel` with these flags (`O_CREAT` creates it with mode
    /// 0666 less the umask). Refuses anything but a regular file.
    pub(crate) fn open_file(&self, rel: &str, flags: OFlags) -> io::Result<File> {
        if rel.is_empty() {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        let file = File::from(self.open_fd(rel, flags | OFlags::NONBLOCK, NEW_FILE_MODE)?);
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::ErrorKind::IsADirectory.into());
        }
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    /// Opens `rel` (file or directory) for reading.
    pub(crate) fn open_read(&self, rel: &str) -> io::Result<File> {
        Ok(File::from(self.open_fd(
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            0,
        )?))
    }

    /// Metadata of `rel` itself (a symlink is described, not followed).
    pub(crate) fn lstat(&self, rel: &str) -> io::Result<Metadata> {
        File::from(self.open_fd(rel, OFlags::PATH, 0)?).metadata()
    }

    /// The parent directory of `rel` (opened beneath the root) and the last
    /// component's name.
    fn parent<'a>(&self, rel: &'a str) -> io::Result<(OwnedFd, &'a str)> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the root itself cannot be changed",
            ));
        }
        let fd = self.open_fd(dir, OFlags::PATH | OFlags::DIRECTORY, 0)?;
        Ok((fd, name))
    }

    pub(crate) fn mkdir(&self, rel: &str) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::mkdirat(
            &dir,
            name,
            Mode::from_raw_mode(NEW_DIR_MODE),
        )?)
    }

    /// Removes the file (or symlink) `rel`; never a directory.
    pub(crate) fn remove_file(&self, rel: &str) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::empty())?)
    }

    pub(crate) fn remove_dir(&self, rel: &str) -> io::Result<()> {
        let (dir, name) = self.parent(rel)?;
        Ok(rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR)?)
    }

    /// Renames `from` to `to` (POSIX: an existing `to` is replaced).
    pub(crate) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from)?;
        let (to_dir, to_name) = self.parent(to)?;
        Ok(rustix::fs::renameat(
            &from_dir, from_name, &to_dir, to_name,
        )?)
    }

    /// The entries of the directory `rel` with their own metadata (a symlink
    /// is listed as a symlink), without `.` and `..`.
    pub(crate) fn read_dir(&self, rel: &str) -> io::Result<Vec<(String, Metadata)>> {
        let fd = self.open_fd(rel, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        let mut entries = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let name = name.to_string();
            // The entry's own metadata, from the directory already open.
            let Ok(meta) = rustix::fs::openat(
                fd.as_fd(),
                name.as_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
            .and_then(|fd| File::from(fd).metadata()) else {
                continue;
            };
            entries.push((name, meta));
        }
        Ok(entries)
    }
}

/// Whether an error means the path went through a symlink or out of the
/// root (the kernel's refusal of the walk).
pub(crate) fn is_refused_walk(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::LOOP | Errno::XDEV)
    )
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
        assert_eq!(r.rel, "etc/passwd");
        assert!(tree.open_read("etc/passwd").is_err(), "not the host's");
        for d in LAYOUT {
            assert!(dir.path().join("etl").join(d).is_dir());
        }
        Ok(())
    }

    /// Both walks: `openat2`, and the component walk used without it.
    fn with_both_walks(test: impl Fn(bool)) {
        test(false);
        test(true);
    }

    #[test]
    fn symlinks_are_never_followed() {
        with_both_walks(|walk| {
            let dir = tempfile::tempdir().expect("tempdir");
            let outside = tempfile::tempdir().expect("tempdir");
            std::fs::write(outside.path().join("secret"), "x").expect("secret");
            let tree = UserTree::create(dir.path(), "etl").expect("tree");
            let root = dir.path().join("etl");
            std::fs::write(root.join("input/a.csv"), "a").expect("a");
            std::os::unix::fs::symlink(outside.path(), root.join("out")).expect("link");
            std::os::unix::fs::symlink(root.join("input"), root.join("in2")).expect("link");
            std::os::unix::fs::symlink("a.csv", root.join("input/rel")).expect("link");
            let read = |rel: &str| {
                if walk {
                    tree.walk_open(rel, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())
                        .map(File::from)
                } else {
                    tree.open_read(rel)
                }
            };
            assert!(read("input/a.csv").is_ok(), "walk={walk}");
            for bad in ["out/secret", "in2/a.csv", "input/rel", "out"] {
                assert!(read(bad).is_err(), "{bad} walk={walk}");
            }
            let create = if walk {
                tree.walk_open(
                    "out/new",
                    OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW,
                    Mode::from_raw_mode(0o600),
                )
                .map(|_| ())
            } else {
                tree.open_file("out/new", OFlags::WRONLY | OFlags::CREATE)
                    .map(|_| ())
            };
            assert!(create.is_err(), "walk={walk}");
            assert!(!outside.path().join("new").exists());
        });
    }

    #[test]
    fn directory_operations_stay_inside() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("keep"), "x")?;
        let tree = UserTree::create(dir.path(), "etl")?;
        let root = dir.path().join("etl");
        std::os::unix::fs::symlink(outside.path(), root.join("out"))?;
        assert!(tree.remove_file("out/keep").is_err());
        assert!(tree.mkdir("out/d").is_err());
        assert!(tree.rename("out/keep", "input/stolen").is_err());
        assert!(outside.path().join("keep").exists());
        // The link itself is an entry of the root: listed, removable.
        let names: Vec<_> = tree.read_dir("")?.into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"out".to_string()), "{names:?}");
        tree.remove_file("out")?;
        assert!(outside.path().join("keep").exists());

        tree.mkdir("input/sub")?;
        tree.open_file("input/sub/a", OFlags::WRONLY | OFlags::CREATE)?;
        tree.rename("input/sub/a", "finished/a")?;
        assert!(root.join("finished/a").is_file());
        assert!(tree.remove_dir("").is_err());
        tree.remove_dir("input/sub")?;
        Ok(())
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::{PathError, normalize};

        /// Paths built from the parts that matter: names, `.`, `..`, empty
        /// parts (doubled slashes), and odd bytes.
        fn path() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::collection::vec(
                    prop_oneof![
                        Just("..".to_string()),
                        Just(".".to_string()),
                        Just(String::new()),
                        "[a-z.\\\\ é\u{0}]{1,6}",
                    ],
                    0..10
                )
                .prop_map(|parts| parts.join("/")),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Never panics; what it returns is relative, has no `.`, `..` or
            /// empty part, and normalizes to itself.
            #[test]
            fn normalized_paths_stay_below_the_root(p in path()) {
                match normalize(&p) {
                    Ok(n) => {
                        // No prefix of the path climbed above the root.
                        let mut depth = 0i64;
                        for part in p.split('/') {
                            match part {
                                "" | "." => {}
                                ".." => depth -= 1,
                                _ => depth += 1,
                            }
                            prop_assert!(depth >= 0, "{p:?} climbs out but gave {n:?}");
                        }
                        prop_assert!(!n.starts_with('/'), "{n:?}");
                        if !n.is_empty() {
                            prop_assert!(n.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{n:?}");
                        }
                        prop_assert_eq!(normalize(&n).ok(), Some(n.clone()));
                        // The same path given as absolute, or with `./`, is the same place.
                        prop_assert_eq!(normalize(&format!("/{p}")).ok(), Some(n.clone()));
                        prop_assert_eq!(normalize(&format!("./{p}")).ok(), Some(n));
                    }
                    Err(PathError::Escape) => {
                        // Climbing above the root is refused however it is spelt.
                        let absolute = format!("/{p}");
                        prop_assert!(normalize(&absolute).is_err());
                    }
                    Err(_) => prop_assert!(p.contains('\0')),
                }
            }

            /// `a/..` cancels out wherever it appears.
            #[test]
            fn a_name_then_dotdot_cancels(p in path(), q in path(), name in "[a-z]{1,5}") {
                let joined = format!("{p}/{name}/../{q}");
                let direct = format!("{p}/{q}");
                prop_assert_eq!(normalize(&joined).ok(), normalize(&direct).ok());
            }
        }
    }
}
