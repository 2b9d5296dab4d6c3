//! gRPC `etl.v1.Extractor`: `StartRun` starts a run in the background and
//! returns its id; `WatchRun` streams its progress until it is done. And the
//! health loop: SERVING only while the SFTP server accepts a login and the
//! verifier's health answers.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use etl_core::review::LabelScheme;
use etl_proto::v1::{
    RunProgress, StartRunRequest, StartRunResponse, WatchRunRequest, extractor_server::Extractor,
};
use etl_service::{ClientAuth, Health, Shutdown};
use etl_sftp::SftpClient;
use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::{
    Config, Error, InputDirs,
    config::NOT_ALLOWED,
    progress::Progress,
    run::{SourceSpec, extract, resolve_run_id},
};

/// How often a run's progress is published to its watchers.
const TICK: Duration = Duration::from_millis(250);

pub(crate) struct ExtractorApi {
    config: Arc<Config>,
    /// What the run's calls to the gateway and the verifier carry.
    client: ClientAuth,
    input_dirs: InputDirs,
    runs: Arc<Mutex<HashMap<String, watch::Receiver<RunProgress>>>>,
    shutdown: Shutdown,
}

impl ExtractorApi {
    pub(crate) fn new(
        config: Config,
        client: ClientAuth,
        input_dirs: InputDirs,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            config: Arc::new(config),
            client,
            input_dirs,
            runs: Arc::default(),
            shutdown,
        }
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<RunProgress>>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<RunProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Extractor for ExtractorApi {
    type WatchRunStream = ProgressStream;

    async fn start_run(
        &self,
        request: Request<StartRunRequest>,
    ) -> Result<Response<StartRunResponse>, Status> {
        let request = request.into_inner();
        if request.sources.is_empty() {
            return Err(Error::InvalidRequest("no sources: give at least one".into()).into());
        }
        let mut sources = Vec::with_capacity(request.sources.len());
        for s in request.sources {
            let labels = match s.label_scheme.as_str() {
                "" => LabelScheme::Polarity,
                other => other.parse().map_err(Error::InvalidRequest)?,
            };
            // Least power: a caller of the API reads what the operator put in
            // the input directories, nothing else on the host.
            let path = self.input_dirs.resolve(&s.path).ok_or_else(|| {
                tracing::warn!(path = %s.path, "StartRun refused a path outside the input directories");
                Status::permission_denied(format!("source path {:?} {NOT_ALLOWED}", s.path))
            })?;
            sources.push(SourceSpec {
                name: s.name,
                path,
                labels,
            });
        }
        let mut opts = self.config.defaults.options(sources);
        if !request.run_id.is_empty() {
            opts.run_id = Some(request.run_id);
        }
        if request.chunk_size > 0 {
            opts.chunk_size = request.chunk_size as usize;
        }
        opts.upload = Some(
            self.config
                .endpoints
                .upload_target(true, self.client.clone())?,
        );
        let run_id = resolve_run_id(&opts).await?;
        opts.run_id = Some(run_id.clone());

        let progress = Arc::new(Progress::new());
        progress.set_run_id(&run_id);
        let (tx, rx) = watch::channel(progress.snapshot());
        {
            let mut runs = self.runs();
            if runs.get(&run_id).is_some_and(|r| !r.borrow().done) {
                return Err(Error::RunInProgress(run_id).into());
            }
            runs.insert(run_id.clone(), rx);
        }
        tracing::info!(run_id = %run_id, "run requested");
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut run = tokio::spawn(extract(opts, progress.clone(), shutdown));
            let result = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tokio::time::sleep(TICK) => { let _ = tx.send(progress.snapshot()); }
                }
            };
            let mut last = progress.snapshot();
            last.done = true;
            match result {
                Ok(Ok(summary)) => tracing::info!(run_id = %last.run_id, "run done\n{summary}"),
                Ok(Err(e)) => {
                    tracing::error!(run_id = %last.run_id, error = %e, "run failed");
                    last.error = e.to_string();
                }
                Err(e) => last.error = format!("the run's task failed: {e}"),
            }
            let _ = tx.send(last);
        });
        Ok(Response::new(StartRunResponse { run_id }))
    }

    async fn watch_run(
        &self,
        request: Request<WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let run_id = request.into_inner().run_id;
        let rx = self
            .runs()
            .get(&run_id)
            .cloned()
            .ok_or(Error::RunNotFound(run_id))?;
        let updates = futures::stream::unfold(Some((rx, true)), |state| async move {
            let (mut rx, first) = state?;
            if !first && rx.changed().await.is_err() {
                // The run's task is gone without a final message.
                let mut last = rx.borrow().clone();
                if last.done {
                    return None;
                }
                last.done = true;
                last.error = "the run ended without a result".into();
                return Some((Ok(last), None));
            }
            let progress = rx.borrow_and_update().clone();
            let next = (!progress.done).then_some((rx, false));
            Some((Ok(progress), next))
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

/// Checks the dependencies every few seconds and sets the health status.
pub(crate) async fn watch_dependencies(
    config: Arc<Config>,
    client: ClientAuth,
    health: Health,
    shutdown: Shutdown,
) {
    let mut serving = None;
    loop {
        let (ok, why) = check_dependencies(&config, &client).await;
        if serving != Some(ok) {
            if ok {
                tracing::info!("SFTP server and verifier answer: SERVING");
            } else {
                tracing::warn!(reason = %why, "NOT_SERVING");
            }
            health.set(ok).await;
            serving = Some(ok);
        }
        // Quick while waiting (a stack starting up waits on this probe), slow
        // once serving (each check is a login to the SFTP server).
        let pause = if ok {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(200)
        };
        if !shutdown.sleep(pause).await {
            health.set(false).await;
            return;
        }
    }
}

async fn check_dependencies(config: &Config, client: &ClientAuth) -> (bool, String) {
    let sftp = async {
        let cfg = config.endpoints.sftp_config()?;
        let host_keys = config.endpoints.host_keys()?;
        let client = tokio::time::timeout(
            Duration::from_secs(10),
            SftpClient::connect_with(&cfg, &host_keys),
        )
        .await
        .map_err(|_| Error::Config(format!("SFTP server {} does not answer", cfg.server())))??;
        let _ = client.close().await;
        Ok::<_, Error>(())
    };
    if let Err(e) = sftp.await {
        return (false, e.to_string());
    }
    let url = config.endpoints.verifier_url.trim();
    if !url.is_empty() {
        match etl_service::probe_health_with(url, client).await {
            Ok(true) => {}
            Ok(false) => return (false, format!("sink-verifier at {url} is NOT_SERVING")),
            Err(e) => return (false, e.to_string()),
        }
    }
    (true, String::new())
}
