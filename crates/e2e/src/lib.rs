//! Whole-system tests live in `tests/`; this library holds the steps they share.
//!
//! # Layout
//! - `tests/contract.rs`: `compose.yaml` and `deploy/Dockerfile` checked statically
//!   against the binaries' `--help`, the workspace's binaries and the design's ports
//!   (no Docker engine runs on the CI machines).
//! - `tests/pipeline.rs`: raw reviews to Postgres rows through every service
//!   in-process, on real Postgres, tansu and SFTP; rows checked value by value.
//! - `tests/tracing.rs`: the same with every service as its own process exporting
//!   OTLP to a collector inside the test; one trace per file, checked span by span.
//! - this file: applying the connector files, running a extraction and waiting for
//!   the verifier's complete report. Each step has a `_with` form whose calls
//!   carry an API token ([`ClientAuth`]), for stacks that require one.

use std::{collections::HashMap, path::Path, time::Duration};

use etl_proto::v1::{
    CreateConnectorRequest, GetReportRequest, RunProgress, RunReport, SourceSpec, StartRunRequest,
    WatchRunRequest, connect_manager_client::ConnectManagerClient,
    extractor_client::ExtractorClient, sink_verifier_client::SinkVerifierClient,
};
pub use etl_service::ClientAuth;
use tokio_stream::StreamExt;

/// The repository's root.
pub fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// How long a test waits for a run to be extracted, or to be verified.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// Creates the connectors of `deploy/connectors/*.json` with placeholders filled
/// from `vars`, as `etlctl connectors apply` does. Returns how many were created.
pub async fn apply_connectors(connect_url: &str, vars: &HashMap<&str, String>) -> usize {
    apply_connectors_with(&ClientAuth::none(), connect_url, vars).await
}

/// [`apply_connectors`], the calls carrying `auth`'s token.
pub async fn apply_connectors_with(
    auth: &ClientAuth,
    connect_url: &str,
    vars: &HashMap<&str, String>,
) -> usize {
    let mut cm = ConnectManagerClient::new(
        auth.connect(connect_url)
            .await
            .expect("connect-manager gRPC"),
    );
    let mut applied = 0;
    for entry in std::fs::read_dir(root().join("deploy/connectors")).expect("connector dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read connector");
        let file = etl_core::connector_file::parse(&text, |k| vars.get(k).cloned())
            .expect("connector file");
        cm.create_connector(CreateConnectorRequest {
            name: file.name,
            config: file.config.into_iter().collect(),
        })
        .await
        .unwrap_or_else(|e| panic!("create connector {}: {e}", path.display()));
        applied += 1;
    }
    applied
}

/// Runs the extractor over `input` and follows the run to its end, then follows
/// the verifier's report until it is complete. Panics with the partial report
/// when either does not finish within [`DEADLINE`].
pub async fn run_and_verify(
    extractor_url: &str,
    verifier_url: &str,
    input: &Path,
    run_id: &str,
    chunk_size: u32,
) -> (RunProgress, RunReport) {
    run_and_verify_with(
        &ClientAuth::none(),
        extractor_url,
        verifier_url,
        input,
        run_id,
        chunk_size,
    )
    .await
}

/// [`run_and_verify`], the calls carrying `auth`'s token.
pub async fn run_and_verify_with(
    auth: &ClientAuth,
    extractor_url: &str,
    verifier_url: &str,
    input: &Path,
    run_id: &str,
    chunk_size: u32,
) -> (RunProgress, RunReport) {
    let last = run_extractor_with(auth, extractor_url, input, run_id, chunk_size).await;
    (last, wait_verified_with(auth, verifier_url, run_id).await)
}

/// Runs the extractor over `input` and follows the run until every chunk is
/// uploaded (and registered with the verifier). Returns the last progress.
pub async fn run_extractor(
    extractor_url: &str,
    input: &Path,
    run_id: &str,
    chunk_size: u32,
) -> RunProgress {
    run_extractor_with(
        &ClientAuth::none(),
        extractor_url,
        input,
        run_id,
        chunk_size,
    )
    .await
}

/// [`run_extractor`], the calls carrying `auth`'s token.
pub async fn run_extractor_with(
    auth: &ClientAuth,
    extractor_url: &str,
    input: &Path,
    run_id: &str,
    chunk_size: u32,
) -> RunProgress {
    let mut ex = ExtractorClient::new(auth.connect(extractor_url).await.expect("extractor gRPC"));
    ex.start_run(StartRunRequest {
        sources: vec![SourceSpec {
            name: "amazon".into(),
            path: input.to_str().expect("utf8 path").into(),
            label_scheme: "polarity".into(),
        }],
        run_id: run_id.to_string(),
        chunk_size,
    })
    .await
    .expect("start run");
    let mut progress = ex
        .watch_run(WatchRunRequest {
            run_id: run_id.to_string(),
        })
        .await
        .expect("watch run")
        .into_inner();
    let mut last = None;
    while let Some(p) = tokio::time::timeout(DEADLINE, progress.next())
        .await
        .expect("run progress in time")
    {
        let p = p.expect("progress");
        let done = p.done;
        last = Some(p);
        if done {
            break;
        }
    }
    let last = last.expect("at least one progress message");
    assert!(last.done && last.error.is_empty(), "run failed: {last:?}");
    last
}

/// Follows the verifier's report of `run_id` until it is complete.
pub async fn wait_verified(verifier_url: &str, run_id: &str) -> RunReport {
    wait_verified_with(&ClientAuth::none(), verifier_url, run_id).await
}

/// [`wait_verified`], the calls carrying `auth`'s token.
pub async fn wait_verified_with(auth: &ClientAuth, verifier_url: &str, run_id: &str) -> RunReport {
    let mut sv = SinkVerifierClient::new(auth.connect(verifier_url).await.expect("verifier gRPC"));
    let mut reports = sv
        .watch_report(GetReportRequest {
            run_id: run_id.to_string(),
        })
        .await
        .expect("watch report")
        .into_inner();
    let watch = async {
        while let Some(r) = reports.next().await {
            let r = r.expect("report");
            if r.complete {
                return Some(r);
            }
        }
        None
    };
    match tokio::time::timeout(DEADLINE, watch).await {
        Ok(Some(report)) => report,
        _ => {
            let partial = sv
                .get_report(GetReportRequest {
                    run_id: run_id.to_string(),
                })
                .await;
            panic!("run {run_id} not verified in {DEADLINE:?}; report now: {partial:?}");
        }
    }
}

/// Directory of the binaries built alongside the running test (target/<profile>).
pub fn bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// A workspace binary, which must have been built: `cargo test --workspace` (`make test`)
/// builds every package's binaries; `cargo test -p e2e` alone builds none of them.
pub fn bin(name: &str) -> std::path::PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run the whole suite (`make test`), or `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A child process killed when the test ends, its output in the test's log dir.
pub struct Service {
    pub name: &'static str,
    child: std::process::Child,
}

impl Service {
    /// Starts binary `name` with `args` and `env`, logging to `<log_dir>/<name>.log`.
    pub fn spawn(
        name: &'static str,
        args: &[&str],
        env: &[(&str, String)],
        log_dir: &Path,
    ) -> Self {
        // Appended to: a service restarted by a test keeps one log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{name}.log")))
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = std::process::Command::new(bin(name))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Self { name, child }
    }

    /// Asks the service to stop as SIGTERM would (flushing its spans), then waits.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "a synchronous stop, called after the runtime's work is done"
            )]
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until the gRPC health of `url` is SERVING.
pub async fn wait_serving(name: &str, url: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(true) = etl_service::probe_health(url).await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} at {url} never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
