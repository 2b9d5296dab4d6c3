//! `etlctl supervise`: the one process that owns the local stack. `up` starts it in the
//! background; it runs until SIGTERM/SIGINT.
//!
//! Start: `supervisor.pid` first (so `down` can stop a stack that is still starting),
//! then the embedded trace collector (OTLP/gRPC + Jaeger UI, in this process; not with
//! `--no-tracing` or `--otlp-endpoint`), then Postgres (etl-stack, cluster in
//! `<dir>/pg`, database `nlp_db`), the broker (etl-stack: Apache Kafka, or tansu with
//! memory or sqlite), the topic, the gateway's host key (`sftp-gateway host-key`, so the
//! SFTP clients can pin it before the gateway first runs) and the SFTP users' shared
//! tree, `stack.json`, and the four services as child processes (connect-manager as one
//! process per worker with `--workers` > 1, each supervised on its own). Postgres and the broker
//! carry etl-stack's watchdog, so they stop even if the supervisor is killed; the
//! services stay in the supervisor's process group, so `down` can kill that group as a
//! last resort.
//!
//! Run: every component that dies — a service, Postgres, the broker — is restarted
//! with exponential backoff (1 s doubling to 30 s, reset after a minute of uptime);
//! each start and exit is logged here, as a `==== etlctl` line in a service's own log,
//! and in `stack.json` (pid, restarts, last exit), which `etlctl status` shows. One that
//! dies [`MAX_QUICK_DEATHS`] times in a row within a minute of starting is reported as
//! failed and no longer restarted. A missing binary is looked for again with the same
//! backoff (it may be being rebuilt).
//!
//! Stop, in reverse dependency order: services (SIGTERM, 10 s, SIGKILL), the broker,
//! Postgres, the collector — whichever processes run them now, after any number of
//! restarts; then `stack.json` and `supervisor.pid` are removed and we exit 0.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use etl_service::{Backoff, Shutdown};
use etl_stack::{Broker, PgCluster, Storage};
use tokio_util::sync::CancellationToken;

use crate::process;
use crate::stack::{
    DATABASE, Instance, KafkaStorage, Service, ServiceState, StackDir, StackInfo, StackPlan,
    Tracing, env,
};

/// How long a service gets between SIGTERM and SIGKILL.
const SERVICE_STOP_GRACE: Duration = Duration::from_secs(10);
/// A service that ran this long before exiting restarts after the shortest delay again.
const STABLE_UPTIME: Duration = Duration::from_secs(60);
/// A component that dies this many times in a row, each within [`STABLE_UPTIME`] of
/// its start, is given up on.
const MAX_QUICK_DEATHS: u32 = 8;
/// How long `sftp-gateway host-key` may take (it loads or makes one key).
const HOST_KEY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often Postgres and the broker are checked for being alive.
const INFRA_POLL: Duration = Duration::from_millis(250);

/// Runs the stack described by `plan` until a stop signal, then stops it.
pub async fn run(plan: StackPlan) -> anyhow::Result<()> {
    let dir = plan.dir.clone();
    std::fs::create_dir_all(dir.logs())
        .with_context(|| format!("cannot create {}", dir.logs().display()))?;
    let me = std::process::id();
    if let Some(other) = dir.read_pid()
        && other != me
        && process::is_supervisor(other)
    {
        anyhow::bail!(
            "{} is already supervised by pid {other}; `etlctl down --dir {}` first",
            dir.root().display(),
            dir.root().display()
        );
    }
    dir.write_pid(me)
        .with_context(|| format!("cannot write {}", dir.pid_file().display()))?;
    tracing::info!(pid = me, dir = %dir.root().display(), "supervisor starting");

    let shutdown = Shutdown::on_signals();
    ignore_hangup();
    let result = run_stack(Arc::new(plan), &shutdown).await;
    dir.remove_runtime_files();
    match &result {
        Ok(()) => tracing::info!("stack stopped"),
        Err(e) => tracing::error!(error = format!("{e:#}"), "stack failed"),
    }
    result
}

