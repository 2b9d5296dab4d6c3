//! Chunk files leave here, over SFTP into `input/`, in an order that keeps the
//! proof whole whatever dies when:
//!
//! 1. the upload is announced to the gateway (best effort), so its FileReady
//!    event joins the chunk's trace;
//! 2. the data is written under the hidden temporary name `input/.{name}.part`,
//!    which no watcher or connector picks up;
//! 3. the manifest is registered with the sink-verifier, `uploaded_at` set to
//!    that moment: the data is complete, only the registration and the rename
//!    remain, and the verifier measures latency from there;
//! 4. the temporary is renamed into place, which publishes the file.
//!
//! Registering before publishing means the verifier knows every file a
//! connector can see: a crash between 3 and 4 leaves a known file that is not
//! published yet (the rerun publishes it), never a published file the verifier
//! does not know. A registration that fails leaves the file unpublished.
//!
//! Failures that may pass (the SFTP connection lost because the gateway
//! restarted, the verifier unreachable while it restarts) are retried with
//! backoff and jitter ([`crate::retry`]) until the per-file deadline: the SFTP
//! session is opened again (the server must present the host key it presented
//! first) and the upload goes on from the step that did not finish; a complete
//! temporary file is not written again. Other failures (login refused, a
//! manifest the verifier refuses) end the run at once.
//!
//! A chunk already in `input/` or `finished/` was published by an earlier
//! attempt of the same run: it is not uploaded again, only registered again
//! (registration is idempotent), so a rerun neither duplicates nor leaves a
//! gap. [`Uploader::remove_stale_parts`] removes the temporaries of the run
//! that a killed upload left behind.

use std::{
    future::Future,
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use etl_core::naming::{is_hidden, parse_chunk_file_name, temp_name};
use etl_proto::v1::{
    AnnounceUploadRequest, CompleteRunRequest, RegisterFileRequest, TraceContext,
    sftp_gateway_client::SftpGatewayClient, sink_verifier_client::SinkVerifierClient,
};
use etl_service::{AuthChannel, ClientAuth, Retry, Shutdown, is_transient};
use etl_sftp::{HostKeyPolicy, SftpClient, SftpConfig, SftpError};
use tokio::sync::Mutex;
use tonic::Code;
use tracing::{Instrument, Span};

use crate::{Error, chunk::ChunkFile};

/// Where new files go, relative to the SFTP user's root.
pub const INPUT_DIR: &str = "input";
/// Where the source connector moves files it has processed.
pub const FINISHED_DIR: &str = "finished";
/// How long one chunk file (or one call of the run) keeps retrying by default.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// Where chunk files are uploaded and who hears about them.
#[derive(Clone, Debug)]
pub struct UploadTarget {
    pub sftp: SftpConfig,
    /// Which host keys to trust. Whatever it says, every session of a run
    /// must meet the key of the run's first session.
    pub host_keys: HostKeyPolicy,
    /// What the gRPC calls to the gateway and the verifier carry (token, CA).
    pub auth: ClientAuth,
    /// gRPC URL of the sftp-gateway for `AnnounceUpload`; `None` = no announcements.
    /// Errors are ignored: a plain SFTP server has no gateway.
    pub gateway_url: Option<String>,
    /// gRPC URL of the sink-verifier; `None` = files are not registered.
    pub verifier_url: Option<String>,
    /// How long one chunk file keeps retrying failures that may pass (and so
    /// do the first login and `CompleteRun`) before the run gives up.
    pub deadline: Duration,
}

/// Calls carry the token and the current span's trace context.
type Traced = AuthChannel;

/// What happened to one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// An earlier attempt had published it already.
    pub skipped: bool,
}

/// The SFTP session of a run, opened again after it broke. `generation`
/// counts sessions, so of several uploads that saw the same session break,
/// only the first drops it.
#[derive(Default)]
struct Session {
    client: Option<SftpClient>,
    generation: u64,
    /// The host key the server presented first; later sessions must match it.
    host_key: Option<String>,
}

/// An SFTP session (reopened when it breaks) plus the gRPC clients of one run.
pub struct Uploader {
    sftp_config: SftpConfig,
    host_keys: HostKeyPolicy,
    server: String,
    session: Mutex<Session>,
    gateway: Option<SftpGatewayClient<Traced>>,
    announce: AtomicBool,
    verifier: Option<(String, SinkVerifierClient<Traced>)>,
    deadline: Duration,
    stop: Shutdown,
    retries: AtomicU64,
}

