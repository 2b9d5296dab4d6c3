//! What a running connector reports: its state, counters and last error.
//! Shared between the connector's task (writer) and the APIs (readers).

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

/// Kafka Connect's task states, as far as they apply here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for a dependency (Kafka, the SFTP server, Postgres).
    Unassigned,
    Running,
    /// The last attempt failed; the task retries with backoff and returns to
    /// RUNNING when it succeeds. `last_error` says why.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unassigned => "UNASSIGNED",
            State::Running => "RUNNING",
            State::Failed => "FAILED",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Status {
    state: Mutex<State>,
    last_error: Mutex<String>,
    /// Source: files moved to finished/ (or cleaned up).
    pub(crate) files_finished: AtomicU64,
    /// Source: files moved to error/.
    pub(crate) files_failed: AtomicU64,
    /// Records produced (source) or rows written (sink).
    pub(crate) records: AtomicU64,
    /// Sink: records that could not be decoded and were skipped.
    pub(crate) skipped: AtomicU64,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Unassigned),
            last_error: Mutex::new(String::new()),
            files_finished: AtomicU64::new(0),
            files_failed: AtomicU64::new(0),
            records: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }
}

/// A consistent copy of a [`Status`] for an API answer.
#[derive(Clone, Debug)]
pub struct StatusSnapshot {
    pub state: State,
    pub files_finished: u64,
    pub files_failed: u64,
    pub records: u64,
    pub skipped: u64,
    pub last_error: String,
}

impl Status {
    pub(crate) fn set_state(&self, state: State) {
        if let Ok(mut s) = self.state.lock() {
            *s = state;
        }
    }

    /// Records an error the task is retrying after.
    pub(crate) fn fail(&self, error: impl Into<String>) {
        self.set_state(State::Failed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = error.into();
        }
    }

    /// Records why the task is still waiting for a dependency (UNASSIGNED).
    pub(crate) fn waiting(&self, error: impl Into<String>) {
        self.set_state(State::Unassigned);
        if let Ok(mut e) = self.last_error.lock() {
            *e = error.into();
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            state: self.state.lock().map(|s| *s).unwrap_or(State::Failed),
            files_finished: self.files_finished.load(Ordering::Relaxed),
            files_failed: self.files_failed.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
        }
    }
}
