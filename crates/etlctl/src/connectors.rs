//! `etlctl connectors apply|list`: connector files in, `CreateConnector` calls out.
//!
//! The files (`deploy/connectors/*.json`) carry `${VAR:-default}` placeholders. A
//! placeholder takes, in order: the process environment (a non-empty value), the
//! running stack's value (its ports and URLs from `stack.json`), the file's default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use etl_core::connector_file::{self, ConnectorFile};
use etl_proto::v1::connect_manager_client::ConnectManagerClient;
use etl_proto::v1::{
    ConnectorInfo, CreateConnectorRequest, GetConnectorStatusRequest, ListConnectorsRequest,
};
use etl_service::{AuthChannel, ClientAuth};

use crate::cli::{ConnectorsApplyArgs, ConnectorsTarget, StackMode};
use crate::stack::{Service, StackDir, StackInfo};

/// The value of placeholder `name`: `env` first, then the stack.
pub fn lookup(
    name: &str,
    env: impl Fn(&str) -> Option<String>,
    stack: Option<&StackInfo>,
) -> Option<String> {
    env(name)
        .filter(|v| !v.is_empty())
        .or_else(|| stack.and_then(|s| s.placeholder(name)))
}

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Every `*.json` in `dir`, by file name, parsed with placeholders expanded.
pub fn load(
    dir: &Path,
    stack: Option<&StackInfo>,
) -> anyhow::Result<Vec<(PathBuf, ConnectorFile)>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "cannot read the connector directory {} (run from the repository root, or pass \
             --dir / --connectors-dir)",
            dir.display()
        )
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
        .collect();
    paths.sort();
    if paths.is_empty() {
        anyhow::bail!("no *.json connector files in {}", dir.display());
    }
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let file = connector_file::parse(&text, |name| lookup(name, process_env, stack))
                .with_context(|| format!("connector file {}", path.display()))?;
            Ok((path, file))
        })
        .collect()
}

/// connect-manager's URL (`--url`, else the stack's), the stack, and what
/// the calls carry (the local stack's token, else the flags').
fn target_url(
    target: &ConnectorsTarget,
) -> anyhow::Result<(String, Option<StackInfo>, ClientAuth)> {
    if target.mode == StackMode::External {
        let url = target
            .url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| {
                format!(
                    "http://127.0.0.1:{}",
                    crate::stack::Ports::default().grpc(Service::ConnectManager)
                )
            });
        let auth = crate::endpoints::client_auth(&target.security, None)?;
        return Ok((url, None, auth));
    }
    let dir = StackDir::new(&target.stack_dir)?;
    let auth = crate::endpoints::client_auth(&target.security, Some(&dir))?;
    let stack = dir.read_stack()?;
    let url = match (&target.url, &stack) {
        (Some(url), _) => url.clone(),
        (None, Some(stack)) => stack
            .grpc_url(Service::ConnectManager)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("stack.json names no connect-manager"))?,
        (None, None) => anyhow::bail!(
            "no stack running in {} (start it with `etlctl up`, or pass --url)",
            dir.root().display()
        ),
    };
    Ok((url, stack, auth))
}

pub async fn client(
    url: &str,
    auth: &ClientAuth,
) -> anyhow::Result<ConnectManagerClient<AuthChannel>> {
    let channel = auth.connect(url).await.with_context(|| {
        format!("connect-manager at {url} is unreachable (is the stack up? `etlctl status`)")
    })?;
    Ok(ConnectManagerClient::new(channel))
}

/// Creates (or updates) every connector of `dir` at `url`.
pub async fn apply_dir(
    dir: &Path,
    url: &str,
    stack: Option<&StackInfo>,
    auth: &ClientAuth,
) -> anyhow::Result<Vec<ConnectorInfo>> {
    let files = load(dir, stack)?;
    let mut client = client(url, auth).await?;
    let mut applied = Vec::new();
    for (path, file) in files {
        let request = CreateConnectorRequest {
            name: file.name.clone(),
            config: file.config.into_iter().collect(),
        };
        // connect-manager may have just turned SERVING: ride out a short unavailability.
        let mut attempt = 0;
        let info = loop {
            match client.create_connector(request.clone()).await {
                Ok(response) => break response.into_inner(),
                Err(status) if status.code() == tonic::Code::Unavailable && attempt < 10 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(status) => {
                    return Err(anyhow::anyhow!(
                        "connect-manager at {url} rejected {} ({}): {}",
                        file.name,
                        path.display(),
                        status.message()
                    ));
                }
            }
        };
        println!(
            "applied connector {} ({}) from {}",
            info.name,
            if info.r#type.is_empty() {
                "?"
            } else {
                &info.r#type
            },
            path.display()
        );
        applied.push(info);
    }
    Ok(applied)
}

