//! The runs in progress, in memory, written through to the [`Store`].
//!
//! Every change is stored first and applied here second, so what this process
//! holds is never ahead of Postgres: a verifier killed at any moment reloads
//! the unfinished runs ([`Registry::sync`]) and carries on. Memory decides
//! *what* to check; the store decides what is true. So a second verifier on
//! the same database, whose copy of a run may be behind this one's for a
//! moment, never makes the two disagree: reports are read from the store
//! ([`Registry::report`]), a check is stored only if the file is not verified
//! and its run not ended yet (else this copy is reloaded), and a run's end and
//! state are decided in the store from the stored files. A run leaves memory
//! once it is complete (every file verified or rejected, and CompleteRun said
//! how many files it has). Each run in memory has a watch channel carrying its
//! report as this verifier sees it: a signal for the watchers, who read the
//! stored one.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use etl_proto::v1::RunReport;
use tokio::sync::watch;

use crate::{
    Error,
    manifest::Manifest,
    report::{self, ContentFacts, FileFacts},
    store::{CheckStored, Registration, Store, StoredFile},
    verify::FileCheck,
};

/// What recording a check changed, so the caller emits the file's span once
/// (across verifiers: the store says which check was the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The file just became verified.
    Verified,
    /// The file has altered or duplicate rows, stored for the first time.
    FirstProblem,
    /// Nothing worth a span (still waiting, or already known).
    Unchanged,
}

/// What this process knows of a file named by a NOTIFY.
#[derive(Clone, Debug)]
pub(crate) enum Lookup {
    /// Registered in a run in memory, still to be checked.
    Unverified(Arc<Manifest>),
    /// Registered in a run in memory, and done (verified or rejected).
    Done,
    /// Not in memory: a file of a finished run, of a run another verifier
    /// registered, or a file nobody registered.
    Unknown,
}

/// A run's reports: live while it is in memory, final once it finished.
#[derive(Debug)]
pub(crate) enum Subscription {
    Live(watch::Receiver<RunReport>),
    Finished(RunReport),
}

/// One registered file and what is known of it.
#[derive(Debug)]
struct FileEntry {
    manifest: Arc<Manifest>,
    /// The latest check; once it is verified it is never replaced.
    check: Option<FileCheck>,
    committed_at_unix_ms: Option<i64>,
    rejected: Option<String>,
    content: ContentFacts,
}

impl FileEntry {
    fn new(manifest: Manifest) -> Self {
        Self {
            manifest: Arc::new(manifest),
            check: None,
            committed_at_unix_ms: None,
            rejected: None,
            content: ContentFacts::NONE,
        }
    }

    fn stored(manifest: Manifest, stored: StoredFile) -> Self {
        Self {
            manifest: Arc::new(manifest),
            check: stored.check,
            committed_at_unix_ms: stored.committed_at_unix_ms,
            rejected: stored.rejected,
            content: stored.content,
        }
    }

    fn facts(&self) -> FileFacts<'_> {
        FileFacts {
            file_name: &self.manifest.file_name,
            row_count: self.manifest.row_count,
            trace_id: &self.manifest.trace_id,
            uploaded_at_unix_ms: self.manifest.uploaded_at_unix_ms,
            check: self.check.as_ref(),
            committed_at_unix_ms: self.committed_at_unix_ms,
            rejected: self.rejected.as_deref(),
            content: &self.content,
        }
    }

    fn verified(&self) -> bool {
        self.check.as_ref().is_some_and(FileCheck::verified)
    }
}

#[derive(Debug)]
struct Run {
    files: BTreeMap<String, FileEntry>,
    /// Set by CompleteRun.
    expected_files: Option<u64>,
    report: watch::Sender<RunReport>,
}

impl Run {
    fn new(run_id: &str) -> Self {
        Self {
            files: BTreeMap::new(),
            expected_files: None,
            report: watch::Sender::new(report::build(run_id, None, [])),
        }
    }

