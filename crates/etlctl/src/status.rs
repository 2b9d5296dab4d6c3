//! `etlctl status`: the health of every component of a running stack. Postgres and
//! Kafka count as healthy when they accept TCP connections (the supervisor already
//! waited for them to answer their protocols); the services when their
//! `grpc.health.v1` says SERVING, which each says only once its own dependencies answer.
//! Each connect-manager worker is a component of its own; below the table, the workers
//! again with the connector tasks each runs (see `workers`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{StackMode, StatusArgs};
use crate::endpoints::Endpoints;
use crate::process;
use crate::stack::{CollectorKind, Service, ServiceState, StackDir, StackInfo};
use crate::workers;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Healthy,
    /// The gRPC server answers but is NOT_SERVING (waiting for a dependency).
    NotServing,
    Unreachable,
    /// The supervisor is between two starts of the service.
    Restarting,
    MissingBinary,
    /// Not started (`--without-services`).
    Disabled,
    /// Kept dying: the supervisor stopped restarting it.
    Failed,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::NotServing => "not serving",
            Health::Unreachable => "unreachable",
            Health::Restarting => "restarting",
            Health::MissingBinary => "missing binary",
            Health::Disabled => "disabled",
            Health::Failed => "failed",
        }
    }
}

/// One row of the status table.
#[derive(Clone, Debug, Serialize)]
pub struct Component {
    pub name: String,
    pub health: Health,
    pub endpoint: String,
    pub log: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    /// How the component last exited before a restart, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

impl Component {
    /// Whether `up` may stop waiting for this component.
    pub fn ready(&self, accept_missing: bool) -> bool {
        match self.health {
            Health::Healthy | Health::Disabled => true,
            Health::MissingBinary => accept_missing,
            _ => false,
        }
    }
}

/// Probes every component of `info` concurrently.
pub async fn check(info: &StackInfo) -> Vec<Component> {
    async fn infra_health(p: &crate::stack::ProcessInfo, port: u16) -> Health {
        if p.failed {
            Health::Failed
        } else {
            tcp_health(port).await
        }
    }
    let postgres = async {
        let p = &info.postgres.process;
        Component {
            name: "postgres".to_owned(),
            health: infra_health(p, info.postgres.port).await,
            endpoint: info.postgres.url.clone(),
            log: info.postgres.log.clone(),
            pid: p.pid,
            restarts: p.restarts,
            last_exit: p.last_exit.clone(),
        }
    };
    let kafka = async {
        let p = &info.kafka.process;
        let engine = match info.kafka.storage {
            crate::stack::KafkaStorage::Kafka => "Apache Kafka",
            _ => "tansu",
        };
        Component {
            name: "kafka".to_owned(),
            health: infra_health(p, info.kafka.port).await,
            endpoint: format!(
                "{} ({engine}, {}, topic {})",
                info.kafka.bootstrap, info.kafka.storage, info.kafka.topic
            ),
            log: info.kafka.log.clone(),
            pid: p.pid,
            restarts: p.restarts,
            last_exit: p.last_exit.clone(),
        }
    };
    let services = futures::future::join_all(info.services.iter().map(|s| async move {
        let health = match s.state {
            ServiceState::Disabled => Health::Disabled,
            ServiceState::Missing => Health::MissingBinary,
            ServiceState::Restarting => Health::Restarting,
            ServiceState::Failed => Health::Failed,
            _ => grpc_health(&s.grpc_url).await,
        };
        let mut endpoint = s.grpc_url.clone();
        match s.name {
            crate::stack::Service::SftpGateway => {
                let _ = write!(endpoint, " sftp://{}", info.sftp_addr);
            }
            crate::stack::Service::ConnectManager => {
                let rest = s.rest_url.as_deref().unwrap_or(&info.rest_url);
                let _ = write!(endpoint, " rest {rest}");
            }
            _ => {}
        }
        Component {
            name: s.display_name(),
            health,
            endpoint,
            log: s.log.clone(),
            pid: s.pid,
            restarts: s.restarts,
            last_exit: s.last_exit.clone(),
        }
    }));
    let tracing = tracing_component(info);
    let (postgres, kafka, tracing, services) = futures::join!(postgres, kafka, tracing, services);
    let mut all = vec![postgres, kafka, tracing];
    all.extend(services);
    all
}

/// The trace collector: the embedded one's Jaeger UI port, or the external OTLP
/// endpoint the services export to.
async fn tracing_component(info: &StackInfo) -> Component {
    let t = &info.tracing;
    let (health, endpoint) = match (t.collector, &t.otlp_endpoint) {
        (CollectorKind::Off, _) | (_, None) => {
            (Health::Disabled, "tracing off (--no-tracing)".to_owned())
        }
        (CollectorKind::Embedded, Some(otlp)) => {
            let ui = t.jaeger_url.clone().unwrap_or_default();
            (url_health(&ui).await, format!("{ui} (OTLP in {otlp})"))
        }
        (CollectorKind::External, Some(otlp)) => (
            url_health(otlp).await,
            format!("{otlp} (external OTLP collector)"),
        ),
    };
    Component {
        name: "jaeger".to_owned(),
        health,
        endpoint,
        log: t.log.clone(),
        pid: None,
        restarts: 0,
        last_exit: None,
    }
}

async fn tcp_health(port: u16) -> Health {
    tcp_health_at(&format!("127.0.0.1:{port}")).await
}

async fn tcp_health_at(host_port: &str) -> Health {
    let connect = tokio::net::TcpStream::connect(host_port);
    match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(_)) => Health::Healthy,
        _ => Health::Unreachable,
    }
}

