//! Where a server's output goes when its starter is given no log directory: one
//! directory per test under `target/testkit-logs/<binary>/<test>/`, which CI keeps as an
//! artifact. (`etlctl up` always names its own: `.etl/logs/`.)
//!
//! The directory and its override keep their `testkit` names from before this crate was
//! split out of testkit: CI's artifact path and developers' habits rely on them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::error::{Error, Result};

/// Environment variable that overrides the log root.
pub const LOG_DIR_ENV: &str = "TESTKIT_LOG_DIR";

/// The directory every per-test log directory lives in: `$TESTKIT_LOG_DIR` if set, else
/// `<cargo target dir>/testkit-logs`, else `<temp dir>/testkit-logs`.
///
/// The target dir is found from the running executable (test binaries live in
/// `target/<profile>/deps/`, and cargo marks its target dir with `CACHEDIR.TAG`), so it
/// is right even when `CARGO_TARGET_DIR` moved it.
pub fn log_root() -> PathBuf {
    if let Some(dir) = std::env::var_os(LOG_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let target = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    target
        .unwrap_or_else(std::env::temp_dir)
        .join("testkit-logs")
}

/// `log_root()/<name>`, created if needed. Each `/`-separated part of `name` is made
/// path-safe, so `name` can nest but never escape the root.
pub fn log_dir(name: &str) -> Result<PathBuf> {
    let dir = name
        .split('/')
        .filter(|part| !part.is_empty())
        .fold(log_root(), |dir, part| dir.join(path_safe(part)));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create log directory", &dir, e))?;
    Ok(dir)
}

/// The log directory of the running test, `log_root()/<binary>/<test>/`, emptied of the
/// previous run's logs the first time this process asks for it.
///
/// `<test>` is the test's path: libtest names each test's thread after it
/// (`module::test_name`), and `#[tokio::test]` runs the body on that thread; outside a
/// test thread the executable's name is used. `<binary>` is [`binary_log_name`], so two
/// crates whose tests share a name keep separate logs.
pub fn test_log_dir() -> Result<PathBuf> {
    let name = binary_log_name();
    let dir = log_root()
        .join(path_safe(&name))
        .join(path_safe(&current_test_name()));
    let mut cleared = CLEARED.lock().unwrap_or_else(PoisonError::into_inner);
    if cleared.get_or_insert_with(HashSet::new).insert(dir.clone()) {
        // A test dir belongs to one test of one binary, run by one process at a time.
        // Old logs would read as this run's (their names carry ports, which change).
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("cannot create log directory", &dir, e))?;
    Ok(dir)
}

/// Test directories already emptied by this process.
static CLEARED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// The log directory name of the running binary: `<package>-<executable>` when run by
/// cargo (which sets `CARGO_PKG_NAME`; every crate's integration tests are an `it`
/// binary), else the executable's name, cargo's hash suffix removed either way.
pub fn binary_log_name() -> String {
    let exe = executable_name();
    match std::env::var("CARGO_PKG_NAME") {
        Ok(package) if package.replace('-', "_") != exe.replace('-', "_") => {
            format!("{package}-{exe}")
        }
        _ => exe,
    }
}

pub(crate) fn current_test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.starts_with("tokio-runtime-worker") => {
            name.to_owned()
        }
        _ => executable_name(),
    }
}

/// The running executable's name without cargo's `-<16 hex digits>` hash suffix, so
/// log directories keep their name from one build to the next.
pub(crate) fn executable_name() -> String {
    let name = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "etl-stack".to_owned());
    without_cargo_hash(&name).to_owned()
}

fn without_cargo_hash(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((stem, hash))
            if !stem.is_empty()
                && hash.len() == 16
                && hash.chars().all(|c| c.is_ascii_hexdigit()) =>
        {
            stem
        }
        _ => name,
    }
}

fn path_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' | '.' => c,
            _ => '_',
        })
        .collect();
    match safe.trim_matches('.') {
        "" => "unnamed".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// The last `lines` lines of a log file, indented with `    | `, for an error
/// message that must show why a process failed (lossy UTF-8: a log may hold
/// anything).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..]
                .iter()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("    (cannot read the log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_dirs_are_named_after_the_test() {
        let dir = test_log_dir().expect("log dir");
        assert!(dir.is_dir());
        assert_eq!(
            dir.file_name().and_then(|n| n.to_str()),
            Some("logs__tests__test_dirs_are_named_after_the_test")
        );
        assert!(dir.starts_with(log_root().join(binary_log_name())));
        // Asking again in the same process keeps what the test wrote meanwhile.
        std::fs::write(dir.join("server.log"), "kept").expect("write");
        assert_eq!(test_log_dir().expect("log dir"), dir);
        assert!(dir.join("server.log").is_file());
    }

    #[test]
    fn cargo_hashes_are_dropped() {
        assert_eq!(without_cargo_hash("it-ee87c09a2460397a"), "it");
        assert_eq!(without_cargo_hash("etlctl"), "etlctl");
        assert_eq!(without_cargo_hash("sink-verifier"), "sink-verifier");
    }

    #[test]
    fn names_cannot_escape_the_root() {
        assert_eq!(path_safe("../x/y"), "_x_y");
        assert_eq!(path_safe(".."), "unnamed");
        let nested = log_dir("etl-stack-unit/../x").expect("log dir");
        assert_eq!(nested, log_root().join("etl-stack-unit/unnamed/x"));
        let _ = std::fs::remove_dir_all(log_root().join("etl-stack-unit"));
    }
}
