//! `etlctl up` and `etlctl down`.
//!
//! `up` checks what it can before starting anything (binaries, ports), starts
//! `etlctl supervise` detached — its own process group, output in
//! `<dir>/logs/supervisor.log` — and polls `stack.json` and the health checks until
//! every component is healthy, the supervisor dies (its log tail is shown) or the
//! timeout passes. It writes nothing itself: the supervisor owns `<dir>`.
//!
//! connect-manager's workers (`--workers`): a running stack is taken as it is unless a
//! different number is asked for, which is refused (the cluster's shape is fixed while
//! it runs). A stack started in the other mode than the one before in the same directory
//! says what that means for the connectors: standalone keeps them in
//! `<dir>/connect/connectors.json`, which distributed workers do not read (they keep
//! theirs in Kafka), and the other way round; `etlctl connectors apply` (and every demo)
//! creates them again from the connector files.
//!
//! `down` sends SIGTERM to the supervisor named by `supervisor.pid` and waits for it;
//! the supervisor stops everything in order. If it does not finish in time, its
//! process group (the services) is killed; Postgres and the broker are then stopped by
//! their etl-stack watchdogs.

use std::fs::OpenOptions;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use std::os::unix::process::CommandExt as _;

use crate::cli::{DownArgs, supervise_args};
use crate::process;
use crate::stack::{KafkaStorage, StackDir, StackInfo, StackPlan};
use crate::status::{self, Component};

/// Makes sure the stack of `plan.dir` is up and healthy; starts it if it is not.
/// `workers` is `--workers` as given (`None`: not asked for): a running stack with
/// another number of connect-manager workers is refused rather than used.
/// Returns the stack's `stack.json`.
pub async fn ensure_up(
    plan: &StackPlan,
    timeout: Duration,
    allow_missing: bool,
    workers: Option<u16>,
) -> anyhow::Result<StackInfo> {
    let dir = &plan.dir;
    if let Some((pid, running)) = status::running_stack(dir)? {
        if let (Some(asked), Some(running)) = (workers, &running) {
            check_workers(dir, running, asked)?;
        }
        let (info, components) =
            wait_healthy(dir, Supervisor::Running(pid), timeout, allow_missing, false).await?;
        println!(
            "stack already up in {} (supervisor pid {pid}):",
            dir.root().display()
        );
        print!("{}", status::render(&components));
        return Ok(info);
    }
    // Left by a supervisor that was killed: nothing runs for them.
    dir.remove_runtime_files();

    let missing = if plan.with_services {
        plan.missing_binaries()
    } else {
        Vec::new()
    };
    if !missing.is_empty() && !allow_missing {
        let names: Vec<_> = missing.iter().map(|s| s.name()).collect();
        anyhow::bail!(
            "service binaries missing in {}: {}\n  build them with `cargo build --bins` (or \
             --release and run target/release/etlctl), point --bin-dir/ETL_BIN_DIR at them, \
             start without them (--allow-missing-services), or start only Postgres and tansu \
             (--without-services)",
            plan.bin_dir.display(),
            names.join(", ")
        );
    }
    check_ports(plan)?;
    // Read before the supervisor writes this stack's.
    let last_workers = dir.last_connect_workers();

    std::fs::create_dir_all(dir.logs())
        .with_context(|| format!("cannot create {}", dir.logs().display()))?;
    let log_path = dir.supervisor_log();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the etlctl executable")?;
    let child = Command::new(&exe)
        .args(supervise_args(plan))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C in this terminal, or this process ending, must
        // not reach the stack.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {} supervise", exe.display()))?;
    println!(
        "starting the stack in {} (supervisor pid {}, log {})",
        dir.root().display(),
        child.id(),
        log_path.display()
    );
    let (info, components) =
        wait_healthy(dir, Supervisor::Child(child), timeout, allow_missing, true).await?;
    println!("stack up in {}:", dir.root().display());
    print!("{}", status::render(&components));
    if plan.with_services
        && let Some(note) = mode_change_note(plan, last_workers)
    {
        println!("{note}");
    }
    Ok(info)
}

/// Refuses `--workers asked` for a stack that runs with another number of workers.
fn check_workers(dir: &StackDir, running: &StackInfo, asked: u16) -> anyhow::Result<()> {
    let has = running.connect.workers;
    if has == asked {
        return Ok(());
    }
    let shape = |n: u16| {
        if n > 1 {
            format!("{n} connect-manager workers (distributed)")
        } else {
            "1 connect-manager (standalone)".to_owned()
        }
    };
    anyhow::bail!(
        "the stack in {} runs {}, not {}: stop it first (`etlctl down --dir {}`), then \
         `etlctl up --workers {asked}`; or leave --workers (ETL_WORKERS) out to use it as it is",
        dir.root().display(),
        shape(has),
        shape(asked),
        dir.root().display()
    )
}

