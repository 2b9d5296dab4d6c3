//! The one retry/backoff helper. Dependencies (Kafka, Postgres, SFTP, peers) may
//! start after us or restart under us; every service waits for them with this,
//! reporting NOT_SERVING meanwhile, instead of failing at start.

use std::{fmt::Display, future::Future, time::Duration};

use crate::Shutdown;

/// Exponential backoff with a cap: 100 ms, 200 ms, … up to `max`.
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

    /// The delay to wait now; the following one doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self, first: Duration) {
        self.next = first;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350]);
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
}
