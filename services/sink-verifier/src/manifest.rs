//! What each file should hold, per run: the manifests the extractor registers,
//! validated on the way in, and the latest check of each file against Postgres.
//!
//! The [`Registry`] is the verifier's only state. It is in memory: a restarted
//! verifier knows nothing until the extractor registers again (registration is
//! idempotent for exactly that reason).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use etl_core::digest::file_checksum;
use etl_proto::v1::{FileManifest, RunReport};
use tokio::sync::watch;

use crate::{Error, report, verify::FileCheck};

/// A validated [`FileManifest`]: as many digests as rows, and a checksum that
/// matches them, so a corrupted registration is refused instead of making an
/// honest pipeline look like it lost rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub run_id: String,
    pub file_name: String,
    pub row_count: u64,
    pub columns: Vec<String>,
    pub row_digests: Vec<u64>,
    pub checksum: u64,
    pub uploaded_at_unix_ms: i64,
    /// 32 hex digits, or empty when the file was not traced.
    pub trace_id: String,
    /// The uploader's span (W3C traceparent), parent of the verifier's span.
    pub traceparent: String,
}

impl TryFrom<FileManifest> for Manifest {
    type Error = Error;

    fn try_from(m: FileManifest) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidManifest {
            file: m.file_name.clone(),
            reason,
        };
        if m.file_name.is_empty() {
            return Err(invalid("file_name is empty".into()));
        }
        if m.file_name.contains('/') {
            return Err(invalid(
                "file_name must be the bare name written to _etl_file, without a directory".into(),
            ));
        }
        if m.run_id.is_empty() {
            return Err(invalid("run_id is empty".into()));
        }
        if m.columns.is_empty() {
            return Err(invalid("columns is empty: send the file's header".into()));
        }
        if let Some(c) = m.columns.iter().find(|c| c.is_empty()) {
            return Err(invalid(format!("column name {c:?} is empty")));
        }
        for (i, c) in m.columns.iter().enumerate() {
            if m.columns[..i].contains(c) {
                return Err(invalid(format!("column {c:?} appears twice")));
            }
        }
        if m.row_digests.len() as u64 != m.row_count {
            return Err(invalid(format!(
                "row_count is {} but {} row digests were sent (one per data row)",
                m.row_count,
                m.row_digests.len()
            )));
        }
        let checksum = file_checksum(&m.row_digests);
        if checksum != m.checksum {
            return Err(invalid(format!(
                "checksum {:016x} does not match the row digests (expected {checksum:016x}): the manifest was corrupted or built differently from etl_core::digest::file_checksum",
                m.checksum
            )));
        }
        // A traceparent of another trace than `trace_id` would split the file's trace.
        let traceparent = match etl_telemetry::trace_id_of(&m.traceparent) {
            Some(t) if m.trace_id.is_empty() || t == m.trace_id => m.traceparent.clone(),
            _ => String::new(),
        };
        let m = if m.trace_id.is_empty() && !traceparent.is_empty() {
            FileManifest {
                trace_id: etl_telemetry::trace_id_of(&traceparent)
                    .unwrap_or_default()
                    .to_string(),
                ..m
            }
        } else {
            m
        };
        let trace_id = if is_trace_id(&m.trace_id) {
            m.trace_id
        } else {
            if !m.trace_id.is_empty() {
                // A bad trace id costs the file its span parent, not its verification.
                tracing::warn!(file = %m.file_name, trace_id = %m.trace_id, "ignoring malformed trace id");
            }
            String::new()
        };
        Ok(Manifest {
            run_id: m.run_id,
            file_name: m.file_name,
            row_count: m.row_count,
            columns: m.columns,
            row_digests: m.row_digests,
            checksum: m.checksum,
            uploaded_at_unix_ms: m.uploaded_at_unix_ms,
            trace_id,
            traceparent,
        })
    }
}

fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

impl Manifest {
    /// Same file, same rows. Upload time and trace id may differ on a retried
    /// registration and do not change what must land.
    fn same_content(&self, other: &Manifest) -> Result<(), String> {
        if self.run_id != other.run_id {
            return Err(format!(
                "registered in run {:?}, now in run {:?}",
                self.run_id, other.run_id
            ));
        }
        if self.columns != other.columns {
            return Err(format!(
                "columns were {:?}, now {:?}",
                self.columns, other.columns
            ));
        }
        if self.row_count != other.row_count || self.checksum != other.checksum {
            return Err(format!(
                "{} rows with checksum {:016x} before, now {} rows with checksum {:016x}",
                self.row_count, self.checksum, other.row_count, other.checksum
            ));
        }
        Ok(())
    }
}

