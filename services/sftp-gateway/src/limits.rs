//! What one client, one address or everyone together may take of the server
//! before logging in: connection counts (OpenSSH's `MaxStartups`, a total
//! and a per-address cap) and the penalties of failed logins (OpenSSH's
//! `PerSourcePenalties`). Checked at `accept`, before any SSH work is done,
//! so a flood costs the gateway a `close` per connection.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::Config;

/// Addresses remembered at most; the oldest penalties go first beyond this.
const MAX_PENALIZED: usize = 65_536;

/// Counts of open connections, shared by the accept loop and the sessions.
pub(crate) struct Gate {
    max_total: usize,
    max_per_addr: usize,
    max_startups: usize,
    state: Mutex<Counts>,
    penalties: Penalties,
}

#[derive(Default)]
struct Counts {
    total: usize,
    startups: usize,
    per_addr: HashMap<IpAddr, usize>,
}

/// Why a connection was refused at `accept`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Total(usize),
    PerAddress(usize),
    Startups(usize),
    Penalized(Duration),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Total(n) => write!(f, "{n} connections open (--max-connections)"),
            Self::PerAddress(n) => write!(
                f,
                "{n} connections open from this address (--max-connections-per-addr)"
            ),
            Self::Startups(n) => write!(f, "{n} connections not yet logged in (--max-startups)"),
            Self::Penalized(left) => write!(
                f,
                "address blocked after failed logins for {} s more",
                left.as_secs().max(1)
            ),
        }
    }
}

impl Gate {
    pub(crate) fn new(config: &Config) -> Arc<Self> {
        Arc::new(Self {
            max_total: config.max_connections,
            max_per_addr: config.max_connections_per_addr,
            max_startups: config.max_startups,
            state: Mutex::new(Counts::default()),
            penalties: Penalties {
                penalty: config.auth_penalty,
                min: config.auth_penalty_min,
                max: config.auth_penalty_max,
                exempt: config.auth_penalty_exempt.clone(),
                until: Mutex::new(HashMap::new()),
            },
        })
    }

    /// A slot for a new connection from `addr`, or why not.
    pub(crate) fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Slot, Refusal> {
        if let Some(left) = self.penalties.blocked(addr) {
            return Err(Refusal::Penalized(left));
        }
        let mut counts = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= self.max_total {
            return Err(Refusal::Total(counts.total));
        }
        let from_addr = counts.per_addr.get(&addr).copied().unwrap_or(0);
        if from_addr >= self.max_per_addr {
            return Err(Refusal::PerAddress(from_addr));
        }
        if counts.startups >= self.max_startups {
            return Err(Refusal::Startups(counts.startups));
        }
        counts.total += 1;
        counts.startups += 1;
        *counts.per_addr.entry(addr).or_default() += 1;
        Ok(Slot {
            gate: self.clone(),
            addr,
            starting: true,
        })
    }

    pub(crate) fn penalties(&self) -> &Penalties {
        &self.penalties
    }
}

/// One admitted connection; dropping it frees its place.
pub(crate) struct Slot {
    gate: Arc<Gate>,
    addr: IpAddr,
    starting: bool,
}

impl Slot {
    /// The connection logged in: it no longer counts as a start-up.
    pub(crate) fn logged_in(&mut self) {
        if std::mem::take(&mut self.starting) {
            let mut counts = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
            counts.startups = counts.startups.saturating_sub(1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.gate.state.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if self.starting {
            counts.startups = counts.startups.saturating_sub(1);
        }
        if let Some(n) = counts.per_addr.get_mut(&self.addr) {
            *n -= 1;
            if *n == 0 {
                counts.per_addr.remove(&self.addr);
            }
        }
    }
}

/// Failed logins per source address. Each failure adds `penalty` to the
/// address's account, which runs down in real time; while more than `min`
/// is left the address may neither connect nor log in. Capped at `max`.
pub(crate) struct Penalties {
    penalty: Duration,
    min: Duration,
    max: Duration,
    exempt: Vec<IpAddr>,
    until: Mutex<HashMap<IpAddr, Instant>>,
}

impl Penalties {
    /// Records a failed login from `addr`; returns the time it is now blocked
    /// for, if the failure tipped it over `min`.
    pub(crate) fn failed(&self, addr: IpAddr) -> Option<Duration> {
        if self.penalty.is_zero() || self.exempt.contains(&addr) {
            return None;
        }
        let now = Instant::now();
        let mut until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        if until.len() >= MAX_PENALIZED {
            until.retain(|_, t| *t > now);
            if until.len() >= MAX_PENALIZED
                && let Some(oldest) = until.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a)
            {
                until.remove(&oldest);
            }
        }
        let entry = until.entry(addr).or_insert(now);
        let was_blocked = entry.saturating_duration_since(now) > self.min;
        *entry = (*entry).max(now) + self.penalty;
        if entry.saturating_duration_since(now) > self.max {
            *entry = now + self.max;
        }
        let left = entry.saturating_duration_since(now);
        (left > self.min && !was_blocked).then_some(left)
    }

    /// How long `addr` is still blocked, if it is.
    pub(crate) fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let until = self.until.lock().unwrap_or_else(|p| p.into_inner());
        let left = until.get(&addr)?.saturating_duration_since(now);
        (left > self.min).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(f: impl FnOnce(&mut Config)) -> Arc<Gate> {
        let mut config = Config::default();
        f(&mut config);
        Gate::new(&config)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn caps_startups_totals_and_addresses() {
        let g = gate(|c| {
            c.max_startups = 2;
            c.max_connections = 3;
            c.max_connections_per_addr = 2;
        });
        let mut a1 = g.admit(A).expect("a1");
        let _a2 = g.admit(B).expect("a2");
        assert_eq!(g.admit(B).err(), Some(Refusal::Startups(2)));
        a1.logged_in();
        let _a3 = g.admit(A).expect("a3 once a1 logged in");
        assert_eq!(g.admit(A).err(), Some(Refusal::Total(3)));
        drop(a1);
        assert_eq!(g.admit(A).err(), Some(Refusal::Startups(2)));
    }

    #[test]
    fn per_address_cap() {
        let g = gate(|c| c.max_connections_per_addr = 1);
        let a = g.admit(A).expect("a");
        assert_eq!(g.admit(A).err(), Some(Refusal::PerAddress(1)));
        let _b = g.admit(B).expect("b is another address");
        drop(a);
        assert!(g.admit(A).is_ok());
    }

    #[test]
    fn failures_block_an_address_once_over_the_minimum() {
        let g = gate(|c| {
            c.auth_penalty = Duration::from_secs(5);
            c.auth_penalty_min = Duration::from_secs(12);
            c.auth_penalty_max = Duration::from_secs(60);
            c.auth_penalty_exempt = vec![B];
        });
        let p = g.penalties();
        assert_eq!(p.failed(A), None);
        assert_eq!(p.failed(A), None);
        assert!(p.blocked(A).is_none(), "10 s is below the minimum");
        assert!(p.failed(A).is_some(), "15 s: blocked now");
        assert!(matches!(g.admit(A).err(), Some(Refusal::Penalized(_))));
        for _ in 0..100 {
            p.failed(A);
        }
        assert!(p.blocked(A).is_some_and(|d| d <= Duration::from_secs(60)));
        for _ in 0..10 {
            assert_eq!(p.failed(B), None);
        }
        assert!(g.admit(B).is_ok(), "exempt");
    }
}