async fn run_stack(plan: Arc<StackPlan>, shutdown: &Shutdown) -> anyhow::Result<()> {
    let dir = &plan.dir;
    let started_at = unix_ms();

    // First, so that busy ports fail before Postgres is started; stopped last (the
    // guard), so the services' final spans still arrive while they stop.
    let stop_collector = CancellationToken::new();
    let _stop_collector_on_return = stop_collector.clone().drop_guard();
    start_collector(&plan, stop_collector).await?;

    let pg = start_postgres(&plan).await?;
    let db_url = pg
        .ensure_database(DATABASE)
        .await
        .with_context(|| format!("cannot create database {DATABASE}"))?;
    tracing::info!(url = %db_url, "postgres ready");
    if shutdown.is_triggered() {
        return stop_infra(None, Some(pg)).await;
    }

    let broker = start_broker(&plan).await?;
    create_topic(&broker, &plan.topic, plan.partitions).await;
    if shutdown.is_triggered() {
        return stop_infra(Some(broker), Some(pg)).await;
    }

    if plan.with_services {
        prepare_sftp(&plan).await?;
        // For the next `up`: whether connect-manager's mode changed (see `up`).
        dir.write_connect_workers(plan.connect_workers)
            .with_context(|| format!("cannot write {}", dir.connect_workers_file().display()))?;
    }

    let mut info = plan.stack_info(std::process::id(), started_at);
    info.sftp_host_key = dir.read_host_key_fingerprint();
    if let Some(log) = pg.log_path() {
        info.postgres.log = log.to_path_buf();
    }
    info.postgres.process.pid = pg.pid();
    if let Some(log) = broker.log_path() {
        info.kafka.log = log.to_path_buf();
    }
    info.kafka.process.pid = broker.pid();
    dir.write_stack(&info)
        .with_context(|| format!("cannot write {}", dir.stack_json().display()))?;
    let state = Arc::new(Mutex::new(info));

    // Postgres and the broker are watched by tasks that own them from here on, and
    // stop them (whichever process runs them by then) when `stop_infra` trips, after
    // the services are gone.
    let stop_infra_token = Shutdown::new();
    let pg_task = tokio::spawn(supervise_infra(
        Infra::Postgres(Some(pg)),
        plan.clone(),
        state.clone(),
        stop_infra_token.clone(),
    ));
    let broker_task = tokio::spawn(supervise_infra(
        Infra::Broker(Some(broker)),
        plan.clone(),
        state.clone(),
        stop_infra_token.clone(),
    ));

    let mut services = tokio::task::JoinSet::new();
    if plan.with_services {
        for instance in plan.instances() {
            services.spawn(supervise_service(
                instance,
                plan.clone(),
                state.clone(),
                shutdown.clone(),
            ));
        }
    }
    tracing::info!(
        stack = %dir.stack_json().display(),
        services = plan.with_services,
        connect_workers = plan.connect_workers,
        "stack started"
    );

    shutdown.wait().await;
    tracing::info!("stopping services");
    while services.join_next().await.is_some() {}
    stop_infra_token.trigger();
    // The broker first (it stops faster with Postgres still there for nobody), then
    // Postgres: the reverse of the start order.
    let broker = broker_task
        .await
        .context("broker supervision task failed")?;
    let pg = pg_task.await.context("postgres supervision task failed")?;
    let broker = match broker {
        Infra::Broker(b) => b,
        Infra::Postgres(_) => None,
    };
    let pg = match pg {
        Infra::Postgres(p) => p,
        Infra::Broker(_) => None,
    };
    stop_infra(broker, pg).await
}

/// Postgres or the broker, owned by its supervision task; `None` while a restart
/// has not succeeded yet.
enum Infra {
    Postgres(Option<PgCluster>),
    Broker(Option<Broker>),
}