/// What a registration did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    New,
    /// The same file with the same content was registered before: nothing changed.
    Unchanged,
}

/// What recording a check changed, so the caller emits the file's span once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// The file just became verified.
    Verified,
    /// The file has altered or duplicate rows, seen for the first time.
    FirstProblem,
    /// Nothing worth a span (still waiting, or already known).
    Unchanged,
}

/// Registered files per run, their latest checks, and one watch channel per run
/// carrying its current report.
#[derive(Debug, Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<String, Run>,
    run_of_file: HashMap<String, String>,
}

#[derive(Debug)]
struct Run {
    files: BTreeMap<String, FileEntry>,
    /// Set by CompleteRun.
    expected_files: Option<u64>,
    report: watch::Sender<RunReport>,
}

#[derive(Debug)]
struct FileEntry {
    manifest: Arc<Manifest>,
    /// The latest check; once it is verified it is never replaced.
    check: Option<FileCheck>,
    problem_reported: bool,
}

impl FileEntry {
    fn verified(&self) -> bool {
        self.check.as_ref().is_some_and(FileCheck::verified)
    }
}

impl Run {
    fn new(run_id: &str) -> Self {
        let files = BTreeMap::new();
        let report = report::build(run_id, None, std::iter::empty());
        Self {
            files,
            expected_files: None,
            report: watch::Sender::new(report),
        }
    }

    /// Rebuilds the report and wakes watchers only when it changed.
    fn publish(&self, run_id: &str) {
        let report = report::build(
            run_id,
            self.expected_files,
            self.files
                .values()
                .map(|f| (f.manifest.as_ref(), f.check.as_ref())),
        );
        self.report.send_if_modified(|current| {
            if *current == report {
                false
            } else {
                *current = report;
                true
            }
        });
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still consistent
        // enough to report on: keep serving rather than poison every later call.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn register(&self, manifest: Manifest) -> Result<Registration, Error> {
        let mut inner = self.lock();
        if let Some(run_id) = inner.run_of_file.get(&manifest.file_name) {
            let existing = inner
                .runs
                .get(run_id)
                .and_then(|r| r.files.get(&manifest.file_name));
            if let Some(existing) = existing {
                return match existing.manifest.same_content(&manifest) {
                    Ok(()) => Ok(Registration::Unchanged),
                    Err(reason) => Err(Error::Conflict {
                        file: manifest.file_name,
                        reason,
                    }),
                };
            }
        }
        let run_id = manifest.run_id.clone();
        let run = inner
            .runs
            .entry(run_id.clone())
            .or_insert_with(|| Run::new(&run_id));
        if let Some(expected) = run.expected_files
            && run.files.len() as u64 >= expected
        {
            return Err(Error::RunState {
                run_id,
                reason: format!(
                    "the run was completed with {expected} files, all registered; cannot register {:?}",
                    manifest.file_name
                ),
            });
        }
        let file_name = manifest.file_name.clone();
        run.files.insert(
            file_name.clone(),
            FileEntry {
                manifest: Arc::new(manifest),
                check: None,
                problem_reported: false,
            },
        );
        run.publish(&run_id);
        inner.run_of_file.insert(file_name, run_id);
        Ok(Registration::New)
    }

    /// Records that `run_id` has `files` files in total.
    pub fn complete(&self, run_id: &str, files: u64) -> Result<(), Error> {
        if run_id.is_empty() {
            return Err(Error::RunState {
                run_id: String::new(),
                reason: "run_id is empty".into(),
            });
        }
        let mut inner = self.lock();
        let run = inner
            .runs
            .entry(run_id.to_string())
            .or_insert_with(|| Run::new(run_id));
        let registered = run.files.len() as u64;
        if registered > files {
            return Err(Error::RunState {
                run_id: run_id.to_string(),
                reason: format!("{registered} files are registered, but CompleteRun says {files}"),
            });
        }
        match run.expected_files {
            Some(before) if before != files => Err(Error::RunState {
                run_id: run_id.to_string(),
                reason: format!("already completed with {before} files, now {files}"),
            }),
            _ => {
                run.expected_files = Some(files);
                run.publish(run_id);
                Ok(())
            }
        }
    }

