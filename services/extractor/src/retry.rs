//! Bounded retries for the run's network calls: exponential backoff (the
//! shared [`etl_service::Backoff`]) with jitter, until a deadline.
//!
//! Why jitter: when the SFTP server or the verifier restarts, every upload in
//! flight fails at the same instant; without jitter they would all come back
//! at the same instants too, and hit the restarting server in bursts.
//!
//! Why a deadline rather than an attempt count: what the caller can reason
//! about is time ("a restart of the gateway under a supervisor takes seconds;
//! give up after two minutes"), and attempts of very different lengths (a
//! refused connection, a 20 s login timeout) make counts meaningless.
//!
//! `etl_service::retry` is not used: it waits for a dependency forever (until
//! shutdown) and cannot tell a refused login from a refused connection.

use std::time::{Duration, Instant};

use etl_service::{Backoff, Shutdown};

use crate::Error;

/// First pause after a failure; the following ones double up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(3);

/// The retry state of one operation (one chunk file, one call).
#[derive(Debug)]
pub(crate) struct Retry {
    backoff: Backoff,
    started: Instant,
    deadline: Instant,
    /// Attempts made so far (the first one included).
    pub(crate) attempts: u32,
}

impl Retry {
    /// Starts counting now; retries stop once `limit` has passed.
    pub(crate) fn new(limit: Duration) -> Self {
        let started = Instant::now();
        Self {
            backoff: Backoff::new(FIRST_DELAY, MAX_DELAY),
            started,
            deadline: started + limit,
            attempts: 1,
        }
    }

    /// Time left before the deadline (zero once it passed).
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// After a failure that may pass: the pause before the next attempt
    /// (backoff with jitter), or `None` when the deadline would pass during it.
    pub(crate) fn next_pause(&mut self) -> Option<Duration> {
        let delay = jitter(self.backoff.next_delay());
        (delay < self.remaining()).then_some(delay)
    }

    /// Waits `pause` (from [`Retry::next_pause`]) before the next attempt;
    /// [`Error::Cancelled`] when `stop` trips first.
    pub(crate) async fn wait(&mut self, pause: Duration, stop: &Shutdown) -> Result<(), Error> {
        if stop.is_triggered() || !stop.sleep(pause).await {
            return Err(Error::Cancelled);
        }
        self.attempts += 1;
        Ok(())
    }
}

/// "Equal jitter": half the delay fixed, half random, so retries spread out
/// but still back off.
fn jitter(delay: Duration) -> Duration {
    let half = (delay.as_millis() / 2) as u64;
    Duration::from_millis(half + rand::random_range(0..=half))
}

/// gRPC codes of failures that may pass: the peer is (re)starting, overloaded,
/// or the connection broke mid-call (`Unknown`/`Cancelled` are what tonic
/// reports for a stream cut by a dying server).
pub(crate) fn is_transient(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(
        code,
        C::Unavailable
            | C::DeadlineExceeded
            | C::ResourceExhausted
            | C::Aborted
            | C::Unknown
            | C::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_full() {
        for ms in [0u64, 1, 100, 3000] {
            for _ in 0..50 {
                let d = jitter(Duration::from_millis(ms)).as_millis() as u64;
                assert!(d >= ms / 2 && d <= ms, "{ms} -> {d}");
            }
        }
    }

    #[tokio::test]
    async fn pauses_end_at_the_deadline() {
        let stop = Shutdown::new();
        let mut retry = Retry::new(Duration::from_millis(400));
        let mut pauses = 0;
        while let Some(pause) = retry.next_pause() {
            retry.wait(pause, &stop).await.expect("not stopped");
            pauses += 1;
            assert!(pauses < 10, "never gave up");
        }
        assert!(
            retry.elapsed() <= Duration::from_millis(500),
            "{:?}",
            retry.elapsed()
        );
        assert_eq!(retry.attempts, pauses + 1);
    }

    #[tokio::test]
    async fn waits_stop_on_shutdown() {
        let stop = Shutdown::new();
        stop.trigger();
        let mut retry = Retry::new(Duration::from_secs(60));
        let pause = retry.next_pause().expect("time left");
        assert!(matches!(
            retry.wait(pause, &stop).await,
            Err(Error::Cancelled)
        ));
    }

    #[test]
    fn only_passing_failures_are_transient() {
        assert!(is_transient(tonic::Code::Unavailable));
        assert!(!is_transient(tonic::Code::InvalidArgument));
        assert!(!is_transient(tonic::Code::AlreadyExists));
        assert!(!is_transient(tonic::Code::Unauthenticated));
    }
}
