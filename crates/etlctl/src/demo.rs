//! `etlctl demo`: the whole pipeline, end to end, against the local stack (or, with
//! `--stack external`, against services that already run, e.g. compose's).
//!
//! up (if needed; external: wait until the four answer SERVING) → generate N rows
//! into `<dir>/input/` (or `--input-dir`) → apply the connectors → `Extractor.StartRun`
//! → follow `WatchRun` → follow `SinkVerifier.WatchReport` until the report is
//! complete or the timeout passes → print the report (with the Jaeger link of the
//! first file's trace) and write `<dir>/report.json`. The stack stays up.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use etl_core::review::LabelScheme;
use etl_proto::v1::extractor_client::ExtractorClient;
use etl_proto::v1::sink_verifier_client::SinkVerifierClient;
use etl_proto::v1::{
    GetReportRequest, RunProgress, RunReport, SourceSpec, StartRunRequest, WatchRunRequest,
};
use etl_service::{AuthChannel, ClientAuth};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{DemoArgs, ReportArgs, StackMode};
use crate::endpoints::Endpoints;
use crate::report::{DemoReport, ExtractSummary};
use crate::stack::{Service, ServiceState, StackDir, write_atomically};
use crate::{connectors, generate, up};

/// How the demo ended.
pub enum Outcome {
    /// The report is complete; `passed` says whether every row landed exactly once.
    Finished { passed: bool },
    /// The timeout passed first; a partial report was printed and written.
    TimedOut,
}