/// Whether something accepts TCP connections at the host and port of `url`.
async fn url_health(url: &str) -> Health {
    match host_port(url) {
        Some(host_port) => tcp_health_at(&host_port).await,
        None => Health::Unreachable,
    }
}

/// `http://host:port/path` → `host:port` (port 80/443 by scheme when absent),
/// with the workspace's one `host:port` parser ([`etl_core::net::HostPort`]).
pub fn host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    let default_port = if scheme == "https" { 443 } else { 80 };
    etl_core::net::HostPort::parse(authority, default_port)
        .ok()
        .map(|hp| hp.to_string())
}

/// The components of an external stack (`--stack external`): the four services at
/// their URLs and Jaeger, if a URL is known.
pub async fn check_external(endpoints: &Endpoints) -> Vec<Component> {
    let component = |name: &str, health: Health, endpoint: &str| Component {
        name: name.to_owned(),
        health,
        endpoint: endpoint.to_owned(),
        log: PathBuf::new(),
        pid: None,
        restarts: 0,
        last_exit: None,
    };
    let services = futures::future::join_all(Service::ALL.into_iter().map(|s| async move {
        let url = endpoints.grpc_url(s);
        component(s.name(), grpc_health(url).await, url)
    }));
    let jaeger = async {
        match &endpoints.jaeger {
            Some(url) => component("jaeger", url_health(url).await, url),
            None => component("jaeger", Health::Disabled, "no --jaeger-url"),
        }
    };
    let (jaeger, services) = futures::join!(jaeger, services);
    let mut all = vec![jaeger];
    all.extend(services);
    all
}

async fn grpc_health(url: &str) -> Health {
    match tokio::time::timeout(Duration::from_secs(3), etl_service::probe_health(url)).await {
        Ok(Ok(true)) => Health::Healthy,
        Ok(Ok(false)) => Health::NotServing,
        _ => Health::Unreachable,
    }
}

/// The status table. The name column widens for names longer than 16 characters
/// (`connect-manager-10`), so a stack without workers prints as it always has.
pub fn render(components: &[Component]) -> String {
    let mut out = String::new();
    let name = components
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(16);
    let _ = writeln!(
        out,
        "{:<name$} {:<15} {:<58} LOG",
        "COMPONENT", "HEALTH", "ENDPOINT"
    );
    for c in components {
        let mut health = c.health.as_str().to_owned();
        if c.restarts > 0 {
            let _ = write!(health, " ({}x)", c.restarts);
        }
        let _ = writeln!(
            out,
            "{:<name$} {:<15} {:<58} {}",
            c.name,
            health,
            c.endpoint,
            c.log.display()
        );
        if let Some(exit) = &c.last_exit {
            let _ = writeln!(out, "{:<name$} last exit: {exit}", "");
        }
    }
    out
}