/// One failed attempt, and whether trying again may help.
struct Failure {
    error: Error,
    /// Who failed, as the final error names it.
    server: String,
    transient: bool,
    /// The SFTP session (generation) that broke and must be opened again.
    broken: Option<u64>,
}

/// The SFTP side or the verifier: who an attempt was waiting for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Step {
    #[default]
    Sftp,
    Verifier,
}

/// How far the upload of one chunk got, across attempts.
#[derive(Debug, Default)]
struct Upload {
    step: Step,
    /// A temporary was (being) written in this run: the chunk is not "skipped".
    wrote_part: bool,
    /// The temporary holds the whole chunk (written and closed).
    part_complete: bool,
    registered: bool,
}

fn channel(auth: &ClientAuth, url: &str, what: &str) -> Result<Traced, Error> {
    Ok(auth.wrap_with(
        auth.endpoint(url)
            .map_err(|e| Error::Config(format!("{what} URL: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(30))
            .connect_lazy(),
        etl_telemetry::grpc::inject,
    ))
}

/// `dir/name` on the server.
fn remote(dir: &str, name: &str) -> String {
    format!("{dir}/{name}")
}

impl Uploader {
    /// Logs in (retrying until the deadline while the server cannot be
    /// reached) and makes sure `input/` exists. `stop` ends every wait for a
    /// retry with [`Error::Cancelled`].
    pub async fn connect(target: &UploadTarget, stop: &Shutdown) -> Result<Self, Error> {
        let gateway = match &target.gateway_url {
            Some(url) => Some(SftpGatewayClient::new(channel(
                &target.auth,
                url,
                "gateway",
            )?)),
            None => None,
        };
        let verifier = match &target.verifier_url {
            Some(url) => Some((
                url.clone(),
                SinkVerifierClient::new(channel(&target.auth, url, "verifier")?),
            )),
            None => None,
        };
        let uploader = Self {
            sftp_config: target.sftp.clone(),
            host_keys: target.host_keys.clone(),
            server: target.sftp.server(),
            session: Mutex::default(),
            announce: AtomicBool::new(gateway.is_some()),
            gateway,
            verifier,
            deadline: target.deadline,
            stop: stop.clone(),
            retries: AtomicU64::new(0),
        };
        let what = format!("login to SFTP server {}", uploader.server);
        let this = &uploader;
        let host_key = this
            .retrying(&what, Step::Sftp, || async move {
                let (sftp, generation) = this.session().await?;
                sftp.mkdir_all(INPUT_DIR)
                    .await
                    .map_err(|e| this.sftp_failure(e, generation))?;
                Ok(sftp.host_key_fingerprint().to_string())
            })
            .await?;
        tracing::info!(
            server = %uploader.server,
            user = %target.sftp.user,
            host_key = %host_key,
            gateway = ?target.gateway_url,
            verifier = ?target.verifier_url,
            deadline_s = uploader.deadline.as_secs(),
            "uploading chunk files"
        );
        Ok(uploader)
    }

    /// Failures retried so far (lost connections, verifier unavailable).
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// The open session, or a new one (same host key as the first) when the
    /// last one broke.
    async fn session(&self) -> Result<(SftpClient, u64), Failure> {
        let mut s = self.session.lock().await;
        if let Some(client) = &s.client {
            return Ok((client.clone(), s.generation));
        }
        let opened = match &s.host_key {
            Some(key) => SftpClient::connect_pinned(&self.sftp_config, key).await,
            None => SftpClient::connect_with(&self.sftp_config, &self.host_keys).await,
        };
        let client = opened.map_err(|e| {
            let transient = e.is_connection();
            Failure {
                error: e.into(),
                server: format!("SFTP server {}", self.server),
                transient,
                broken: None,
            }
        })?;
        s.generation += 1;
        if s.host_key.is_some() {
            tracing::info!(server = %self.server, session = s.generation, "SFTP session opened again");
        }
        s.host_key = Some(client.host_key_fingerprint().to_string());
        s.client = Some(client.clone());
        Ok((client, s.generation))
    }

    /// Forgets session `generation` (it broke), unless a newer one replaced it.
    async fn drop_session(&self, generation: u64) {
        let mut s = self.session.lock().await;
        if s.generation == generation && s.client.take().is_some() {
            tracing::warn!(server = %self.server, session = generation, "SFTP session lost; it will be opened again");
        }
    }

    fn sftp_failure(&self, e: SftpError, generation: u64) -> Failure {
        let broken = e.is_connection();
        // A plain failure status is what a server that is shutting down
        // answers to a new upload (the sftp-gateway: "server is shutting
        // down; upload again later"), and what a full disk gives: both may
        // pass, and the deadline bounds the wait. Refused logins, permissions
        // and host keys will not pass by waiting.
        let transient = broken || matches!(e, SftpError::Remote { .. });
        Failure {
            error: e.into(),
            server: format!("SFTP server {}", self.server),
            transient,
            broken: broken.then_some(generation),
        }
    }

    fn verifier_failure(url: &str, call: &str, status: &tonic::Status) -> Failure {
        Failure {
            error: Error::Verifier {
                url: url.to_string(),
                reason: format!("{call}: {} ({:?})", status.message(), status.code()),
            },
            server: format!("sink-verifier at {url}"),
            transient: is_transient(status.code()),
            broken: None,
        }
    }

    /// An attempt still waiting for `step` when the deadline passed.
    fn no_answer(&self, step: Step) -> Failure {
        let reason = "no answer before the deadline".to_string();
        match (step, &self.verifier) {
            (Step::Verifier, Some((url, _))) => Failure {
                error: Error::Verifier {
                    url: url.clone(),
                    reason,
                },
                server: format!("sink-verifier at {url}"),
                transient: true,
                broken: None,
            },
            _ => Failure {
                error: Error::Sftp(SftpError::Connection {
                    server: self.server.clone(),
                    user: self.sftp_config.user.clone(),
                    op: "upload",
                    path: INPUT_DIR.to_string(),
                    reason,
                }),
                server: format!("SFTP server {}", self.server),
                transient: true,
                broken: None,
            },
        }
    }

    /// After a failed attempt of `what`: `Ok` to try again (after a pause),
    /// or the error that ends it.
    async fn recover(&self, retry: &mut Retry, what: &str, failure: Failure) -> Result<(), Error> {
        if let Some(generation) = failure.broken {
            self.drop_session(generation).await;
        }
        if !failure.transient {
            return Err(failure.error);
        }
        let Some(pause) = retry.next_pause() else {
            return Err(Error::GaveUp {
                what: what.to_string(),
                server: failure.server,
                secs: retry.elapsed().as_secs(),
                attempts: retry.attempts,
                last: failure.error.to_string(),
            });
        };
        self.retries.fetch_add(1, Relaxed);
        tracing::warn!(
            what,
            attempt = retry.attempts,
            error = %failure.error,
            retry_in_ms = pause.as_millis() as u64,
            "failed; retrying"
        );
        if retry.wait(pause, &self.stop).await {
            Ok(())
        } else {
            Err(Error::Cancelled)
        }
    }

    /// Runs `attempt` until it succeeds, retrying failures that may pass.
    async fn retrying<T, F, Fut>(&self, what: &str, step: Step, mut attempt: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut retry = Retry::new(self.deadline);
        loop {
            let failure = match tokio::time::timeout(retry.remaining(), attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(f)) => f,
                Err(_) => self.no_answer(step),
            };
            self.recover(&mut retry, what, failure).await?;
        }
    }

    /// Removes this run's temporaries from `input/` (`.{run_id}__….part`),
    /// left there by an upload that was killed; temporaries of other runs may
    /// be uploads in progress and stay. Returns how many were removed.
    pub async fn remove_stale_parts(&self, run_id: &str) -> Result<u64, Error> {
        let what = format!("removing stale temporaries of run {run_id} from {INPUT_DIR}/");
        self.retrying(&what, Step::Sftp, || async move {
            let (sftp, generation) = self.session().await?;
            let entries = sftp
                .list(INPUT_DIR)
                .await
                .map_err(|e| self.sftp_failure(e, generation))?;
            let mut removed = 0;
            for entry in entries.iter().filter(|e| !e.is_dir) {
                if !is_stale_part_of(&entry.name, run_id) {
                    continue;
                }
                match sftp.remove(&remote(INPUT_DIR, &entry.name)).await {
                    Ok(()) => {
                        tracing::info!(file = %entry.name, bytes = entry.size, "removed a temporary left by an interrupted upload of this run");
                        removed += 1;
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(self.sftp_failure(e, generation)),
                }
            }
            Ok(removed)
        })
        .await
    }

    /// When an earlier attempt published `name` (its modification time), if it did.
    async fn published(&self, sftp: &SftpClient, name: &str) -> Result<Option<i64>, SftpError> {
        // input/ first: the connector moves input/ → finished/, so this order
        // cannot miss a file that moves between the two looks.
        for dir in [INPUT_DIR, FINISHED_DIR] {
            match sftp.stat(&remote(dir, name)).await {
                Ok(entry) => {
                    let at = entry
                        .modified_unix
                        .map(|s| s as i64 * 1000)
                        .unwrap_or_else(etl_core::time::now_unix_ms);
                    return Ok(Some(at));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Uploads (unless already published), registers, then publishes one
    /// chunk; `chunk_span` is its `extract.chunk` span, the root of the
    /// file's trace.
    pub async fn deliver(&self, chunk: &ChunkFile, chunk_span: &Span) -> Result<Delivered, Error> {
        let traceparent = etl_telemetry::context::traceparent_of(chunk_span).unwrap_or_default();
        let what = format!("chunk file {}", chunk.name);
        let mut upload = Upload::default();
        let mut retry = Retry::new(self.deadline);
        loop {
            let attempt = self.try_deliver(chunk, &traceparent, chunk_span, &mut upload);
            let failure = match tokio::time::timeout(retry.remaining(), attempt).await {
                Ok(Ok(delivered)) => return Ok(delivered),
                Ok(Err(f)) => f,
                Err(_) => self.no_answer(upload.step),
            };
            if let Err(e) = self.recover(&mut retry, &what, failure).await {
                if upload.wrote_part && !matches!(e, Error::Cancelled) {
                    self.discard_part(&chunk.name).await;
                }
                return Err(e);
            }
        }
    }

    /// One attempt, going on from where the last one stopped (`upload`).
    async fn try_deliver(
        &self,
        chunk: &ChunkFile,
        traceparent: &str,
        chunk_span: &Span,
        upload: &mut Upload,
    ) -> Result<Delivered, Failure> {
        upload.step = Step::Sftp;
        let (sftp, generation) = self.session().await?;
        let sftp_failure = |e| self.sftp_failure(e, generation);
        let name = &chunk.name;
        if let Some(at) = self.published(&sftp, name).await.map_err(sftp_failure)? {
            if !upload.registered {
                // Published by an earlier run (which registered it too, before
                // publishing): registering again is harmless and heals a
                // verifier that lost it.
                if !upload.wrote_part {
                    tracing::info!(file = %name, "already uploaded by an earlier attempt of this run; not uploading again");
                }
                upload.step = Step::Verifier;
                self.register(chunk, at, traceparent, chunk_span).await?;
            }
            // Else our own rename went through before the connection broke.
            return Ok(Delivered {
                skipped: !upload.wrote_part,
            });
        }

        let part = remote(INPUT_DIR, &temp_name(name));
        let len = chunk.data.len() as u64;
        let whole = upload.part_complete
            && match sftp.stat(&part).await {
                Ok(entry) => entry.size == len,
                Err(e) if e.is_not_found() => false,
                Err(e) => return Err(sftp_failure(e)),
            };
        if !whole {
            self.announce(name, traceparent).await;
            let span = tracing::info_span!(
                parent: chunk_span,
                "sftp.upload",
                file = %name,
                bytes = len,
                otel.kind = "client",
            );
            upload.wrote_part = true;
            upload.part_complete = false;
            sftp.write(&part, &chunk.data)
                .instrument(span)
                .await
                .map_err(sftp_failure)?;
            upload.part_complete = true;
        }

        if !upload.registered {
            upload.step = Step::Verifier;
            self.register(
                chunk,
                etl_core::time::now_unix_ms(),
                traceparent,
                chunk_span,
            )
            .await?;
            upload.registered = true;
            upload.step = Step::Sftp;
        }

        match sftp.rename(&part, &remote(INPUT_DIR, name)).await {
            Ok(()) => Ok(Delivered { skipped: false }),
            // The temporary is gone (removed by someone else): write it again.
            Err(e) if e.is_not_found() => {
                upload.part_complete = false;
                Err(Failure {
                    error: e.into(),
                    server: format!("SFTP server {}", self.server),
                    transient: true,
                    broken: None,
                })
            }
            Err(e) => Err(sftp_failure(e)),
        }
    }

    /// Best effort, after giving up on a chunk: remove its temporary, so
    /// nothing half-done stays behind (a rerun would remove it anyway).
    async fn discard_part(&self, name: &str) {
        let part = remote(INPUT_DIR, &temp_name(name));
        let discard = async {
            let (sftp, _) = self.session().await.ok()?;
            sftp.remove(&part).await.ok()
        };
        if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(2), discard).await {
            tracing::info!(file = %part, "removed the temporary of a chunk file that was given up");
        }
    }

    /// Best effort: a server that is no sftp-gateway (or does not answer at
    /// all) is not asked again this run; one that is restarting is skipped
    /// this time only.
    async fn announce(&self, name: &str, traceparent: &str) {
        let Some(gateway) = &self.gateway else { return };
        if !self.announce.load(Relaxed) {
            return;
        }
        let request = AnnounceUploadRequest {
            user: self.sftp_config.user.clone(),
            path: remote(INPUT_DIR, name),
            trace: Some(TraceContext {
                traceparent: traceparent.to_string(),
                tracestate: String::new(),
            }),
        };
        let mut gateway = gateway.clone();
        let call = gateway.announce_upload(request);
        match tokio::time::timeout(Duration::from_secs(3), call).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_transient(e.code()) && e.code() != Code::DeadlineExceeded => {
                tracing::info!(file = %name, error = %e.message(), "the sftp-gateway did not take this upload's announcement (restarting?); uploading without");
            }
            Ok(Err(e)) => {
                self.announce.store(false, Relaxed);
                tracing::info!(error = %e.message(), "the SFTP server takes no upload announcements (not an sftp-gateway?); uploading without");
            }
            Err(_) => {
                self.announce.store(false, Relaxed);
                tracing::info!(
                    "no answer from the sftp-gateway to an upload announcement; uploading without"
                );
            }
        }
    }

    /// One `RegisterFile` call (retried by the caller).
    async fn register(
        &self,
        chunk: &ChunkFile,
        uploaded_at_unix_ms: i64,
        traceparent: &str,
        chunk_span: &Span,
    ) -> Result<(), Failure> {
        let Some((url, client)) = &self.verifier else {
            return Ok(());
        };
        let manifest = chunk.manifest.to_proto(uploaded_at_unix_ms, traceparent);
        let span = tracing::info_span!(
            parent: chunk_span,
            "verifier.register",
            file = %chunk.name,
            rows = chunk.manifest.row_count,
            otel.kind = "client",
        );
        let mut client = client.clone();
        client
            .register_file(RegisterFileRequest {
                manifest: Some(manifest),
            })
            .instrument(span)
            .await
            .map(|_| ())
            .map_err(|s| Self::verifier_failure(url, "RegisterFile", &s))
    }

    /// Tells the verifier the run has `files` files in all.
    pub async fn complete(&self, run_id: &str, files: u64) -> Result<(), Error> {
        let Some((url, client)) = &self.verifier else {
            return Ok(());
        };
        let what = format!("CompleteRun of run {run_id}");
        self.retrying(&what, Step::Verifier, || {
            let mut client = client.clone();
            let request = CompleteRunRequest {
                run_id: run_id.to_string(),
                files,
            };
            async move {
                client
                    .complete_run(request)
                    .await
                    .map(|_| ())
                    .map_err(|s| Self::verifier_failure(url, "CompleteRun", &s))
            }
        })
        .await
    }
}

/// Whether `name` (in `input/`) is the temporary of a chunk of `run_id`.
fn is_stale_part_of(name: &str, run_id: &str) -> bool {
    is_hidden(name)
        && name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".part"))
            .and_then(parse_chunk_file_name)
            .is_some_and(|(run, _, _)| run == run_id)
}

#[cfg(test)]
mod tests {
    use etl_core::naming::chunk_file_name;

    use super::*;

    #[test]
    fn stale_parts_are_only_this_runs_temporaries() {
        let mine = temp_name(&chunk_file_name("run-a", "train", 3));
        assert!(is_stale_part_of(&mine, "run-a"));
        assert!(!is_stale_part_of(&mine, "run-b"));
        assert!(!is_stale_part_of(&mine, "run"));
        let other = temp_name(&chunk_file_name("run-ab", "train", 3));
        assert!(!is_stale_part_of(&other, "run-a"));
        assert!(!is_stale_part_of(
            &chunk_file_name("run-a", "train", 3),
            "run-a"
        ));
        assert!(!is_stale_part_of(".run-a__notes.txt", "run-a"));
    }
}