pub async fn run(args: &DemoArgs) -> anyhow::Result<Outcome> {
    let labels: LabelScheme = args.labels.parse().map_err(anyhow::Error::msg)?;
    if args.rows == 0 {
        anyhow::bail!("--rows must be at least 1");
    }
    let by_hand = match args.endpoints.mode {
        StackMode::Local => started_by_hand(args).await?,
        StackMode::External => None,
    };
    let (dir, stack, endpoints) = match (args.endpoints.mode, by_hand) {
        (StackMode::Local, Some((dir, endpoints))) => {
            println!(
                "no stack supervised in {}, but the four services answer on their ports: using them",
                dir.root().display()
            );
            wait_serving(&endpoints, Duration::from_secs(args.up_timeout)).await?;
            (dir, None, endpoints)
        }
        (StackMode::Local, None) => {
            let plan = args.stack.plan()?;
            let stack = up::ensure_up(
                &plan,
                Duration::from_secs(args.up_timeout),
                false,
                args.stack.workers,
            )
            .await?;
            let dir = plan.dir;
            let not_running: Vec<String> = stack
                .services
                .iter()
                .filter(|s| matches!(s.state, ServiceState::Disabled | ServiceState::Missing))
                .map(|s| format!("{} ({})", s.display_name(), s.state))
                .collect();
            if !not_running.is_empty() {
                anyhow::bail!(
                    "the stack in {} runs without {}: the demo needs all four services \
                     (`etlctl down --dir {}`, build them, then run the demo again)",
                    dir.root().display(),
                    not_running.join(", "),
                    dir.root().display()
                );
            }
            let endpoints = Endpoints::local(&stack, &args.endpoints)?;
            (dir, Some(stack), endpoints)
        }
        (StackMode::External, _) => {
            let dir = args.stack.dir.stack_dir()?;
            std::fs::create_dir_all(dir.root())
                .with_context(|| format!("cannot create {}", dir.root().display()))?;
            let endpoints = Endpoints::external(&args.endpoints);
            wait_serving(&endpoints, Duration::from_secs(args.up_timeout)).await?;
            (dir, None, endpoints)
        }
    };
    let dir = &dir;
    // The local stack's token, or (external) the flags'.
    let auth = match args.endpoints.mode {
        StackMode::Local => crate::endpoints::client_auth(&args.endpoints.security, Some(dir))?,
        StackMode::External => crate::endpoints::client_auth(&args.endpoints.security, None)?,
    };
    // StartRun gets this absolute path: the extractor must see the same file there
    // (and it must be below the extractor's input directories: the local stack's
    // extractor reads <dir>/input only).
    let input_dir = match &args.input_dir {
        Some(d) => StackDir::new(d)?.root().to_path_buf(),
        None => dir.input(),
    };

    let input = generate::input_path(&input_dir, args.rows, args.seed, labels);
    println!(
        "generating {} rows (seed {}, {labels} labels) into {}",
        args.rows,
        args.seed,
        input.display()
    );
    let (rows, seed, path) = (args.rows, args.seed, input.clone());
    tokio::task::spawn_blocking(move || generate::generate_input(&path, rows, seed, labels))
        .await??;

    connectors::apply_dir(
        &args.connectors_dir,
        &endpoints.connect,
        stack.as_ref(),
        &auth,
    )
    .await?;

    let mut extractor = ExtractorClient::new(channel(&endpoints.extractor, &auth).await?);
    // No run id: the extractor derives it from the input's content and the
    // options, so running the same demo again (after a crash, or twice) resumes
    // the same run under the same file names instead of loading a second copy.
    let run_id = String::new();
    let timeout = Duration::from_secs(args.timeout);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + timeout;
    let run_id = extractor
        .start_run(StartRunRequest {
            sources: vec![SourceSpec {
                name: "demo".to_owned(),
                path: input.display().to_string(),
                label_scheme: labels.to_string(),
            }],
            run_id,
            chunk_size: args.chunk_size,
        })
        .await
        .map_err(|s| anyhow::anyhow!("Extractor.StartRun failed: {}", s.message()))?
        .into_inner()
        .run_id;
    println!("run {run_id} started");

    let (extract, mut timed_out) = watch_run(&mut extractor, &run_id, args.rows, deadline).await?;
    // Lazy: the verifier may be restarting right now (a crash, a SIGTERM, its
    // supervisor's backoff), and the run goes on without it; `watch_report`
    // retries until the deadline instead of failing a run that will pass.
    let mut verifier = verifier_client(&endpoints.verifier, &auth)?;
    let mut unreachable = None;
    let report = if timed_out {
        get_report(&mut verifier, &run_id).await
    } else {
        let watched = watch_report(&mut verifier, &endpoints.verifier, &run_id, deadline).await;
        timed_out = watched.timed_out;
        unreachable = watched.unreachable;
        watched.report
    };
    let elapsed = started.elapsed();

    let mut demo = DemoReport::new(
        &report,
        input.display().to_string(),
        args.rows,
        elapsed,
        extract.as_ref().map(ExtractSummary::from),
    );
    demo.link_jaeger(endpoints.jaeger.as_deref());
    write_atomically(&dir.report_json(), demo.to_json().as_bytes())
        .with_context(|| format!("cannot write {}", dir.report_json().display()))?;
    println!();
    print!("{}", demo.render());
    println!("report written to {}", dir.report_json().display());
    if let Some((file, _)) = demo.first_trace() {
        println!(
            "a file's spans, service by service: etlctl trace {file}{}",
            trace_flags(args)
        );
    }
    if timed_out {
        let logs = match stack {
            Some(_) => dir.logs().display().to_string(),
            None => "the services' logs".to_owned(),
        };
        let why = match &unreachable {
            Some(e) => format!("; the sink-verifier did not answer at the end: {e}"),
            None => String::new(),
        };
        eprintln!(
            "timed out after {}s before the report was complete{why} (raise --timeout; the logs are in {logs})",
            timeout.as_secs(),
        );
        return Ok(Outcome::TimedOut);
    }
    Ok(Outcome::Finished {
        passed: demo.passed,
    })
}

/// Services started by hand (or by another tool) on the plan's ports, with no
/// supervisor in the stack directory: the demo uses them as they are rather than
/// refusing or starting a second stack on busy ports.
async fn started_by_hand(args: &DemoArgs) -> anyhow::Result<Option<(StackDir, Endpoints)>> {
    let plan = args.stack.plan()?;
    if crate::status::running_stack(&plan.dir)?.is_some() {
        return Ok(None);
    }
    let url = |s: Service| format!("http://127.0.0.1:{}", plan.ports.grpc(s));
    let answers = futures::future::join_all(Service::ALL.into_iter().map(|s| async move {
        tokio::time::timeout(Duration::from_secs(2), etl_service::probe_health(&url(s)))
            .await
            .is_ok_and(|r| r.is_ok())
    }))
    .await;
    if !answers.iter().all(|a| *a) {
        return Ok(None);
    }
    std::fs::create_dir_all(plan.dir.root())
        .with_context(|| format!("cannot create {}", plan.dir.root().display()))?;
    let endpoints = Endpoints {
        extractor: url(Service::Extractor),
        gateway: url(Service::SftpGateway),
        connect: url(Service::ConnectManager),
        verifier: url(Service::SinkVerifier),
        jaeger: args
            .endpoints
            .jaeger_url
            .clone()
            .or_else(|| Some(format!("http://127.0.0.1:{}", plan.ports.jaeger))),
    };
    Ok(Some((plan.dir, endpoints)))
}