impl Infra {
    fn name(&self) -> &'static str {
        match self {
            Infra::Postgres(_) => "postgres",
            Infra::Broker(_) => "kafka",
        }
    }

    fn is_running(&mut self) -> bool {
        match self {
            Infra::Postgres(p) => p.as_mut().is_some_and(PgCluster::is_running),
            Infra::Broker(b) => b.as_mut().is_some_and(Broker::is_running),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Infra::Postgres(p) => p.as_ref().and_then(PgCluster::pid),
            Infra::Broker(b) => b.as_ref().and_then(Broker::pid),
        }
    }

    /// Reaps what is left of the dead server (its process group: a killed
    /// postmaster's backends hold its shared memory) and starts it again on the
    /// same directory and port.
    async fn restart(&mut self, plan: &StackPlan) -> anyhow::Result<()> {
        match self {
            Infra::Postgres(slot) => {
                if let Some(mut old) = slot.take() {
                    tokio::task::spawn_blocking(move || old.stop()).await??;
                }
                *slot = Some(start_postgres(plan).await?);
            }
            Infra::Broker(slot) => {
                if let Some(mut old) = slot.take() {
                    tokio::task::spawn_blocking(move || old.stop()).await??;
                }
                *slot = Some(start_broker(plan).await?);
            }
        }
        Ok(())
    }
}

/// Watches a server until `stop` trips, restarting it with backoff when it dies;
/// returns it (running or not) for the ordered stop.
async fn supervise_infra(
    mut infra: Infra,
    plan: Arc<StackPlan>,
    state: Arc<Mutex<StackInfo>>,
    stop: Shutdown,
) -> Infra {
    let name = infra.name();
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut started = Instant::now();
    let mut quick_deaths = 0u32;
    let record = |change: &dyn Fn(&mut crate::stack::ProcessInfo)| {
        let mut info = state.lock().unwrap_or_else(PoisonError::into_inner);
        if name == "postgres" {
            change(&mut info.postgres.process);
        } else {
            change(&mut info.kafka.process);
        }
        if let Err(e) = plan.dir.write_stack(&info) {
            tracing::warn!(error = %e, "cannot update stack.json");
        }
    };
    loop {
        if !stop.sleep(INFRA_POLL).await {
            return infra;
        }
        if infra.is_running() {
            continue;
        }
        let uptime = started.elapsed();
        if uptime >= STABLE_UPTIME {
            backoff.reset(Duration::from_secs(1));
            quick_deaths = 0;
        }
        quick_deaths += 1;
        let exit = format!("died after {}s", uptime.as_secs());
        record(&|p| {
            p.pid = None;
            p.last_exit = Some(exit.clone());
        });
        if quick_deaths > MAX_QUICK_DEATHS {
            tracing::error!(
                component = name,
                deaths = quick_deaths,
                "{name} keeps dying right after each start; not restarting it any more"
            );
            record(&|p| p.failed = true);
            stop.wait().await;
            return infra;
        }
        let delay = backoff.next_delay();
        tracing::warn!(component = name, %exit, restart_in_ms = delay.as_millis() as u64, "{name} died; restarting");
        if !stop.sleep(delay).await {
            return infra;
        }
        started = Instant::now();
        match infra.restart(&plan).await {
            Ok(()) => {
                let pid = infra.pid();
                tracing::info!(component = name, pid, "{name} restarted");
                record(&|p| {
                    p.pid = pid;
                    p.restarts += 1;
                });
            }
            // Not running: the next poll counts it as another quick death.
            Err(e) => tracing::error!(
                component = name,
                error = format!("{e:#}"),
                "cannot restart {name}"
            ),
        }
    }
}

