//! Ports: finding a free one, checking one is free, waiting for one to accept.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Ports handed out by [`free_port`] in this process. The kernel may hand the same
/// ephemeral port to two `bind(:0)` calls once the first listener is closed; tests that
/// start several servers at once would then race for it.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that nothing listens on right now and that this process has
/// not handed out before.
///
/// The port is free when returned, not reserved: a server started on it a moment later
/// can still lose a race with another process. The temp starters retry with a new port
/// when that happens.
///
/// # Panics
/// When the loopback interface refuses `bind(127.0.0.1:0)` — nothing in a test can work
/// then anyway.
pub fn free_port() -> u16 {
    free_port_run(1)
}

/// `n` consecutive TCP ports on 127.0.0.1 that nothing listens on and that this
/// process has not handed out before (by this or [`free_port`]); all `n` count as
/// handed out from now on. Returns the first. For servers that take a run of ports
/// from one flag (connect-manager workers: `--rest-port`+k): checking the run is
/// free is not enough, since a port handed out for another flag but not bound yet
/// looks free too.
///
/// # Panics
/// As [`free_port`].
pub fn free_port_run(n: u16) -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    loop {
        let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0 to find a free port: {e}"));
        let Some(last) = first.checked_add(n.saturating_sub(1)) else {
            continue;
        };
        let run = first..=last;
        if run.clone().all(|p| {
            !handed_out.contains(&p)
                && (p == first || TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok())
        }) {
            handed_out.extend(run);
            return first;
        }
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_in_use(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Waits until `addr` accepts a TCP connection, polling every 50 ms, for at most `timeout`.
///
/// Async so it can wait for a server running on the caller's own runtime; use
/// [`wait_for_tcp_blocking`] outside async code.
pub async fn wait_for_tcp(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        if let Ok(Ok(_)) = attempt {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::TcpTimeout { addr, timeout });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Blocking twin of [`wait_for_tcp`], for code that runs outside a tokio runtime.
pub fn wait_for_tcp_blocking(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::TcpTimeout { addr, timeout });
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous readiness probe, called outside the runtime"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, a)).is_ok());
        assert!(!port_in_use(b));
    }

    #[test]
    fn a_run_of_ports_meets_no_port_handed_out_and_none_handed_out_later() {
        // Single ports first, as a test stack picks them, then runs.
        let singles: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let runs: Vec<u16> = (0..20).map(|_| free_port_run(4)).collect();
        let mut taken: HashSet<u16> = singles.iter().copied().collect();
        for &first in &runs {
            for p in first..first + 4 {
                assert!(taken.insert(p), "port {p} handed out twice");
            }
        }
        for _ in 0..20 {
            let p = free_port();
            assert!(taken.insert(p), "port {p} of a run handed out again");
        }
    }

    #[test]
    fn waits_for_a_listener() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let addr = listener.local_addr().expect("addr");
        wait_for_tcp_blocking(addr, Duration::from_secs(1)).expect("listener accepts");
        drop(listener);
        let err = wait_for_tcp_blocking(addr, Duration::from_millis(100))
            .expect_err("nothing listens after the drop");
        assert!(matches!(err, Error::TcpTimeout { .. }), "{err}");
    }
}
