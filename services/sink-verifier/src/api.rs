//! The gRPC face of the verifier (`etl.v1.SinkVerifier`): the extractor registers
//! files and completes runs; anyone asks for or watches a run's report.
//!
//! RegisterFile and CompleteRun answer only once the store has them, so an
//! extractor that got OK can rely on it surviving any crash of the verifier;
//! while Postgres is away they answer UNAVAILABLE, and the extractor retries.
//! GetReport and WatchReport give the report as stored, so two verifiers on
//! one database give the same figures whichever registered the run's files.

use std::{pin::Pin, sync::Arc};

use etl_proto::v1::{
    CompleteRunRequest, CompleteRunResponse, GetReportRequest, RegisterFileRequest,
    RegisterFileResponse, RunReport, sink_verifier_server::SinkVerifier,
};
use etl_service::Shutdown;
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::{
    manifest::Manifest,
    registry::{Registry, Subscription},
    store::Registration,
    watch::Wake,
};

pub(crate) struct Api {
    registry: Arc<Registry>,
    wake_tx: mpsc::UnboundedSender<Wake>,
    shutdown: Shutdown,
}

impl Api {
    pub(crate) fn new(
        registry: Arc<Registry>,
        wake_tx: mpsc::UnboundedSender<Wake>,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            registry,
            wake_tx,
            shutdown,
        }
    }
}

type ReportStream = Pin<Box<dyn Stream<Item = Result<RunReport, Status>> + Send>>;

#[tonic::async_trait]
impl SinkVerifier for Api {
    async fn register_file(
        &self,
        request: Request<RegisterFileRequest>,
    ) -> Result<Response<RegisterFileResponse>, Status> {
        let manifest = request
            .into_inner()
            .manifest
            .ok_or_else(|| Status::invalid_argument("RegisterFileRequest.manifest is missing"))?;
        let manifest = Manifest::try_from(manifest)?;
        let (file, run, rows) = (
            manifest.file_name.clone(),
            manifest.run_id.clone(),
            manifest.row_count,
        );
        if let Registration::New { rejected, .. } = self.registry.register(manifest).await? {
            tracing::info!(file = %file, run = %run, rows, rejected = rejected.is_some(), "file registered");
            // The rows may have landed before the manifest: look now.
            let _ = self.wake_tx.send(Wake::File(file));
        }
        Ok(Response::new(RegisterFileResponse {}))
    }

    async fn complete_run(
        &self,
        request: Request<CompleteRunRequest>,
    ) -> Result<Response<CompleteRunResponse>, Status> {
        let req = request.into_inner();
        self.registry.complete(&req.run_id, req.files).await?;
        tracing::info!(run = %req.run_id, files = req.files, "run completed");
        Ok(Response::new(CompleteRunResponse {}))
    }

    async fn get_report(
        &self,
        request: Request<GetReportRequest>,
    ) -> Result<Response<RunReport>, Status> {
        let report = self.registry.report(&request.into_inner().run_id).await?;
        Ok(Response::new(report))
    }

    type WatchReportStream = ReportStream;

    async fn watch_report(
        &self,
        request: Request<GetReportRequest>,
    ) -> Result<Response<Self::WatchReportStream>, Status> {
        let run_id = request.into_inner().run_id;
        let (tx, rx) = mpsc::channel(4);
        let mut changes = match self.registry.subscribe(&run_id).await? {
            Subscription::Live(changes) => changes,
            Subscription::Finished(report) => {
                // The run is over: its final report, and the end of the stream.
                let _ = tx.send(Ok(report)).await;
                return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
            }
        };
        let shutdown = self.shutdown.clone();
        let registry = self.registry.clone();
        tokio::spawn(async move {
            let mut sent: Option<RunReport> = None;
            loop {
                // A change in this verifier's copy of the run is the signal;
                // what is sent is the stored report, the one every verifier
                // gives. Only the latest matters: a slow reader skips states
                // rather than queueing them.
                changes.borrow_and_update();
                let read_at = tokio::time::Instant::now();
                let report = registry.report(&run_id).await;
                let complete = report.as_ref().is_ok_and(|r| r.complete);
                let failed = report.is_err();
                if !send_if_new(&tx, &mut sent, report).await || complete || failed {
                    return;
                }
                // The stored report is read whole, and a burst changes the run
                // with every file checked (70 times a second): read again at
                // most every REPORT_EVERY, except for the end, sent at once.
                // Reading it per change made a run of n files read n² rows.
                let next_read = read_at + REPORT_EVERY;
                let mut changed_since = false;
                loop {
                    tokio::select! {
                        changed = changes.changed() => {
                            if changed.is_err() {
                                // The run left memory: it ended (here, or in
                                // another verifier). Its stored end.
                                let last = registry.report(&run_id).await;
                                send_if_new(&tx, &mut sent, last).await;
                                return;
                            }
                            changed_since = true;
                            if changes.borrow().complete {
                                break;
                            }
                        }
                        _ = tokio::time::sleep_until(next_read), if changed_since => break,
                        _ = tx.closed() => return,
                        _ = shutdown.wait() => {
                            let _ = tx.send(Err(Status::unavailable("sink-verifier is shutting down"))).await;
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// How often a report watcher's stream reads the stored report while the run
/// keeps changing (a run's end is sent at once).
const REPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Sends `report` unless it is the one sent last; `false` once the reader is gone.
async fn send_if_new(
    tx: &mpsc::Sender<Result<RunReport, Status>>,
    sent: &mut Option<RunReport>,
    report: Result<RunReport, crate::Error>,
) -> bool {
    match report {
        Ok(report) if sent.as_ref() == Some(&report) => true,
        Ok(report) => {
            *sent = Some(report.clone());
            tx.send(Ok(report)).await.is_ok()
        }
        Err(e) => tx.send(Err(e.into())).await.is_ok(),
    }
}