/// The embedded OTLP collector with the Jaeger UI, when the plan wants it.
async fn start_collector(plan: &StackPlan, stop: CancellationToken) -> anyhow::Result<()> {
    if plan.tracing != Tracing::Embedded {
        match plan.otlp_endpoint() {
            Some(endpoint) => {
                tracing::info!(%endpoint, "services export spans to an external collector")
            }
            None => tracing::info!("tracing off: no collector, no OTEL_* for the services"),
        }
        return Ok(());
    }
    let bind = |port: u16, what: &'static str, flag: &'static str, env: &'static str| async move {
        tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    anyhow::anyhow!(
                        "{what}: port {port} is busy (another Jaeger or OTLP collector?): pick \
                         another with {flag} ({env}), send the spans to the running collector \
                         with --otlp-endpoint (OTEL_EXPORTER_OTLP_ENDPOINT), or start without \
                         tracing (--no-tracing)"
                    )
                } else {
                    anyhow::Error::new(e)
                        .context(format!("{what}: cannot listen on 127.0.0.1:{port}"))
                }
            })
    };
    let otlp = bind(
        plan.ports.otlp,
        "trace collector (OTLP)",
        "--otlp-port",
        "ETL_OTLP_PORT",
    )
    .await?;
    let ui = bind(
        plan.ports.jaeger,
        "Jaeger UI",
        "--jaeger-port",
        "ETL_JAEGER_PORT",
    )
    .await?;
    let collector = etl_telemetry::collector::start(otlp, ui, stop)
        .context("cannot start the trace collector")?;
    tracing::info!(
        otlp = %collector.otlp_addr,
        jaeger = %format!("http://{}", collector.ui_addr),
        "trace collector ready"
    );
    Ok(())
}

/// Before any SFTP client starts: the gateway's host key and its fingerprint (by
/// `sftp-gateway host-key`, which makes the key the gateway will serve if there is none
/// yet), so the clients pin it from their first connection instead of trusting whatever
/// answers first. The one file tree both SFTP users share is their root by name
/// (`ETL_SFTP_ROOTS`), made by the gateway; the links earlier stacks made for it go. A
/// missing gateway binary is left to the service's own supervision (it is looked for
/// again).
async fn prepare_sftp(plan: &StackPlan) -> anyhow::Result<()> {
    for link in plan.dir.remove_old_sftp_root_links().with_context(|| {
        format!(
            "cannot remove the old SFTP root links in {}",
            plan.dir.service_data(Service::SftpGateway).display()
        )
    })? {
        tracing::info!(link = %link.display(), "removed an SFTP root link of an earlier stack (both users now have the root by name)");
    }
    let gateway = plan.binary(Service::SftpGateway);
    if !gateway.is_file() {
        return Ok(());
    }
    let data = plan.dir.service_data(Service::SftpGateway);
    let run = tokio::process::Command::new(&gateway)
        .arg("host-key")
        .env(env::DATA_DIR, &data)
        .env_remove(env::SFTP_HOST_KEY)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(HOST_KEY_TIMEOUT, run)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "{} host-key did not finish within {HOST_KEY_TIMEOUT:?}",
                gateway.display()
            )
        })?
        .with_context(|| format!("cannot run {} host-key", gateway.display()))?;
    if !output.status.success() {
        anyhow::bail!(
            "{} host-key failed ({}): {}",
            gateway.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    tracing::info!(fingerprint = %printed, "sftp-gateway host key");
    Ok(())
}

async fn start_postgres(plan: &StackPlan) -> anyhow::Result<PgCluster> {
    let builder = PgCluster::builder()
        .dir(plan.dir.pg())
        .port(plan.ports.postgres)
        .log_dir(plan.dir.logs());
    let port = plan.ports.postgres;
    tokio::task::spawn_blocking(move || builder.start())
        .await?
        .map_err(|e| match e {
            etl_stack::Error::PortInUse { .. } => anyhow::anyhow!(
                "port {port} is busy (another Postgres?): pick another with --pg-port \
                 (ETL_PG_PORT)"
            ),
            e => anyhow::Error::new(e).context("cannot start postgres"),
        })
}

async fn start_broker(plan: &StackPlan) -> anyhow::Result<Broker> {
    let storage = match plan.kafka_storage {
        KafkaStorage::Kafka => Storage::Kafka(plan.dir.kafka()),
        KafkaStorage::Memory => Storage::Memory,
        KafkaStorage::Sqlite => Storage::Sqlite(plan.dir.tansu()),
    };
    let builder = Broker::builder(storage)
        .port(plan.ports.kafka)
        .log_dir(plan.dir.logs());
    let port = plan.ports.kafka;
    tokio::task::spawn_blocking(move || builder.start())
        .await?
        .map_err(|e| match e {
            etl_stack::Error::PortInUse { .. } => anyhow::anyhow!(
                "port {port} is busy (another Kafka?): pick another with --kafka-port \
                 (ETL_KAFKA_PORT)"
            ),
            e => anyhow::Error::new(e).context("cannot start the Kafka broker"),
        })
}

/// Creates the topic so the first produce does not depend on auto-creation; one left
/// by an earlier run (sqlite storage) is fine, and connect-manager may create it too.
async fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    match broker.create_topic(topic, partitions).await {
        Ok(()) => tracing::info!(topic, partitions, "topic created"),
        Err(e) if e.to_string().to_lowercase().contains("exists") => {
            tracing::info!(topic, "topic exists");
        }
        Err(e) => {
            tracing::warn!(topic, error = %e, "cannot create topic; leaving it to the connectors")
        }
    }
}