/// What a change of connect-manager's mode since the last stack in the same directory
/// (`last`: its workers, if known) means for the connectors: they do not carry over.
pub fn mode_change_note(plan: &StackPlan, last: Option<u16>) -> Option<String> {
    let last = last?;
    if (last > 1) == plan.distributed() {
        return None;
    }
    let apply = "`etlctl connectors apply` (or a demo) creates them from the connector files";
    let standalone = plan.dir.standalone_connectors_file();
    Some(if plan.distributed() {
        format!(
            "note: connect-manager runs distributed now ({} workers): its connectors live in \
             Kafka (topic connect-configs), and those of the standalone connect-manager before \
             ({}) are not among them; {apply}",
            plan.connect_workers,
            standalone.display()
        )
    } else {
        let kept = match plan.kafka_storage {
            KafkaStorage::Memory => "gone with the memory broker",
            KafkaStorage::Kafka | KafkaStorage::Sqlite => {
                "still in the broker's topic connect-configs, for the next `--workers` stack"
            }
        };
        format!(
            "note: connect-manager runs standalone now: it keeps its connectors in {}, not \
             those of the {last} distributed workers before ({kept}); {apply}",
            standalone.display()
        )
    })
}

/// Ports the stack will listen on that something already accepts connections on.
fn check_ports(plan: &StackPlan) -> anyhow::Result<()> {
    let busy: Vec<String> = plan
        .listen_ports()
        .into_iter()
        .filter(|(_, port, _)| {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .map(|(what, port, flag)| format!("{what}: port {port} is busy (pick another with {flag})"))
        .collect();
    if busy.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "cannot start the stack in {}:\n  {}\n  (is another stack running? `etlctl status --dir DIR`)",
            plan.dir.root().display(),
            busy.join("\n  ")
        )
    }
}

enum Supervisor {
    /// We just started it: its exit status tells why it stopped.
    Child(Child),
    /// Started earlier by someone else.
    Running(u32),
}

impl Supervisor {
    fn exited(&mut self) -> Option<String> {
        match self {
            Supervisor::Child(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            },
            Supervisor::Running(pid) => (!process::is_alive(*pid)).then(|| "gone".to_owned()),
        }
    }
}

