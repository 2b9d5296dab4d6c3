//! The one retry/backoff helper of the workspace. Dependencies (Kafka,
//! Postgres, SFTP, peers) may start after us or restart under us; every service
//! waits for them with this, reporting NOT_SERVING meanwhile, instead of
//! failing at start.
//!
//! Two shapes of waiting, one backoff:
//! - [`retry`]: wait for a dependency until it answers or the service stops
//!   (a service has nothing better to do than wait for its database).
//! - [`Retry`]: one operation retried until a deadline (the extractor's upload
//!   of one file: a user waits for the run, so it must end with an error).
//!
//! Every delay carries jitter: when a server restarts, every client fails at
//! the same instant; without jitter they would all come back at the same
//! instants too, and hit the restarting server in bursts.

use std::{
    fmt::Display,
    future::Future,
    time::{Duration, Instant},
};

use crate::Shutdown;

/// Exponential backoff with a cap and jitter: about 100 ms, 200 ms, … up to
/// `max`, each delay drawn between half and all of its nominal value.
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    /// The delay to wait now (with jitter); the nominal delay of the following
    /// one doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        jitter(d)
    }

    pub fn reset(&mut self, first: Duration) {
        self.next = first;
    }
}

/// "Equal jitter": half the delay fixed, half random, so retries spread out
/// but still back off.
fn jitter(delay: Duration) -> Duration {
    let half = (delay.as_millis() / 2) as u64;
    Duration::from_millis(half + rand::random_range(0..=half))
}

/// Calls `op` until it succeeds, waiting with [`Backoff`] between attempts and
/// logging each failure as `waiting for {what}`. Returns `None` only when
/// `shutdown` trips first.
pub async fn retry<T, E, F, Fut>(what: &str, shutdown: &Shutdown, mut op: F) -> Option<T>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::default();
    let mut attempt = 0u32;
    loop {
        if shutdown.is_triggered() {
            return None;
        }
        match op().await {
            Ok(v) => {
                if attempt > 0 {
                    tracing::info!(dependency = what, attempts = attempt + 1, "connected");
                }
                return Some(v);
            }
            Err(e) => {
                attempt += 1;
                let delay = backoff.next_delay();
                // Loud once, then quiet: a dependency that is still starting is normal.
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(dependency = what, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "waiting for dependency");
                } else {
                    tracing::debug!(dependency = what, attempt, error = %e, "waiting for dependency");
                }
                if !shutdown.sleep(delay).await {
                    return None;
                }
            }
        }
    }
}

/// The retry state of one operation that must end by a deadline.
///
/// Why a deadline rather than an attempt count: what the caller can reason
/// about is time ("a restart of the gateway under a supervisor takes seconds;
/// give up after two minutes"), and attempts of very different lengths (a
/// refused connection, a 20 s login timeout) make counts meaningless.
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    started: Instant,
    deadline: Instant,
    /// Attempts made so far (the first one included).
    pub attempts: u32,
}

impl Retry {
    /// First pause after a failure; the following ones double up to [`Retry::MAX_DELAY`].
    pub const FIRST_DELAY: Duration = Duration::from_millis(100);
    pub const MAX_DELAY: Duration = Duration::from_secs(3);

    /// Starts counting now; retries stop once `limit` has passed.
    pub fn new(limit: Duration) -> Self {
        let started = Instant::now();
        Self {
            backoff: Backoff::new(Self::FIRST_DELAY, Self::MAX_DELAY),
            started,
            deadline: started + limit,
            attempts: 1,
        }
    }

    /// Time left before the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// After a failure that may pass: the pause before the next attempt
    /// (backoff with jitter), or `None` when the deadline would pass during it.
    pub fn next_pause(&mut self) -> Option<Duration> {
        let delay = self.backoff.next_delay();
        (delay < self.remaining()).then_some(delay)
    }

    /// Waits `pause` (from [`Retry::next_pause`]) before the next attempt;
    /// `false` when `stop` trips first.
    pub async fn wait(&mut self, pause: Duration, stop: &Shutdown) -> bool {
        if stop.is_triggered() || !stop.sleep(pause).await {
            return false;
        }
        self.attempts += 1;
        true
    }
}

/// gRPC codes of failures that may pass: the peer is (re)starting, overloaded,
/// or the connection broke mid-call (`Unknown`/`Cancelled` are what tonic
/// reports for a stream cut by a dying server).
pub fn is_transient(code: tonic::Code) -> bool {
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
    fn backoff_doubles_up_to_cap_with_jitter() {
        for _ in 0..50 {
            let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
            let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis() as u64).collect();
            for (d, nominal) in got.iter().zip([100u64, 200, 350, 350]) {
                assert!(*d >= nominal / 2 && *d <= nominal, "{got:?}");
            }
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            seen.insert(jitter(Duration::from_secs(1)).as_millis());
        }
        assert!(seen.len() > 10, "50 draws gave only {seen:?}");
    }

    #[tokio::test]
    async fn retry_returns_after_failures() {
        let shutdown = Shutdown::new();
        let mut n = 0;
        let v = retry("test", &shutdown, || {
            n += 1;
            let ok = n >= 3;
            async move {
                if ok {
                    Ok::<_, String>(n)
                } else {
                    Err("not yet".to_string())
                }
            }
        })
        .await;
        assert_eq!(v, Some(3));
    }

    #[tokio::test]
    async fn retry_stops_on_shutdown() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        let v = retry("never", &shutdown, || async { Err::<(), _>("down") }).await;
        assert_eq!(v, None);
    }

    #[tokio::test]
    async fn pauses_end_at_the_deadline() {
        let stop = Shutdown::new();
        let mut retry = Retry::new(Duration::from_millis(400));
        let mut pauses = 0;
        while let Some(pause) = retry.next_pause() {
            assert!(retry.wait(pause, &stop).await, "not stopped");
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
        assert!(!retry.wait(pause, &stop).await);
    }

    #[test]
    fn only_passing_failures_are_transient() {
        assert!(is_transient(tonic::Code::Unavailable));
        assert!(!is_transient(tonic::Code::InvalidArgument));
        assert!(!is_transient(tonic::Code::AlreadyExists));
        assert!(!is_transient(tonic::Code::Unauthenticated));
    }
}
