//! `etlctl connectors apply|list`: connector files in, `CreateConnector` calls out.
//!
//! The files (`deploy/connectors/*.json`) carry `${VAR:-default}` placeholders. A
//! placeholder takes, in order: the process environment (a non-empty value), the
//! running stack's value (its ports and URLs from `stack.json`), the file's default.
//!
//! A connector that reads the stack's own SFTP gateway is also given the gateway's host
//! key fingerprint ([`HOST_KEY_OPTION`]) unless its file sets one, so it never trusts
//! whatever answers on the port.

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

/// The source connector option that pins the SFTP server's host key (`SHA256:…`).
///
/// connect-manager does not read it yet (its source connects with
/// `etl_sftp::SftpClient::connect`, which accepts any key): until it does, it answers
/// the option with an "ignored" warning. The name follows the connector's `sftp.*`
/// options; the policy behind it is `etl_sftp::HostKeyPolicy::Fingerprint`.
pub const HOST_KEY_OPTION: &str = "sftp.host.key.fingerprint";

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
            let mut file = connector_file::parse(&text, |name| lookup(name, process_env, stack))
                .with_context(|| format!("connector file {}", path.display()))?;
            if let Some(stack) = stack {
                pin_host_key(&mut file, stack);
            }
            Ok((path, file))
        })
        .collect()
}

/// Adds the stack gateway's host key fingerprint to a connector that logs in to that
/// gateway (its `sftp.host`/`sftp.port` are the stack's SFTP address) and pins no key of
/// its own. A connector reading another server keeps whatever its file says.
fn pin_host_key(file: &mut ConnectorFile, stack: &StackInfo) {
    let Some(fingerprint) = &stack.sftp_host_key else {
        return;
    };
    let (Some(host), Some(port)) = (file.config.get("sftp.host"), file.config.get("sftp.port"))
    else {
        return;
    };
    let ours = stack
        .sftp_addr
        .rsplit_once(':')
        .is_some_and(|(stack_host, stack_port)| {
            stack_host == host.trim() && stack_port == port.trim()
        });
    let pinned = file
        .config
        .get(HOST_KEY_OPTION)
        .is_some_and(|v| !v.trim().is_empty());
    if ours && !pinned {
        file.config
            .insert(HOST_KEY_OPTION.to_owned(), fingerprint.clone());
    }
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
    use crate::stack::Ports;

    fn stack() -> StackInfo {
        let mut plan = crate::stack::plan::test_plan("/x");
        plan.ports = Ports {
            postgres: 15432,
            sftp: 12222,
            grpc_base: 40000,
            ..Ports::default()
        };
        plan.bin_dir = PathBuf::from("/bin");
        plan.stack_info(1, 2)
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
    fn a_connector_of_the_stacks_gateway_pins_its_host_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let source = |name: &str, host: &str, extra: &str| {
            std::fs::write(
                tmp.path().join(format!("{name}.json")),
                format!(
                    r#"{{"name":"{name}","config":{{"sftp.host":"{host}","sftp.port":"${{ETL_SFTP_PORT:-2222}}","sftp.username":"${{ETL_SFTP_USER:-etl}}","sftp.password":"${{ETL_SFTP_PASSWORD:-etl}}"{extra}}}}}"#
                ),
            )
            .expect("write");
        };
        source("a-ours", "127.0.0.1", "");
        source("b-elsewhere", "sftp.example", "");
        source(
            "c-own-pin",
            "127.0.0.1",
            r#","sftp.host.key.fingerprint":"SHA256:theirs""#,
        );
        std::fs::write(
            tmp.path().join("d-sink.json"),
            r#"{"name":"d-sink","config":{"topics":"t"}}"#,
        )
        .expect("write");
        let mut stack = stack();
        let env_free = std::env::var("ETL_SFTP_PORT").is_err()
            && std::env::var("ETL_SFTP_USER").is_err()
            && std::env::var("ETL_SFTP_PASSWORD").is_err();

        // Before the gateway published its key there is nothing to pin.
        let files = load(tmp.path(), Some(&stack)).expect("load");
        assert!(
            files
                .iter()
                .all(|(_, f)| !f.config.contains_key(HOST_KEY_OPTION) || f.name == "c-own-pin")
        );

        stack.sftp_host_key = Some("SHA256:ours".to_owned());
        let files = load(tmp.path(), Some(&stack)).expect("load");
        let config = |name: &str| {
            files
                .iter()
                .find(|(_, f)| f.name == name)
                .map(|(_, f)| f.config.clone())
                .expect("loaded")
        };
        if env_free {
            let ours = config("a-ours");
            assert_eq!(ours[HOST_KEY_OPTION], "SHA256:ours");
            // The connector's own account, its password a reference connect-manager
            // resolves: the stored config never holds it.
            assert_eq!(ours["sftp.username"], "connect");
            assert_eq!(ours["sftp.password"], "${env:ETL_SFTP_PASSWORD}");
        }
        assert!(!config("b-elsewhere").contains_key(HOST_KEY_OPTION));
        assert_eq!(config("c-own-pin")[HOST_KEY_OPTION], "SHA256:theirs");
        assert!(!config("d-sink").contains_key(HOST_KEY_OPTION));
        // Without a stack (--stack external) nothing is added.
        let files = load(tmp.path(), None).expect("load");
        assert!(!files[0].1.config.contains_key(HOST_KEY_OPTION));
    }

    #[test]
    fn a_missing_directory_says_what_to_do() {
        let err = load(Path::new("/nonexistent/connectors"), None).expect_err("fails");
        assert!(format!("{err:#}").contains("--dir"), "{err:#}");
    }
}