async fn wait_healthy(
    dir: &StackDir,
    mut supervisor: Supervisor,
    timeout: Duration,
    accept_missing: bool,
    announce: bool,
) -> anyhow::Result<(StackInfo, Vec<Component>)> {
    let deadline = Instant::now() + timeout;
    let mut announced: Vec<String> = Vec::new();
    let mut last: Vec<Component> = Vec::new();
    loop {
        if let Some(status) = supervisor.exited() {
            anyhow::bail!(
                "the stack supervisor exited ({status}) before the stack was up; the end of {}:\n{}\nevery log is in {}",
                dir.supervisor_log().display(),
                etl_stack::logs::log_tail(&dir.supervisor_log(), 20),
                dir.logs().display()
            );
        }
        if let Some(info) = dir.read_stack()? {
            last = status::check(&info).await;
            for c in &last {
                if announce && c.ready(accept_missing) && !announced.contains(&c.name) {
                    println!("  {:<16} {}", c.name, c.health.as_str());
                    announced.push(c.name.clone());
                }
            }
            if last.iter().all(|c| c.ready(accept_missing)) {
                return Ok((info, last));
            }
        }
        if Instant::now() >= deadline {
            let waiting: Vec<String> = if last.is_empty() {
                vec![format!(
                    "postgres and tansu are still starting (no {} yet)",
                    dir.stack_json().display()
                )]
            } else {
                last.iter()
                    .filter(|c| !c.ready(accept_missing))
                    .map(|c| {
                        format!(
                            "{}: {} (log {})",
                            c.name,
                            c.health.as_str(),
                            c.log.display()
                        )
                    })
                    .collect()
            };
            anyhow::bail!(
                "the stack in {} was not healthy within {}s:\n  {}\nit is left running so you can \
                 look: logs in {} (supervisor.log first), `etlctl status`, and `etlctl down` to stop it",
                dir.root().display(),
                timeout.as_secs(),
                waiting.join("\n  "),
                dir.logs().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `etlctl down`.
pub async fn down(args: &DownArgs) -> anyhow::Result<()> {
    let dir = args.dir.stack_dir()?;
    let Some(pid) = dir.read_pid() else {
        dir.remove_runtime_files();
        println!("no stack running in {}", dir.root().display());
        return Ok(());
    };
    if !process::is_supervisor(pid) {
        dir.remove_runtime_files();
        println!(
            "no stack running in {} (removed the stale pid file of pid {pid})",
            dir.root().display()
        );
        return Ok(());
    }
    let info = dir.read_stack().ok().flatten();
    println!(
        "stopping the stack in {} (supervisor pid {pid})",
        dir.root().display()
    );
    process::terminate(pid).with_context(|| format!("cannot signal the supervisor {pid}"))?;
    let timeout = Duration::from_secs(args.timeout);
    if !wait_gone(pid, timeout).await {
        // The services share the supervisor's process group; Postgres and tansu have
        // watchdogs that stop them once the supervisor is gone.
        let _ = process::kill_group(pid);
        let _ = process::kill(pid);
        wait_gone(pid, Duration::from_secs(5)).await;
        dir.remove_runtime_files();
        anyhow::bail!(
            "the supervisor did not stop within {}s: killed it and its services (Postgres and \
             tansu are stopped by their watchdogs); see {}",
            timeout.as_secs(),
            dir.supervisor_log().display()
        );
    }
    println!("stopped: {}", stopped_list(info.as_ref()).join(", "));
    Ok(())
}

fn stopped_list(info: Option<&StackInfo>) -> Vec<String> {
    let Some(info) = info else {
        return vec!["supervisor".to_owned()];
    };
    let mut stopped: Vec<String> = info
        .services
        .iter()
        .filter(|s| s.pid.is_some())
        .map(crate::stack::ServiceInfo::display_name)
        .collect();
    let broker = match info.kafka.storage {
        crate::stack::KafkaStorage::Kafka => "kafka",
        crate::stack::KafkaStorage::Memory | crate::stack::KafkaStorage::Sqlite => "tansu",
    };
    stopped.push(format!("{broker} ({})", info.kafka.bootstrap));
    stopped.push(format!("postgres (127.0.0.1:{})", info.postgres.port));
    stopped.push(format!("supervisor (pid {})", info.supervisor_pid));
    stopped
}

async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process::is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::plan::test_plan;

    #[test]
    fn a_running_stack_with_other_workers_is_refused_by_name() {
        let plan = test_plan("/x");
        let running = plan.stack_info(1, 2);
        assert!(check_workers(&plan.dir, &running, 1).is_ok());
        let err = check_workers(&plan.dir, &running, 3).expect_err("1 running, 3 asked");
        let message = format!("{err:#}");
        for needle in [
            "1 connect-manager (standalone)",
            "3 connect-manager workers (distributed)",
            "etlctl down --dir /x",
        ] {
            assert!(message.contains(needle), "{needle} not in {message}");
        }
    }

    #[test]
    fn a_change_of_mode_says_the_connectors_stay_behind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut plan = test_plan(tmp.path().to_str().expect("utf8"));
        let dir = plan.dir.clone();
        // A new directory: nothing before, nothing to say.
        assert_eq!(dir.last_connect_workers(), None);
        assert_eq!(mode_change_note(&plan, None), None);
        // A directory of an etlctl from before workers: its standalone connectors.
        let standalone = dir.standalone_connectors_file();
        std::fs::create_dir_all(standalone.parent().expect("dir")).expect("mkdir");
        std::fs::write(&standalone, "{}").expect("write");
        assert_eq!(dir.last_connect_workers(), Some(1));
        assert_eq!(mode_change_note(&plan, Some(1)), None, "standalone again");

        plan.connect_workers = 3;
        let note = mode_change_note(&plan, dir.last_connect_workers()).expect("a change");
        assert!(
            note.contains("distributed now (3 workers)") && note.contains("connectors.json"),
            "{note}"
        );
        // The supervisor's note wins over the guess; 3 → 2 workers is one cluster.
        dir.write_connect_workers(3).expect("write");
        assert_eq!(dir.last_connect_workers(), Some(3));
        plan.connect_workers = 2;
        assert_eq!(mode_change_note(&plan, Some(3)), None);

        plan.connect_workers = 1;
        let note = mode_change_note(&plan, Some(3)).expect("a change");
        assert!(
            note.contains("standalone now") && note.contains("gone with the memory broker"),
            "{note}"
        );
    }
}
