//! `etlctl up` and `etlctl down`.
//!
//! `up` checks what it can before starting anything (binaries, ports), starts
//! `etlctl supervise` detached — its own process group, output in
//! `<dir>/logs/supervisor.log` — and polls `stack.json` and the health checks until
//! every component is healthy, the supervisor dies (its log tail is shown) or the
//! timeout passes. It writes nothing itself: the supervisor owns `<dir>`.
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
use crate::stack::{StackDir, StackInfo, StackPlan};
use crate::status::{self, Component};

/// Makes sure the stack of `plan.dir` is up and healthy; starts it if it is not.
/// Returns the stack's `stack.json`.
pub async fn ensure_up(
    plan: &StackPlan,
    timeout: Duration,
    allow_missing: bool,
) -> anyhow::Result<StackInfo> {
    let dir = &plan.dir;
    if let Some((pid, _)) = status::running_stack(dir)? {
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
    Ok(info)
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
        .map(|s| s.name.to_string())
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
