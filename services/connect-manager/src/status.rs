//! What a running connector reports: its state, counters and last error.
//! Shared between the connector's task (writer) and the APIs (readers).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// A connector with records waiting that wrote nothing for this long is stalled:
/// the service reports NOT_SERVING until it moves again.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(60);

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
    /// Sink: records in Kafka its group has not committed yet (measured every few seconds).
    lag: AtomicU64,
    /// When the task last moved data (or started).
    last_progress: Mutex<Instant>,
    /// The task stopped for good (until restarted): FAILED is not retried.
    pub(crate) halted: AtomicBool,
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
            lag: AtomicU64::new(0),
            last_progress: Mutex::new(Instant::now()),
            halted: AtomicBool::new(false),
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
    pub lag: u64,
    /// Records are waiting and nothing moved for [`STALL_AFTER`].
    pub stalled: bool,
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

    /// The task stopped and will not retry: FAILED until the connector restarts.
    pub(crate) fn halt(&self, error: impl Into<String>) {
        self.halted.store(true, Ordering::Relaxed);
        self.fail(error);
    }

    /// Data moved: records written (sink) or a file sent (source).
    pub(crate) fn progress(&self) {
        if let Ok(mut t) = self.last_progress.lock() {
            *t = Instant::now();
        }
    }

    pub(crate) fn set_lag(&self, lag: u64) {
        // Idle with nothing waiting is progress too: the stall clock starts when
        // records start waiting.
        if lag == 0 || self.lag.swap(lag, Ordering::Relaxed) == 0 {
            self.progress();
        }
        self.lag.store(lag, Ordering::Relaxed);
    }

    fn stalled(&self) -> bool {
        self.lag.load(Ordering::Relaxed) > 0
            && self
                .last_progress
                .lock()
                .map(|t| t.elapsed() >= STALL_AFTER)
                .unwrap_or(false)
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
            lag: self.lag.load(Ordering::Relaxed),
            stalled: self.stalled(),
            last_error: self
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
        }
    }
}