/// `etlctl report RUN_ID`: the verifier's report now. `Some(passed)` once the run is
/// complete, `None` while it is not.
pub async fn report(args: &ReportArgs) -> anyhow::Result<Option<bool>> {
    let (endpoints, auth) = match args.endpoints.mode {
        StackMode::External => (
            Endpoints::external(&args.endpoints),
            crate::endpoints::client_auth(&args.endpoints.security, None)?,
        ),
        StackMode::Local => {
            let dir = args.dir.stack_dir()?;
            let stack = dir.read_stack()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no stack running in {} (start one with `etlctl up`, or use --stack external)",
                    dir.root().display()
                )
            })?;
            (
                Endpoints::local(&stack, &args.endpoints)?,
                crate::endpoints::client_auth(&args.endpoints.security, Some(&dir))?,
            )
        }
    };
    let mut verifier = SinkVerifierClient::new(channel(&endpoints.verifier, &auth).await?);
    let report = verifier
        .get_report(GetReportRequest {
            run_id: args.run_id.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("SinkVerifier.GetReport failed: {}", s.message()))?
        .into_inner();
    let demo = DemoReport::new(&report, String::new(), 0, Duration::ZERO, None);
    if args.json {
        print!("{}", demo.to_json());
    } else {
        print!("{}", demo.render());
    }
    Ok(demo.complete.then_some(demo.passed))
}

/// The flags `etlctl trace` needs to find what this demo used, beyond the defaults.
fn trace_flags(args: &DemoArgs) -> String {
    let mut flags = String::new();
    if args.stack.dir.dir != std::path::Path::new(".etl") {
        flags.push_str(&format!(" --dir {}", args.stack.dir.dir.display()));
    }
    if args.endpoints.mode == StackMode::External {
        flags.push_str(" --stack external");
    }
    flags
}