/// connect-manager's workers and their tasks, from the first worker's REST API that
/// answers; `None` for a stack without services.
async fn connect_view(
    dir: &StackDir,
    info: &StackInfo,
    components: &[Component],
) -> Option<workers::ConnectView> {
    if info
        .connect_workers()
        .iter()
        .all(|w| w.state == ServiceState::Disabled)
    {
        return None;
    }
    // The workers with their health, to ask the healthy ones first.
    let unasked = workers::view(info, components, Err(String::new()));
    let token = match dir.read_api_token() {
        Ok(token) => token,
        Err(e) => {
            return Some(workers::view(
                info,
                components,
                Err(format!("cannot read the stack's API token: {e:#}")),
            ));
        }
    };
    let tasks = workers::fetch_tasks(&unasked.workers, token.as_ref()).await;
    Some(workers::view(info, components, tasks))
}

/// The running stack of `dir`: `Ok(None)` when no supervisor runs there.
pub fn running_stack(dir: &StackDir) -> anyhow::Result<Option<(u32, Option<StackInfo>)>> {
    match dir.read_pid() {
        Some(pid) if process::is_supervisor(pid) => Ok(Some((pid, dir.read_stack()?))),
        _ => Ok(None),
    }
}

/// `etlctl status`; returns whether every component is healthy (or disabled).
pub async fn run(args: &StatusArgs) -> anyhow::Result<bool> {
    if args.endpoints.mode == StackMode::External {
        let endpoints = Endpoints::external(&args.endpoints);
        let components = check_external(&endpoints).await;
        let healthy = components.iter().all(|c| c.ready(false));
        if args.json {
            let value = serde_json::json!({
                "stack": "external",
                "healthy": healthy,
                "components": components,
            });
            println!("{}", serde_json::to_string_pretty(&value)?);
        } else {
            println!("external stack (--stack external)");
            print!("{}", render(&components));
        }
        return Ok(healthy);
    }
    let dir = args.dir.stack_dir()?;
    let Some((pid, info)) = running_stack(&dir)? else {
        if args.json {
            println!("{}", serde_json::json!({ "running": false }));
        } else {
            println!(
                "no stack running in {} (start one with `etlctl up`)",
                dir.root().display()
            );
        }
        return Ok(false);
    };
    let Some(info) = info else {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "running": true, "supervisor_pid": pid, "starting": true })
            );
        } else {
            println!(
                "stack in {} is starting (supervisor pid {pid}); its log: {}",
                dir.root().display(),
                dir.supervisor_log().display()
            );
        }
        return Ok(false);
    };
    let components = check(&info).await;
    let healthy = components.iter().all(|c| c.ready(false));
    let connect = connect_view(&dir, &info, &components).await;
    if args.json {
        let value = serde_json::json!({
            "running": true,
            "supervisor_pid": pid,
            "healthy": healthy,
            "components": components,
            "connect": connect,
            "stack": info,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!(
            "stack in {} (supervisor pid {pid}, log {})",
            dir.root().display(),
            info.supervisor_log.display()
        );
        print!("{}", render(&components));
        if let Some(connect) = &connect {
            println!();
            print!("{}", workers::render(connect));
        }
    }
    Ok(healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_widens_for_worker_names_only() {
        let row = |name: &str| Component {
            name: name.to_owned(),
            health: Health::Healthy,
            endpoint: "e".to_owned(),
            log: PathBuf::from("/l"),
            pid: None,
            restarts: 0,
            last_exit: None,
        };
        let one = render(&[row("connect-manager")]);
        assert!(one.starts_with("COMPONENT        HEALTH"), "{one}");
        assert!(one.contains("\nconnect-manager  healthy"), "{one}");
        let many = render(&[row("postgres"), row("connect-manager-10")]);
        assert!(many.starts_with("COMPONENT          HEALTH"), "{many}");
        assert!(many.contains("\npostgres           healthy"), "{many}");
        assert!(many.contains("\nconnect-manager-10 healthy"), "{many}");
    }

    #[test]
    fn host_and_port_of_urls() {
        assert_eq!(
            host_port("http://127.0.0.1:16686").as_deref(),
            Some("127.0.0.1:16686")
        );
        assert_eq!(
            host_port("http://jaeger:16686/search").as_deref(),
            Some("jaeger:16686")
        );
        assert_eq!(host_port("http://jaeger").as_deref(), Some("jaeger:80"));
        assert_eq!(host_port("https://jaeger/").as_deref(), Some("jaeger:443"));
        assert_eq!(
            host_port("127.0.0.1:4317").as_deref(),
            Some("127.0.0.1:4317")
        );
        assert_eq!(host_port("http://"), None);
        assert_eq!(
            host_port("http://[::1]:4317").as_deref(),
            Some("[::1]:4317")
        );
    }
}
