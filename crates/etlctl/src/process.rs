//! Other processes, by pid: is it alive, is it our supervisor, signal it. Only `/proc`
//! and rustix's safe `kill(2)` wrappers (the workspace forbids unsafe code).

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

fn pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().and_then(Pid::from_raw)
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `Z`…), `None` if there is no such
/// process.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the
    // last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `pid` runs. A zombie counts as dead: it has exited, and whoever reaps it
/// (init, in a container possibly nobody) is not our business.
pub fn is_alive(pid: u32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// Whether `pid` is an `etlctl supervise` process, so a stale pid file whose pid was
/// reused by something else is never signalled.
pub fn is_supervisor(pid: u32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    let exe_is_etlctl = args
        .next()
        .map(|a| String::from_utf8_lossy(a).ends_with("etlctl"))
        .unwrap_or(false);
    exe_is_etlctl && args.any(|a| a == b"supervise") && is_alive(pid)
}

pub fn terminate(target: u32) -> std::io::Result<()> {
    signal(target, Signal::TERM)
}

pub fn kill(target: u32) -> std::io::Result<()> {
    signal(target, Signal::KILL)
}

fn signal(target: u32, signal: Signal) -> std::io::Result<()> {
    let pid = pid(target).ok_or_else(|| std::io::Error::other(format!("bad pid {target}")))?;
    kill_process(pid, signal).map_err(std::io::Error::from)
}

/// SIGKILL to every process of group `pgid`.
pub fn kill_group(pgid: u32) -> std::io::Result<()> {
    let pid = pid(pgid).ok_or_else(|| std::io::Error::other(format!("bad pgid {pgid}")))?;
    kill_process_group(pid, Signal::KILL).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_itself_alive_and_not_a_supervisor() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(!is_supervisor(me));
        assert!(!is_alive(u32::MAX));
    }
}