/// `etlctl connectors apply`.
pub async fn apply(args: &ConnectorsApplyArgs) -> anyhow::Result<()> {
    let (url, stack, auth) = target_url(&args.target)?;
    apply_dir(&args.connectors_dir, &url, stack.as_ref(), &auth).await?;
    Ok(())
}

/// `etlctl connectors list`.
pub async fn list(target: &ConnectorsTarget) -> anyhow::Result<()> {
    let (url, _, auth) = target_url(target)?;
    let mut client = client(&url, &auth).await?;
    let connectors = client
        .list_connectors(ListConnectorsRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("ListConnectors at {url}: {}", s.message()))?
        .into_inner()
        .connectors;
    if connectors.is_empty() {
        println!("no connectors at {url} (apply some with `etlctl connectors apply`)");
        return Ok(());
    }
    println!(
        "{:<24} {:<7} {:<11} {:>10} {:>8} {:>7}  LAST ERROR",
        "NAME", "TYPE", "STATE", "RECORDS", "FINISHED", "FAILED"
    );
    for c in connectors {
        let status = client
            .get_connector_status(GetConnectorStatusRequest {
                name: c.name.clone(),
            })
            .await;
        match status {
            Ok(s) => {
                let s = s.into_inner();
                println!(
                    "{:<24} {:<7} {:<11} {:>10} {:>8} {:>7}  {}",
                    c.name,
                    c.r#type,
                    s.state,
                    s.records,
                    s.files_finished,
                    s.files_failed,
                    s.last_error
                );
            }
            Err(e) => println!("{:<24} {:<7} (status: {})", c.name, c.r#type, e.message()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::{KafkaStorage, Ports, StackPlan};

    fn stack() -> StackInfo {
        StackPlan {
            dir: StackDir::new(Path::new("/x")).expect("dir"),
            ports: Ports {
                postgres: 15432,
                sftp: 12222,
                grpc_base: 40000,
                ..Ports::default()
            },
            kafka_storage: KafkaStorage::Memory,
            topic: "review-etl".to_owned(),
            partitions: 3,
            with_services: true,
            bin_dir: PathBuf::from("/bin"),
            tracing: crate::stack::Tracing::Embedded,
        }
        .stack_info(1, 2)
    }

    #[test]
    fn environment_wins_over_the_stack_which_wins_over_defaults() {
        let stack = stack();
        let env = |name: &str| match name {
            "ETL_PG_PORT" => Some("6000".to_owned()),
            "ETL_TOPIC" => Some(String::new()),
            _ => None,
        };
        assert_eq!(
            lookup("ETL_PG_PORT", env, Some(&stack)).as_deref(),
            Some("6000")
        );
        assert_eq!(
            lookup("ETL_SFTP_PORT", env, Some(&stack)).as_deref(),
            Some("12222")
        );
        // An empty variable does not hide the stack's value.
        assert_eq!(
            lookup("ETL_TOPIC", env, Some(&stack)).as_deref(),
            Some("review-etl")
        );
        assert_eq!(
            lookup("ETL_GATEWAY_URL", env, Some(&stack)).as_deref(),
            Some("http://127.0.0.1:40001")
        );
        assert_eq!(lookup("ETL_SFTP_PORT", env, None), None);
        assert_eq!(lookup("ETL_PG_PASSWORD", env, Some(&stack)), None);
    }

    #[test]
    fn files_are_expanded_with_the_stack_values() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            tmp.path().join("b-sink.json"),
            r#"{"name":"postgres-sink","config":{"connection.url":"jdbc:postgresql://${ETL_PG_HOST:-127.0.0.1}:${ETL_PG_PORT:-5432}/${ETL_PG_DATABASE:-nlp_db}","connection.password":"${ETL_PG_PASSWORD:-}","tasks.max":1}}"#,
        )
        .expect("write");
        std::fs::write(
            tmp.path().join("a-source.json"),
            r#"{"name":"sftp-source","config":{"sftp.port":"${ETL_SFTP_PORT:-2222}","kafka.topic":"${ETL_TOPIC:-review-etl}"}}"#,
        )
        .expect("write");
        std::fs::write(tmp.path().join("README.md"), "not a connector").expect("write");
        let files = load(tmp.path(), Some(&stack())).expect("load");
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].1.name, "sftp-source");
        assert_eq!(files[0].1.config["sftp.port"], "12222");
        let sink = &files[1].1;
        // The process environment may set ETL_PG_*; only check what it cannot change.
        if std::env::var("ETL_PG_PORT").is_err() && std::env::var("ETL_PG_HOST").is_err() {
            assert_eq!(
                sink.config["connection.url"],
                "jdbc:postgresql://127.0.0.1:15432/nlp_db"
            );
        }
        assert_eq!(sink.config["tasks.max"], "1");
    }

    #[test]
    fn a_missing_directory_says_what_to_do() {
        let err = load(Path::new("/nonexistent/connectors"), None).expect_err("fails");
        assert!(format!("{err:#}").contains("--dir"), "{err:#}");
    }
}
