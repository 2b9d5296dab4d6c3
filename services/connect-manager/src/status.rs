//! What a connector's task reports: its state, counters and last error.
//! Shared between the task (writer) and the APIs (readers).
//!
//! A task sets only UNASSIGNED, RUNNING and FAILED. PAUSED, STOPPED and
//! RESTARTING are the registry's: they say what the operator asked for (the
//! connector's target state) or that a restart is under way, and the APIs
//! show them in place of what the stopped task last said.

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

/// Kafka Connect's connector and task states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for a dependency (Kafka, the SFTP server, Postgres).
    Unassigned,
    Running,
    /// The last attempt failed. Unless the task halted (stopped for good),
    /// it retries with backoff and returns to RUNNING when it succeeds;
    /// `last_error` says why either way.
    Failed,
    /// Paused by the operator (`PUT /connectors/{name}/pause`): the task is
    /// stopped, its config and counters kept; `resume` starts it again.
    Paused,
    /// Stopped by the operator (`PUT /connectors/{name}/stop`): no task runs;
    /// the connector's offsets may be changed.
    Stopped,
    /// Being stopped to be started again (a restart request).
    Restarting,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unassigned => "UNASSIGNED",
            State::Running => "RUNNING",
            State::Failed => "FAILED",
            State::Paused => "PAUSED",
            State::Stopped => "STOPPED",
            State::Restarting => "RESTARTING",
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
    /// Bytes read (source: file sizes sent) or written (sink: record values).
    pub(crate) bytes: AtomicU64,
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
            bytes: AtomicU64::new(0),
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
    pub bytes: u64,
    pub lag: u64,
    /// Records are waiting and nothing moved for [`STALL_AFTER`].
    pub stalled: bool,
    pub last_error: String,
    /// The task stopped for good: it will not retry until restarted.
    pub halted: bool,
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
            bytes: self.bytes.load(Ordering::Relaxed),
            lag: self.lag.load(Ordering::Relaxed),
            stalled: self.stalled(),
            last_error: self
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
            halted: self.halted.load(Ordering::Relaxed),
        }
    }

    /// The task ended without being asked to stop (it returned or panicked):
    /// FAILED for good, keeping the error it reported if it reported one.
    pub(crate) fn ended(&self, why: impl Into<String>) {
        let reported = self.snapshot();
        if reported.state == State::Failed && !reported.last_error.is_empty() {
            self.halted.store(true, Ordering::Relaxed);
        } else {
            self.halt(why);
        }
    }

    /// Ready for a new run of the task (resume, restart): UNASSIGNED, no error,
    /// not halted. The counters keep counting across runs.
    pub(crate) fn restart(&self) {
        self.halted.store(false, Ordering::Relaxed);
        self.waiting(String::new());
        self.progress();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_that_ends_on_its_own_is_failed_for_good() {
        let s = Status::default();
        s.set_state(State::Running);
        s.ended("task ended without being stopped");
        let snap = s.snapshot();
        assert_eq!((snap.state, snap.halted), (State::Failed, true));
        assert_eq!(snap.last_error, "task ended without being stopped");

        // An error the task reported before it returned is kept.
        let s = Status::default();
        s.fail("cannot create Kafka consumer");
        s.ended("task ended without being stopped");
        assert_eq!(s.snapshot().last_error, "cannot create Kafka consumer");
        assert!(s.snapshot().halted);

        s.restart();
        let snap = s.snapshot();
        assert_eq!((snap.state, snap.halted), (State::Unassigned, false));
        assert!(snap.last_error.is_empty());
    }
}