async fn stop_infra(broker: Option<Broker>, pg: Option<PgCluster>) -> anyhow::Result<()> {
    if let Some(mut broker) = broker {
        tracing::info!("stopping the broker");
        tokio::task::spawn_blocking(move || broker.stop())
            .await?
            .context("cannot stop the broker")?;
    }
    if let Some(mut pg) = pg {
        tracing::info!("stopping postgres");
        tokio::task::spawn_blocking(move || pg.stop())
            .await?
            .context("cannot stop postgres")?;
    }
    Ok(())
}

/// Keeps one process (a service, or one connect-manager worker) running until
/// shutdown, restarting it when it exits.
async fn supervise_service(
    instance: Instance,
    plan: Arc<StackPlan>,
    state: Arc<Mutex<StackInfo>>,
    shutdown: Shutdown,
) {
    let dir = &plan.dir;
    let service = instance.service;
    // What the log lines call it: `connect-manager-1` for a worker.
    let name = instance.name();
    let log = dir.instance_log(instance);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    let mut reported_missing = false;
    let mut quick_deaths = 0u32;
    let set = |s: ServiceState, pid: Option<u32>, exit: Option<String>| {
        update(&state, dir, instance, |info| {
            info.state = s;
            info.pid = pid;
            if let Some(exit) = exit {
                info.restarts += u32::from(s == ServiceState::Restarting);
                info.last_exit = Some(exit);
            }
        });
    };
    while !shutdown.is_triggered() {
        let binary = plan.binary(service);
        if !binary.is_file() {
            if !reported_missing {
                tracing::error!(service = %name, binary = %binary.display(),
                    "service binary missing; looking again with backoff (build it with `cargo build --bins`)");
                reported_missing = true;
                set(ServiceState::Missing, None, None);
            }
            if !shutdown.sleep(backoff.next_delay()).await {
                break;
            }
            continue;
        }
        reported_missing = false;
        let mut child = match spawn_service(instance, &plan, &log) {
            Ok(child) => child,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(service = %name, error = format!("{e:#}"), retry_in_s = delay.as_secs(), "cannot start service");
                set(ServiceState::Restarting, None, None);
                if !shutdown.sleep(delay).await {
                    break;
                }
                continue;
            }
        };
        let pid = child.id();
        tracing::info!(service = %name, pid, log = %log.display(), "service started");
        set(ServiceState::Running, pid, None);
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                let uptime = started.elapsed();
                if uptime >= STABLE_UPTIME {
                    backoff.reset(Duration::from_secs(1));
                    quick_deaths = 0;
                }
                quick_deaths += 1;
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                let exit = format!("{status} after {}s", uptime.as_secs());
                if quick_deaths > MAX_QUICK_DEATHS {
                    tracing::error!(service = %name, %status, deaths = quick_deaths, log = %log.display(),
                        "service keeps dying right after each start; not restarting it any more");
                    log_line(&log, &format!("exited ({exit}); died {quick_deaths} times in a row, not restarted"));
                    set(ServiceState::Failed, None, Some(exit));
                    shutdown.wait().await;
                    return;
                }
                let delay = backoff.next_delay();
                tracing::warn!(service = %name, %status, uptime_s = uptime.as_secs(),
                    restart_in_ms = delay.as_millis() as u64, log = %log.display(), "service exited; restarting");
                log_line(&log, &format!("exited ({exit}); restarting in {delay:?}"));
                set(ServiceState::Restarting, None, Some(exit));
                if !shutdown.sleep(delay).await {
                    break;
                }
            }
            () = shutdown.wait() => {
                stop_service(&name, &mut child, &log).await;
                break;
            }
        }
    }
    set(ServiceState::Stopped, None, None);
}

