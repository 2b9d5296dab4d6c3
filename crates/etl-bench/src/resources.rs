//! What each process of the stack costs, read from the kernel rather than
//! estimated: peak resident memory is `VmHWM` in `/proc/<pid>/status` (the
//! kernel's own high-water mark, so no peak between two samples is missed), CPU
//! is `utime + stime` in `/proc/<pid>/stat` (user and system time, in clock
//! ticks). Pids come from etlctl's `stack.json`.
//!
//! A process's CPU includes its children's, live (`/proc/<pid>/task/*/children`)
//! and reaped (`cutime + cstime`): Postgres does its work in backends, children
//! of the postmaster. The services have no children.
//!
//! CPU per 100k rows is the difference of two samples taken around the burst,
//! scaled to 100,000 landed rows; a process that was restarted in between (a
//! new pid) has no figure rather than a wrong one.

use std::collections::BTreeMap;

use serde::Serialize;

/// One process at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcSample {
    pub pid: u32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Peak resident set size so far (VmHWM), in kB.
    pub peak_rss_kb: u64,
}

/// Every sampled process of a stack, by name (see `StackInfo::processes`).
pub type Snapshot = BTreeMap<String, Option<ProcSample>>;

/// Reads one process; `None` when it is gone or its files do not parse.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let live_children: u64 = children(pid)
        .into_iter()
        .filter_map(|c| std::fs::read_to_string(format!("/proc/{c}/stat")).ok())
        .filter_map(|stat| cpu_ticks(&stat))
        .sum();
    Some(ProcSample {
        pid,
        cpu_ticks: cpu_ticks(&stat)? + reaped_children_ticks(&stat)? + live_children,
        peak_rss_kb: status_kb(&status, "VmHWM:")?,
    })
}

/// The pids of `pid`'s live children, from every thread's `children` file.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Samples every named process.
pub fn snapshot(processes: &BTreeMap<String, Option<u32>>) -> Snapshot {
    processes
        .iter()
        .map(|(name, pid)| (name.clone(), pid.and_then(sample)))
        .collect()
}

/// `utime + stime` from `/proc/<pid>/stat`: fields 14 and 15. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses itself, so
/// fields are counted from the last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': field 3 (state) is the first, so utime (14) is the 12th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `cutime + cstime` (fields 16 and 17): the CPU of children already reaped.
fn reaped_children_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let cutime: u64 = fields.nth(13)?.parse().ok()?;
    let cstime: u64 = fields.next()?.parse().ok()?;
    Some(cutime + cstime)
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in kB.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Seconds per clock tick of `/proc/<pid>/stat` (USER_HZ, normally 100).
fn seconds_per_tick() -> f64 {
    1.0 / rustix::param::clock_ticks_per_second().max(1) as f64
}

/// CPU seconds each process spent between `before` and `after`; `None` for a
/// process that was missing or restarted in between.
pub fn cpu_seconds(before: &Snapshot, after: &Snapshot) -> BTreeMap<String, Option<f64>> {
    let tick = seconds_per_tick();
    after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).copied().flatten();
            let seconds = match (b, a) {
                (Some(b), Some(a)) if a.pid == b.pid => {
                    Some(a.cpu_ticks.saturating_sub(b.cpu_ticks) as f64 * tick)
                }
                _ => None,
            };
            (name.clone(), seconds)
        })
        .collect()
}

/// Total CPU seconds of each process since it started.
pub fn cpu_total(snapshot: &Snapshot) -> BTreeMap<String, Option<f64>> {
    let tick = seconds_per_tick();
    snapshot
        .iter()
        .map(|(name, s)| (name.clone(), s.map(|s| s.cpu_ticks as f64 * tick)))
        .collect()
}

/// Peak RSS of each process in MB (MiB, as `ps` and `top` count).
pub fn peak_rss_mb(snapshot: &Snapshot) -> BTreeMap<String, Option<f64>> {
    snapshot
        .iter()
        .map(|(name, s)| (name.clone(), s.map(|s| s.peak_rss_kb as f64 / 1024.0)))
        .collect()
}

/// What one stack cost, as written to bench.json.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Resources {
    /// `etlctl up` on a directory that already holds the stack's data (the usual
    /// start), until every component is healthy.
    pub up_ms: u64,
    /// The very first `etlctl up` on an empty directory: includes `initdb`
    /// and formatting the broker's storage.
    pub up_cold_ms: u64,
    /// Peak RSS (VmHWM) per service, sampled just before `etlctl down`.
    pub rss_mb: BTreeMap<String, Option<f64>>,
    /// The broker's peak RSS (not a service of ours; a JVM for the durable one).
    pub broker_rss_mb: Option<f64>,
    /// CPU seconds per service during the burst, per 100,000 rows landed.
    pub cpu_s_per_100k_rows: BTreeMap<String, Option<f64>>,
    /// CPU seconds per service from its start to just before `etlctl down`.
    pub cpu_s_total: BTreeMap<String, Option<f64>>,
    /// Restarts the supervisor made during the whole run (0 expected).
    pub restarts: BTreeMap<String, u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as the kernel allows.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 1000000 2000 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert_eq!(reaped_children_ticks(stat), Some(0));
        let reaped = "1 (p) S 1 1 1 0 -1 0 0 0 0 0 10 5 30 7 20 0 1 0 1 1 1 1";
        assert_eq!(
            (cpu_ticks(reaped), reaped_children_ticks(reaped)),
            (Some(15), Some(37))
        );
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_lines_are_read_in_kb() {
        let status = "Name:\tconnect-manager\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(status_kb(status, "VmHWM:"), Some(51234));
        assert_eq!(status_kb(status, "VmSwap:"), None);
    }

    #[test]
    fn our_own_process_can_be_sampled() {
        let me = sample(std::process::id()).expect("sample self");
        assert!(me.peak_rss_kb > 0);
    }

    #[test]
    fn cpu_of_a_restarted_process_is_unknown() {
        let s = |pid, cpu_ticks| {
            Some(ProcSample {
                pid,
                cpu_ticks,
                peak_rss_kb: 1,
            })
        };
        let before: Snapshot = [("a".to_owned(), s(1, 100)), ("b".to_owned(), s(2, 100))]
            .into_iter()
            .collect();
        let after: Snapshot = [("a".to_owned(), s(1, 300)), ("b".to_owned(), s(3, 10))]
            .into_iter()
            .collect();
        let cpu = cpu_seconds(&before, &after);
        let tick = seconds_per_tick();
        assert_eq!(cpu["a"], Some(200.0 * tick));
        assert_eq!(cpu["b"], None);
    }
}