    pub fn report(&self, run_id: &str) -> Result<RunReport, Error> {
        let inner = self.lock();
        let run = inner
            .runs
            .get(run_id)
            .ok_or_else(|| Error::UnknownRun(run_id.to_string()))?;
        Ok(run.report.borrow().clone())
    }

    pub fn subscribe(&self, run_id: &str) -> Result<watch::Receiver<RunReport>, Error> {
        let inner = self.lock();
        let run = inner
            .runs
            .get(run_id)
            .ok_or_else(|| Error::UnknownRun(run_id.to_string()))?;
        Ok(run.report.subscribe())
    }

    /// The manifest of `file_name` if it still needs checking.
    pub fn unverified_file(&self, file_name: &str) -> Option<Arc<Manifest>> {
        let inner = self.lock();
        let run = inner.runs.get(inner.run_of_file.get(file_name)?)?;
        let entry = run.files.get(file_name)?;
        (!entry.verified()).then(|| entry.manifest.clone())
    }

    /// Every file that still needs checking.
    pub fn unverified(&self) -> Vec<Arc<Manifest>> {
        let inner = self.lock();
        inner
            .runs
            .values()
            .flat_map(|r| r.files.values())
            .filter(|f| !f.verified())
            .map(|f| f.manifest.clone())
            .collect()
    }