/// Waits until the services of an external stack answer SERVING (compose's
/// health gates usually got there first).
async fn wait_serving(endpoints: &Endpoints, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut announced = false;
    loop {
        let probes = futures::future::join_all(Service::ALL.into_iter().map(|s| async move {
            let url = endpoints.grpc_url(s);
            let state =
                match tokio::time::timeout(Duration::from_secs(3), etl_service::probe_health(url))
                    .await
                {
                    Ok(Ok(true)) => None,
                    Ok(Ok(false)) => Some("NOT_SERVING".to_owned()),
                    Ok(Err(e)) => Some(format!("unreachable: {e}")),
                    Err(_) => Some("no answer within 3s".to_owned()),
                };
            state.map(|state| format!("{s} at {url}: {state}"))
        }))
        .await;
        let waiting: Vec<String> = probes.into_iter().flatten().collect();
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the external stack (--stack external) was not serving within {}s:\n  {}\n\
                 check the --extractor-url, --gateway-url, --connect-url and --verifier-url \
                 flags (ETL_*_URL)",
                timeout.as_secs(),
                waiting.join("\n  ")
            );
        }
        if !announced {
            println!("waiting for the external stack: {}", waiting.join("; "));
            announced = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A client that connects on first use and again after each failure: the
/// verifier may be restarting when the demo turns to it.
fn verifier_client(
    url: &str,
    auth: &ClientAuth,
) -> anyhow::Result<SinkVerifierClient<AuthChannel>> {
    let channel = auth
        .connect_lazy(url)
        .with_context(|| format!("{url} is not a usable address"))?;
    Ok(SinkVerifierClient::new(channel))
}

async fn channel(url: &str, auth: &ClientAuth) -> anyhow::Result<AuthChannel> {
    auth.connect(url)
        .await
        .with_context(|| format!("{url} is unreachable (`etlctl status` shows the stack)"))
}

/// A progress bar on a terminal; `None` (plain lines instead) otherwise.
fn bar(len: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    let template = format!(
        "{{spinner}} {what:<8} [{{bar:40}}] {{pos}}/{{len}} rows ({{per_sec}}, {{elapsed}}) {{msg}}"
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    Some(bar)
}

/// Follows the extractor's progress until the run is done. Returns the last progress
/// and whether the deadline passed first.
async fn watch_run(
    client: &mut ExtractorClient<AuthChannel>,
    run_id: &str,
    rows: u64,
    deadline: tokio::time::Instant,
) -> anyhow::Result<(Option<RunProgress>, bool)> {
    let mut stream = client
        .watch_run(WatchRunRequest {
            run_id: run_id.to_owned(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("Extractor.WatchRun failed: {}", s.message()))?
        .into_inner();
    let bar = bar(rows, "extract");
    let mut last: Option<RunProgress> = None;
    let mut last_line = Instant::now();
    let result = loop {
        let message = match tokio::time::timeout_at(deadline, stream.message()).await {
            Err(_) => break Ok(true),
            Ok(Err(status)) => {
                break Err(anyhow::anyhow!(
                    "Extractor.WatchRun of {run_id} failed: {}",
                    status.message()
                ));
            }
            Ok(Ok(None)) => {
                break Err(anyhow::anyhow!(
                    "the extractor stopped reporting run {run_id} before it finished \
                     (see the extractor's log)"
                ));
            }
            Ok(Ok(Some(p))) => p,
        };
        let msg = format!("{} files", message.files);
        match &bar {
            Some(bar) => {
                bar.set_position(message.rows_read);
                bar.set_message(msg);
            }
            None if message.done || last_line.elapsed() >= Duration::from_secs(2) => {
                println!(
                    "extract: {}/{rows} rows read, {} kept, {msg} uploaded",
                    message.rows_read, message.rows_kept
                );
                last_line = Instant::now();
            }
            None => {}
        }
        let done = message.done;
        let error = message.error.clone();
        last = Some(message);
        if !error.is_empty() {
            break Err(anyhow::anyhow!(
                "the extractor failed run {run_id}: {error}"
            ));
        }
        if done {
            break Ok(false);
        }
    };
    if let Some(bar) = bar {
        bar.finish();
    }
    result.map(|timed_out| (last, timed_out))
}

/// What [`watch_report`] saw.
struct Watched {
    /// The last report received (empty when none was).
    report: RunReport,
    /// The deadline passed before the report was complete.
    timed_out: bool,
    /// Why the verifier could not be asked, when its last attempt failed.
    unreachable: Option<String>,
}

/// Follows the verifier's report until it is complete or the deadline passes.
/// Reconnects when the verifier cannot be reached or its stream ends early: a
/// supervised verifier that restarts mid-run comes back and completes the report.
async fn watch_report(
    client: &mut SinkVerifierClient<AuthChannel>,
    url: &str,
    run_id: &str,
    deadline: tokio::time::Instant,
) -> Watched {
    let request = GetReportRequest {
        run_id: run_id.to_owned(),
    };
    let bar = bar(0, "verify");
    let mut last = RunReport {
        run_id: run_id.to_owned(),
        ..RunReport::default()
    };
    let mut last_line = Instant::now();
    let mut unreachable: Option<String> = None;
    let timed_out = 'outer: loop {
        let stream = tokio::time::timeout_at(deadline, client.watch_report(request.clone())).await;
        let mut stream = match stream {
            Err(_) => break true,
            Ok(Ok(stream)) => {
                if unreachable.take().is_some() {
                    println!("verify: the sink-verifier at {url} answers again");
                }
                stream.into_inner()
            }
            Ok(Err(status)) => {
                if unreachable.is_none() {
                    // Once, not per retry: a restart takes seconds.
                    println!(
                        "verify: the sink-verifier at {url} does not answer ({}); waiting for it",
                        status.message()
                    );
                }
                unreachable = Some(status.message().to_owned());
                if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_secs(1)))
                    .await
                    .is_err()
                {
                    break true;
                }
                continue;
            }
        };
        loop {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => break 'outer true,
                Ok(Ok(Some(report))) => {
                    match &bar {
                        Some(bar) => {
                            bar.set_length(report.rows_expected);
                            bar.set_position(report.rows_landed);
                            bar.set_message(format!(
                                "{}/{} files verified",
                                report.files_verified, report.files
                            ));
                        }
                        None if report.complete
                            || last_line.elapsed() >= Duration::from_secs(2) =>
                        {
                            println!(
                                "verify: {}/{} rows landed, {}/{} files verified",
                                report.rows_landed,
                                report.rows_expected,
                                report.files_verified,
                                report.files
                            );
                            last_line = Instant::now();
                        }
                        None => {}
                    }
                    let complete = report.complete;
                    last = report;
                    if complete {
                        break 'outer false;
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    let _ = tokio::time::timeout_at(
                        deadline,
                        tokio::time::sleep(Duration::from_secs(1)),
                    )
                    .await;
                    continue 'outer;
                }
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish();
    }
    Watched {
        report: last,
        timed_out,
        unreachable,
    }
}

/// The verifier's report as it stands (for a run that timed out during extraction).
async fn get_report(client: &mut SinkVerifierClient<AuthChannel>, run_id: &str) -> RunReport {
    let request = GetReportRequest {
        run_id: run_id.to_owned(),
    };
    match tokio::time::timeout(Duration::from_secs(5), client.get_report(request)).await {
        Ok(Ok(report)) => report.into_inner(),
        _ => RunReport {
            run_id: run_id.to_owned(),
            ..RunReport::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use etl_proto::v1::sink_verifier_server::{SinkVerifier, SinkVerifierServer};
    use etl_proto::v1::{
        CompleteRunRequest, CompleteRunResponse, RegisterFileRequest, RegisterFileResponse,
    };
    use futures::Stream;
    use tonic::{Request, Response, Status};

    use super::*;

    /// The verifier's side of `WatchReport` only: one complete report. (The
    /// real verifier needs Postgres; what is tested here is the demo's waiting.)
    struct Complete;

    #[tonic::async_trait]
    impl SinkVerifier for Complete {
        async fn register_file(
            &self,
            _: Request<RegisterFileRequest>,
        ) -> Result<Response<RegisterFileResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn complete_run(
            &self,
            _: Request<CompleteRunRequest>,
        ) -> Result<Response<CompleteRunResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn get_report(
            &self,
            _: Request<GetReportRequest>,
        ) -> Result<Response<RunReport>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        type WatchReportStream = Pin<Box<dyn Stream<Item = Result<RunReport, Status>> + Send>>;

        async fn watch_report(
            &self,
            request: Request<GetReportRequest>,
        ) -> Result<Response<Self::WatchReportStream>, Status> {
            let report = RunReport {
                run_id: request.into_inner().run_id,
                complete: true,
                ..RunReport::default()
            };
            Ok(Response::new(Box::pin(futures::stream::iter([Ok(report)]))))
        }
    }

    #[tokio::test]
    async fn the_demo_waits_for_a_verifier_that_is_not_listening_yet() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            probe.local_addr().expect("addr").port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut client = verifier_client(&url, &ClientAuth::none()).expect("a lazy client");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let started = Instant::now();
        let watching =
            tokio::spawn(async move { watch_report(&mut client, &url, "run-1", deadline).await });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!watching.is_finished(), "nothing listens yet");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the port is still free");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SinkVerifierServer::new(Complete))
                .serve_with_incoming(tokio_stream_of(listener)),
        );
        let watched = tokio::time::timeout(Duration::from_secs(20), watching)
            .await
            .expect("the report comes once the verifier listens")
            .expect("task");
        server.abort();
        assert!(!watched.timed_out);
        assert!(watched.report.complete, "{:?}", watched.report);
        assert_eq!(watched.report.run_id, "run-1");
        assert!(watched.unreachable.is_none());
        assert!(started.elapsed() >= Duration::from_millis(1500));
    }

    /// The listener's connections as the stream tonic serves.
    fn tokio_stream_of(
        listener: tokio::net::TcpListener,
    ) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
        futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| stream);
            Some((accepted, listener))
        })
    }
}