fn spawn_service(
    instance: Instance,
    plan: &StackPlan,
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let service = instance.service;
    let data = plan.dir.instance_data(instance);
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let binary = plan.binary(service);
    log_line(log, &format!("starting {}", binary.display()));
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let err = out.try_clone()?;
    // Read at every start: the gateway republishes its key's fingerprint each time.
    let secrets = plan.dir.read_secrets()?;
    if service == Service::Extractor && secrets.sftp_host_key.is_none() {
        tracing::warn!(%service, file = %plan.dir.host_key_fingerprint_file().display(),
            "the gateway's host key fingerprint is not published yet; nothing to pin");
    }
    let mut command = tokio::process::Command::new(&binary);
    for name in plan.service_env_removed(service) {
        command.env_remove(name);
    }
    command
        .envs(plan.instance_env(instance, &secrets))
        .current_dir(plan.dir.root())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // If this task is dropped without stopping the child (a panic), do not leave
        // the service behind.
        .kill_on_drop(true);
    command
        .spawn()
        .with_context(|| format!("cannot run {}", binary.display()))
}

async fn stop_service(service: &str, child: &mut tokio::process::Child, log: &Path) {
    let Some(pid) = child.id() else {
        return;
    };
    if let Err(e) = process::terminate(pid) {
        tracing::warn!(%service, pid, error = %e, "cannot signal service");
    }
    match tokio::time::timeout(SERVICE_STOP_GRACE, child.wait()).await {
        Ok(status) => {
            let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
            tracing::info!(%service, pid, %status, "service stopped");
            log_line(log, &format!("stopped ({status})"));
        }
        Err(_) => {
            tracing::warn!(%service, pid, grace_s = SERVICE_STOP_GRACE.as_secs(),
                "service ignored SIGTERM; killing it");
            let _ = child.kill().await;
            log_line(log, "killed after ignoring SIGTERM");
        }
    }
}

/// Applies `change` to one process's entry and rewrites `stack.json`.
fn update(
    state: &Mutex<StackInfo>,
    dir: &StackDir,
    instance: Instance,
    change: impl FnOnce(&mut crate::stack::ServiceInfo),
) {
    let mut info = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(entry) = info.instance_mut(instance) {
        change(entry);
    }
    if let Err(e) = dir.write_stack(&info) {
        tracing::warn!(error = %e, "cannot update stack.json");
    }
}

/// A `==== etlctl` line in a service's log, so its restarts are visible where its
/// output is.
fn log_line(log: &Path, message: &str) {
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(
            file,
            "==== etlctl (unix time {}): {message}",
            unix_ms() / 1000
        );
    }
}

/// The supervisor runs detached from any terminal; a hang-up of the terminal that ran
/// `up` must not stop the stack (only `down` does).
fn ignore_hangup() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hangup) => {
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("SIGHUP ignored; `etlctl down` stops the stack");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot ignore SIGHUP"),
    }
}

/// Wall-clock milliseconds (`stack.json`'s `*_unix_ms`), from the workspace's
/// one clock helper.
pub(crate) fn unix_ms() -> u64 {
    u64::try_from(etl_core::time::now_unix_ms()).unwrap_or(0)
}
