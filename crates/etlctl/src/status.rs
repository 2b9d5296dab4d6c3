//! `etlctl status`: the health of every component of a running stack. Postgres and
//! Kafka count as healthy when they accept TCP connections (the supervisor already
//! waited for them to answer their protocols); the services when their
//! `grpc.health.v1` says SERVING, which each says only once its own dependencies answer.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cli::StatusArgs;
use crate::process;
use crate::stack::{ServiceState, StackDir, StackInfo};

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
    let postgres = async {
        Component {
            name: "postgres".to_owned(),
            health: tcp_health(info.postgres.port).await,
            endpoint: info.postgres.url.clone(),
            log: info.postgres.log.clone(),
            pid: None,
            restarts: 0,
        }
    };
    let kafka = async {
        Component {
            name: "kafka".to_owned(),
            health: tcp_health(info.kafka.port).await,
            endpoint: format!(
                "{} (tansu, {}, topic {})",
                info.kafka.bootstrap, info.kafka.storage, info.kafka.topic
            ),
            log: info.kafka.log.clone(),
            pid: None,
            restarts: 0,
        }
    };
    let services = futures::future::join_all(info.services.iter().map(|s| async move {
        let health = match s.state {
            ServiceState::Disabled => Health::Disabled,
            ServiceState::Missing => Health::MissingBinary,
            ServiceState::Restarting => Health::Restarting,
            _ => grpc_health(&s.grpc_url).await,
        };
        let mut endpoint = s.grpc_url.clone();
        match s.name {
            crate::stack::Service::SftpGateway => {
                let _ = write!(endpoint, " sftp://{}", info.sftp_addr);
            }
            crate::stack::Service::ConnectManager => {
                let _ = write!(endpoint, " rest {}", info.rest_url);
            }
            _ => {}
        }
        Component {
            name: s.name.to_string(),
            health,
            endpoint,
            log: s.log.clone(),
            pid: s.pid,
            restarts: s.restarts,
        }
    }));
    let (postgres, kafka, services) = futures::join!(postgres, kafka, services);
    let mut all = vec![postgres, kafka];
    all.extend(services);
    all
}

async fn tcp_health(port: u16) -> Health {
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(_)) => Health::Healthy,
        _ => Health::Unreachable,
    }
}

async fn grpc_health(url: &str) -> Health {
    match tokio::time::timeout(Duration::from_secs(3), etl_service::probe_health(url)).await {
        Ok(Ok(true)) => Health::Healthy,
        Ok(Ok(false)) => Health::NotServing,
        _ => Health::Unreachable,
    }
}

/// The status table.
pub fn render(components: &[Component]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<15} {:<58} LOG",
        "COMPONENT", "HEALTH", "ENDPOINT"
    );
    for c in components {
        let mut health = c.health.as_str().to_owned();
        if c.restarts > 0 {
            let _ = write!(health, " ({}x)", c.restarts);
        }
        let _ = writeln!(
            out,
            "{:<16} {:<15} {:<58} {}",
            c.name,
            health,
            c.endpoint,
            c.log.display()
        );
    }
    out
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
    if args.json {
        let value = serde_json::json!({
            "running": true,
            "supervisor_pid": pid,
            "healthy": healthy,
            "components": components,
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
    }
    Ok(healthy)
}