    /// Rebuilds the report and wakes watchers only when it changed.
    fn publish(&self, run_id: &str) {
        let report = report::build(
            run_id,
            self.expected_files,
            self.files.values().map(FileEntry::facts),
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

    /// Complete as far as this verifier knows: worth asking the store to end it.
    fn complete(&self) -> bool {
        self.report.borrow().complete
    }
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<String, Run>,
    run_of_file: HashMap<String, String>,
}

impl Inner {
    fn entry_mut(&mut self, file: &str) -> Option<(&str, &mut Run)> {
        let run_id = self.run_of_file.get(file)?;
        let run = self.runs.get_mut(run_id)?;
        Some((run_id.as_str(), run))
    }

    fn remove_run(&mut self, run_id: &str) {
        if let Some(run) = self.runs.remove(run_id) {
            for name in run.files.keys() {
                self.run_of_file.remove(name);
            }
        }
    }
}

/// What [`Registry::load`] found.
enum Loaded {
    /// Unfinished: now in memory.
    Live,
    /// Finished: its report as stored (boxed: far bigger than the other variants).
    Finished(Box<RunReport>),
    Unknown,
}

/// The unfinished runs in memory, in front of the [`Store`].
pub(crate) struct Registry {
    store: Arc<Store>,
    inner: Mutex<Inner>,
}

impl Registry {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self {
            store,
            inner: Mutex::default(),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still consistent
        // enough to report on: keep serving rather than poison every later call.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores `manifest` (see [`Store::register`]) and holds it for checking.
    pub(crate) async fn register(&self, manifest: Manifest) -> Result<Registration, Error> {
        let run_id = manifest.run_id.clone();
        let file = manifest.file_name.clone();
        let outcome = self.store.register(&manifest).await?;
        match &outcome {
            Registration::New {
                rejected,
                unmatched,
            } => {
                let held = {
                    let mut inner = self.lock();
                    match inner.runs.get_mut(&run_id) {
                        Some(run) => {
                            let mut entry = FileEntry::new(manifest);
                            entry.rejected = rejected.clone();
                            run.files.entry(file.clone()).or_insert(entry);
                            run.publish(&run_id);
                            inner.run_of_file.insert(file, run_id.clone());
                            true
                        }
                        None => false,
                    }
                };
                if !held {
                    self.load(&run_id).await?;
                }
                self.refresh_content(unmatched).await?;
                self.finish_if_complete(&run_id).await;
            }
            Registration::Unchanged => {
                let held = self.lock().runs.contains_key(&run_id);
                if !held {
                    // A retry after our restart, or a file another verifier took.
                    self.load(&run_id).await?;
                }
            }
        }
        Ok(outcome)
    }

    /// Records that `run_id` has `files` files in total.
    pub(crate) async fn complete(&self, run_id: &str, files: u64) -> Result<(), Error> {
        if run_id.is_empty() {
            return Err(Error::RunState {
                run_id: String::new(),
                reason: "run_id is empty".into(),
            });
        }
        self.store.complete(run_id, files).await?;
        let held = {
            let mut inner = self.lock();
            match inner.runs.get_mut(run_id) {
                Some(run) => {
                    run.expected_files = Some(files);
                    run.publish(run_id);
                    true
                }
                None => false,
            }
        };
        if !held {
            self.load(run_id).await?;
        }
        self.finish_if_complete(run_id).await;
        Ok(())
    }

    /// The run's report as stored: the same whichever verifier is asked. While
    /// Postgres is away, the report of this verifier's copy (stored earlier,
    /// so never ahead of the truth).
    pub(crate) async fn report(&self, run_id: &str) -> Result<RunReport, Error> {
        match self.store.report(run_id).await {
            Ok(Some(report)) => Ok(report),
            Ok(None) => Err(Error::UnknownRun(run_id.to_string())),
            Err(e) => match self.live(run_id) {
                Some(rx) => {
                    tracing::debug!(run = %run_id, error = %e, "reporting from memory");
                    Ok(rx.borrow().clone())
                }
                None => Err(e),
            },
        }
    }

    /// The run's changes while it is in memory (loaded for the asking, if it
    /// is unfinished), or its stored report once it finished.
    pub(crate) async fn subscribe(&self, run_id: &str) -> Result<Subscription, Error> {
        if let Some(rx) = self.live(run_id) {
            return Ok(Subscription::Live(rx));
        }
        match self.load(run_id).await? {
            Loaded::Finished(report) => Ok(Subscription::Finished(*report)),
            // It may have finished between loading and now.
            Loaded::Live | Loaded::Unknown => match self.live(run_id) {
                Some(rx) => Ok(Subscription::Live(rx)),
                None => self.report(run_id).await.map(Subscription::Finished),
            },
        }
    }

    /// Whether this verifier holds `run_id` in memory.
    pub(crate) fn holds(&self, run_id: &str) -> bool {
        self.lock().runs.contains_key(run_id)
    }

    fn live(&self, run_id: &str) -> Option<watch::Receiver<RunReport>> {
        self.lock().runs.get(run_id).map(|r| r.report.subscribe())
    }

    /// What memory knows of `file`.
    pub(crate) fn lookup(&self, file: &str) -> Lookup {
        let inner = self.lock();
        let entry = inner
            .run_of_file
            .get(file)
            .and_then(|run| inner.runs.get(run))
            .and_then(|run| run.files.get(file));
        match entry {
            None => Lookup::Unknown,
            Some(e) if e.facts().done() => Lookup::Done,
            Some(e) => Lookup::Unverified(e.manifest.clone()),
        }
    }

    /// Every file in memory that still needs checking.
    pub(crate) fn unverified(&self) -> Vec<Arc<Manifest>> {
        let inner = self.lock();
        inner
            .runs
            .values()
            .flat_map(|r| r.files.values())
            .filter(|f| !f.facts().done())
            .map(|f| f.manifest.clone())
            .collect()
    }

    /// Stores a check of `file` and applies it. Verified files stay verified:
    /// a check made after that is ignored, and so is a check of a file another
    /// verifier verified, or of a run that ended (this copy is then reloaded).
    /// `committed_at_unix_ms` is when the file's rows committed, for a
    /// verified check.
    pub(crate) async fn record(
        &self,
        file: &str,
        check: FileCheck,
        committed_at_unix_ms: Option<i64>,
    ) -> Result<Recorded, Error> {
        let (run_id, manifest) = {
            let mut inner = self.lock();
            let Some((run_id, run)) = inner.entry_mut(file) else {
                return Ok(Recorded::Unchanged);
            };
            let run_id = run_id.to_string();
            let Some(entry) = run.files.get(file) else {
                return Ok(Recorded::Unchanged);
            };
            if entry.facts().done() || entry.check.as_ref() == Some(&check) {
                return Ok(Recorded::Unchanged);
            }
            (run_id, entry.manifest.clone())
        };
        let committed_at_unix_ms = committed_at_unix_ms.filter(|_| check.verified());
        // Verified together with the lookup of its twins, so its run never
        // ends as PASSED first and turns FAILED a moment later. If this fails,
        // nothing is stored and the next check tries again.
        let (outcome, twins) = match self
            .store
            .record_check(&manifest, &check, committed_at_unix_ms)
            .await?
        {
            CheckStored::Settled => {
                // Verified by another verifier, or its run ended: take the store's word.
                self.load(&run_id).await?;
                return Ok(Recorded::Unchanged);
            }
            CheckStored::Verified { twins } => (Recorded::Verified, Some(twins)),
            CheckStored::FirstProblem => (Recorded::FirstProblem, None),
            CheckStored::Progress => (Recorded::Unchanged, None),
        };
        {
            let mut inner = self.lock();
            let Some((_, run)) = inner.entry_mut(file) else {
                return Ok(outcome);
            };
            if let Some(entry) = run.files.get_mut(file) {
                if check.verified() {
                    entry.committed_at_unix_ms = committed_at_unix_ms;
                }
                entry.check = Some(check);
            }
            run.publish(&run_id);
        }
        if let Some(twins) = twins {
            for original in &twins.originals {
                tracing::warn!(
                    file = %file,
                    run = %run_id,
                    original = %original,
                    rows = manifest.row_digests.len(),
                    "this file is a copy of a file of another run: the same rows landed again"
                );
            }
            if twins.rows > 0 && twins.originals.is_empty() {
                tracing::info!(
                    file = %file,
                    run = %run_id,
                    rows = twins.rows,
                    "rows of this file also landed under files of other runs (overlapping rows, not a copy)"
                );
            }
            for (other, rows) in &twins.earlier {
                tracing::debug!(
                    file = %file,
                    other = %other,
                    rows,
                    "rows of an earlier file of another run have their first twin in this one"
                );
            }
            if twins.any() {
                self.refresh_content(&twins.changed(file)).await?;
            }
        }
        self.finish_if_complete(&run_id).await;
        Ok(outcome)
    }

    /// Stores that the connector moved `file` to `error/` because of `reason`,
    /// and marks it rejected if it is registered and not verified.
    pub(crate) async fn reject(&self, file: &str, reason: &str) -> Result<(), Error> {
        self.store.reject(file, reason).await?;
        let run_id = {
            let mut inner = self.lock();
            match inner.entry_mut(file) {
                Some((run_id, run)) => {
                    let run_id = run_id.to_string();
                    if let Some(entry) = run.files.get_mut(file) {
                        if entry.verified() {
                            tracing::warn!(
                                file,
                                reason,
                                "a verified file was reported in error/; its rows are all there, so it stays verified"
                            );
                        } else {
                            tracing::warn!(file, run = %run_id, reason, "file rejected by the connector");
                            entry.rejected = Some(reason.to_string());
                        }
                    }
                    run.publish(&run_id);
                    Some(run_id)
                }
                None => None,
            }
        };
        match run_id {
            Some(run_id) => self.finish_if_complete(&run_id).await,
            // Registered in a run we do not hold (or not at all: then the
            // registration will find the stored rejection).
            None => {
                if let Some((run_id, false)) = self.store.run_of_file(file).await? {
                    self.load(&run_id).await?;
                }
            }
        }
        Ok(())
    }

    /// Reads what the content-duplicate checks found for those of `files` in
    /// memory from the store (one query), and sets it. A file not in memory
    /// (its run finished) is read from the store when asked for.
    pub(crate) async fn refresh_content(&self, files: &[String]) -> Result<(), Error> {
        let held: Vec<String> = {
            let mut inner = self.lock();
            files
                .iter()
                .filter(|f| {
                    inner
                        .entry_mut(f)
                        .is_some_and(|(_, run)| run.files.contains_key(f.as_str()))
                })
                .cloned()
                .collect()
        };
        for (file, facts) in self.store.content_facts(&held).await? {
            self.set_content(&file, facts);
        }
        Ok(())
    }

    /// Sets what the content-duplicate checks found for `file` if it is in
    /// memory (the store has it either way).
    pub(crate) fn set_content(&self, file: &str, facts: ContentFacts) {
        let mut inner = self.lock();
        if let Some((run_id, run)) = inner.entry_mut(file) {
            let run_id = run_id.to_string();
            if let Some(entry) = run.files.get_mut(file) {
                entry.content = facts;
            }
            run.publish(&run_id);
        }
    }

    /// Brings memory in line with the store: loads unfinished runs it does not
    /// hold (after a restart: all of them) or holds only in part (files another
    /// verifier registered), drops runs finished elsewhere, and finishes the
    /// complete runs whose finishing failed before.
    pub(crate) async fn sync(&self) -> Result<(), Error> {
        // Runs held before the query: one missing from its answer finished.
        let held_before: HashSet<String> = self.lock().runs.keys().cloned().collect();
        let stored = self.store.unfinished_runs().await?;
        let mut unfinished = HashSet::with_capacity(stored.len());
        for run in stored {
            let behind = {
                let inner = self.lock();
                inner.runs.get(&run.run_id).is_none_or(|held| {
                    (held.files.len() as u64) < run.files
                        || held.expected_files != run.expected_files
                })
            };
            if behind {
                self.load(&run.run_id).await?;
            }
            unfinished.insert(run.run_id);
        }
        let complete: Vec<String> = {
            let mut inner = self.lock();
            for run_id in held_before.difference(&unfinished) {
                inner.remove_run(run_id);
            }
            inner
                .runs
                .iter()
                .filter(|(_, r)| r.complete())
                .map(|(id, _)| id.clone())
                .collect()
        };
        for run_id in complete {
            self.finish_if_complete(&run_id).await;
        }
        Ok(())
    }

    /// Holds `run_id` in memory if it is unfinished (registered through another
    /// verifier, or before a restart).
    pub(crate) async fn adopt(&self, run_id: &str) -> Result<(), Error> {
        self.load(run_id).await.map(drop)
    }

    /// Reads `run_id` from the store into memory, unless it is finished.
    /// Files memory already holds keep their state, except what the store knows
    /// better (verified by another verifier, rejected, content duplicates).
    async fn load(&self, run_id: &str) -> Result<Loaded, Error> {
        let held: HashSet<String> = self
            .lock()
            .runs
            .get(run_id)
            .map(|r| r.files.keys().cloned().collect())
            .unwrap_or_default();
        let Some(stored) = self.store.load_run(run_id, Some(&held)).await? else {
            return Ok(Loaded::Unknown);
        };
        if stored.finished {
            self.lock().remove_run(run_id);
            return Ok(Loaded::Finished(Box::new(stored.report())));
        }
        let mut fresh = Vec::new();
        let mut known = Vec::new();
        for f in stored.files {
            if held.contains(&f.manifest.file_name) {
                known.push(f);
            } else {
                let manifest = Manifest::from_stored(f.manifest.clone())?;
                fresh.push(FileEntry::stored(manifest, f));
            }
        }
        let resumed = fresh.len();
        {
            let mut inner = self.lock();
            let run = inner
                .runs
                .entry(run_id.to_string())
                .or_insert_with(|| Run::new(run_id));
            run.expected_files = stored.expected_files;
            let mut names = Vec::with_capacity(fresh.len());
            for entry in fresh {
                let name = entry.manifest.file_name.clone();
                run.files.entry(name.clone()).or_insert(entry);
                names.push(name);
            }
            for f in known {
                if let Some(entry) = run.files.get_mut(&f.manifest.file_name) {
                    if !entry.verified() && f.check.as_ref().is_some_and(FileCheck::verified) {
                        entry.check = f.check;
                        entry.committed_at_unix_ms = f.committed_at_unix_ms;
                    }
                    if f.rejected.is_some() {
                        entry.rejected = f.rejected;
                    }
                    entry.content = f.content;
                }
            }
            run.publish(run_id);
            for name in names {
                inner.run_of_file.insert(name, run_id.to_string());
            }
        }
        if resumed > 0 {
            tracing::info!(run = %run_id, files = resumed, "loaded run from the store");
        }
        self.finish_if_complete(run_id).await;
        Ok(Loaded::Live)
    }

    /// A run complete in memory is ended in the store, which decides its state
    /// from the stored files (or finds it ended by another verifier), and
    /// leaves memory; its watchers get the stored end before their channel
    /// closes.
    async fn finish_if_complete(&self, run_id: &str) {
        if !self.lock().runs.get(run_id).is_some_and(Run::complete) {
            return;
        }
        match self.store.finish(run_id).await {
            Ok(Some(ended)) => {
                let mut inner = self.lock();
                if let Some(run) = inner.runs.get(run_id) {
                    run.report.send_replace(ended.report.clone());
                }
                inner.remove_run(run_id);
                if ended.now {
                    tracing::info!(run = %run_id, state = %ended.report.state, "run finished");
                }
            }
            // Memory saw it complete before the store's snapshot did; the
            // next check or sync looks again.
            Ok(None) => tracing::debug!(run = %run_id, "run not complete in the store yet"),
            // Kept in memory; the next sync finishes it.
            Err(e) => {
                tracing::warn!(run = %run_id, error = %e, "cannot store the end of the run; will retry")
            }
        }
    }
}