    /// Stores a check of `file_name`. Verified files stay verified: a check made
    /// after that is ignored.
    pub fn record(&self, file_name: &str, check: FileCheck) -> Recorded {
        let mut inner = self.lock();
        let Some(run_id) = inner.run_of_file.get(file_name).cloned() else {
            return Recorded::Unchanged;
        };
        let Some(run) = inner.runs.get_mut(&run_id) else {
            return Recorded::Unchanged;
        };
        let Some(entry) = run.files.get_mut(file_name) else {
            return Recorded::Unchanged;
        };
        if entry.verified() {
            return Recorded::Unchanged;
        }
        let outcome = if check.verified() {
            Recorded::Verified
        } else if check.has_problem() && !entry.problem_reported {
            entry.problem_reported = true;
            Recorded::FirstProblem
        } else {
            Recorded::Unchanged
        };
        entry.check = Some(check);
        run.publish(&run_id);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use etl_core::digest::row_digest;

    use super::*;

    fn proto(run: &str, file: &str, rows: &[[&str; 2]]) -> FileManifest {
        let row_digests: Vec<u64> = rows.iter().map(|r| row_digest(r)).collect();
        FileManifest {
            run_id: run.into(),
            file_name: file.into(),
            row_count: rows.len() as u64,
            columns: vec!["a".into(), "b".into()],
            checksum: file_checksum(&row_digests),
            row_digests,
            uploaded_at_unix_ms: 1_000,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            traceparent: String::new(),
        }
    }

    fn invalid_reason(m: FileManifest) -> String {
        match Manifest::try_from(m) {
            Err(Error::InvalidManifest { reason, .. }) => reason,
            other => panic!("expected an invalid manifest, got {other:?}"),
        }
    }

    #[test]
    fn valid_manifest_is_accepted() {
        let m = Manifest::try_from(proto("r", "f.csv", &[["x", "1"], ["y", "2"]])).expect("valid");
        assert_eq!(m.row_count, 2);
        assert_eq!(m.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn digest_count_must_match_row_count() {
        let mut m = proto("r", "f.csv", &[["x", "1"]]);
        m.row_count = 2;
        assert!(invalid_reason(m).contains("row_count is 2 but 1 row digests"));
    }

    #[test]
    fn checksum_must_match_digests() {
        let mut m = proto("r", "f.csv", &[["x", "1"], ["y", "2"]]);
        m.row_digests.swap(0, 1);
        assert!(invalid_reason(m).contains("does not match the row digests"));
    }

    #[test]
    fn names_and_columns_are_checked() {
        let mut m = proto("r", "f.csv", &[]);
        m.file_name.clear();
        assert!(invalid_reason(m).contains("file_name is empty"));
        let mut m = proto("", "f.csv", &[]);
        m.run_id.clear();
        assert!(invalid_reason(m).contains("run_id is empty"));
        let mut m = proto("r", "f.csv", &[]);
        m.columns = vec!["a".into(), "a".into()];
        assert!(invalid_reason(m).contains("appears twice"));
        let mut m = proto("r", "f.csv", &[]);
        m.file_name = "input/f.csv".into();
        assert!(invalid_reason(m).contains("without a directory"));
    }

    #[test]
    fn malformed_trace_id_is_dropped_not_fatal() {
        let mut m = proto("r", "f.csv", &[]);
        m.trace_id = "xyz".into();
        assert_eq!(Manifest::try_from(m).expect("valid").trace_id, "");
    }

    fn manifest(run: &str, file: &str, rows: &[[&str; 2]]) -> Manifest {
        Manifest::try_from(proto(run, file, rows)).expect("valid")
    }

    #[test]
    fn re_registration_is_idempotent_and_conflicts_are_refused() {
        let reg = Registry::new();
        let m = manifest("r", "f.csv", &[["x", "1"]]);
        assert_eq!(reg.register(m.clone()).expect("new"), Registration::New);
        let mut later = m.clone();
        later.uploaded_at_unix_ms += 5;
        assert_eq!(reg.register(later).expect("same"), Registration::Unchanged);
        let other = manifest("r", "f.csv", &[["x", "2"]]);
        assert!(matches!(reg.register(other), Err(Error::Conflict { .. })));
        let other_run = manifest("r2", "f.csv", &[["x", "1"]]);
        assert!(matches!(
            reg.register(other_run),
            Err(Error::Conflict { .. })
        ));
        assert_eq!(reg.report("r").expect("known").files, 1);
    }

    #[test]
    fn complete_run_sets_expected_files() {
        let reg = Registry::new();
        reg.register(manifest("r", "a.csv", &[["x", "1"]]))
            .expect("register");
        assert!(matches!(reg.complete("r", 0), Err(Error::RunState { .. })));
        reg.complete("r", 2).expect("complete");
        let report = reg.report("r").expect("known");
        assert_eq!((report.files, report.complete), (2, false));
        reg.register(manifest("r", "b.csv", &[["y", "1"]]))
            .expect("second file");
        assert!(matches!(
            reg.register(manifest("r", "c.csv", &[["z", "1"]])),
            Err(Error::RunState { .. })
        ));
        assert!(matches!(reg.complete("r", 3), Err(Error::RunState { .. })));
        assert!(matches!(reg.report("nope"), Err(Error::UnknownRun(_))));
    }

    #[test]
    fn verified_files_stay_verified() {
        let reg = Registry::new();
        reg.register(manifest("r", "a.csv", &[["x", "1"]]))
            .expect("register");
        reg.complete("r", 1).expect("complete");
        let mut rx = reg.subscribe("r").expect("known");
        let ok = FileCheck {
            rows_expected: 1,
            rows_landed: 1,
            last_loaded_at_unix_ms: Some(1_250),
            ..FileCheck::default()
        };
        assert_eq!(reg.record("a.csv", ok.clone()), Recorded::Verified);
        assert!(rx.has_changed().expect("open"));
        let report = rx.borrow_and_update().clone();
        assert!(report.complete);
        assert_eq!(report.latency.expect("latency").max_ms, 250);
        assert!(reg.unverified().is_empty());
        assert!(reg.unverified_file("a.csv").is_none());
        let worse = FileCheck {
            rows_expected: 1,
            missing: 1,
            ..FileCheck::default()
        };
        assert_eq!(reg.record("a.csv", worse), Recorded::Unchanged);
        assert!(!rx.has_changed().expect("open"));
    }

    #[test]
    fn a_problem_is_reported_once() {
        let reg = Registry::new();
        reg.register(manifest("r", "a.csv", &[["x", "1"]]))
            .expect("register");
        let bad = FileCheck {
            rows_expected: 1,
            rows_landed: 1,
            altered: 1,
            ..FileCheck::default()
        };
        assert_eq!(reg.record("a.csv", bad.clone()), Recorded::FirstProblem);
        assert_eq!(reg.record("a.csv", bad), Recorded::Unchanged);
        assert_eq!(reg.report("r").expect("known").altered, 1);
    }
}
