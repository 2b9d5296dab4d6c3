//! When to check: the sink's `NOTIFY etl_rows, '<file>'` (sent in the same
//! transaction as the rows, so they are visible when it arrives), a registration
//! (the rows may already be there), and a periodic poll of every unverified file
//! (a NOTIFY is lost while we are disconnected, and a sink need not send one).
//!
//! Two connections: one only listens, so a long check never delays a
//! notification; the other runs the checks, one file at a time. Either going
//! away turns health NOT_SERVING and starts a reconnect with
//! [`etl_service::retry`]; after reconnecting the runs are reloaded from the
//! store and every unverified file is checked, since notifications sent
//! meanwhile are lost. The poll also syncs memory with the store (runs another
//! verifier registered, or finished).
//!
//! The listener notes when each file's latest NOTIFY arrived: Postgres delivers
//! a notification when its transaction commits, so that time is when the
//! file's rows committed (see the crate docs on latency). A NOTIFY naming a
//! file no run in memory holds is looked up in the store after a short quiet
//! period (a file of a finished run: nothing to do, but drop the run from
//! memory if another verifier ended it; of an unfinished run: load it;
//! registered nowhere: look for content duplicates).
//!
//! Beside another verifier on the same database, both hear every NOTIFY and
//! check the same files: the store keeps the first verified check and ignores
//! the other (see [`crate::store`]), so the work is done twice but counted once.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use etl_core::time::now_unix_ms;
use etl_pg::notify::CHANNEL;
use etl_service::{Health, Shutdown};
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};
use tokio_postgres::Client;

use crate::{
    Error, duplicates,
    manifest::Manifest,
    registry::{Lookup, Recorded, Registry},
    report::latency_ms,
    verify::{FileCheck, Verifier, trace_outcome},
};

/// How long a file nobody holds must be quiet (no further NOTIFY) before its
/// rows are read: a large file arrives in many batches, each with a NOTIFY.
const UNKNOWN_SETTLE: Duration = Duration::from_millis(200);

/// How long a NOTIFY time is kept for a file nobody has registered yet.
const NOTIFIED_TTL_MS: i64 = 10 * 60 * 1000;

/// A reason to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    /// This file's rows may have landed (NOTIFY payload or registration).
    File(String),
    /// Check every unverified file.
    All,
}

/// When the latest NOTIFY of each file arrived (Unix ms), written by the
/// listening connection's task.
#[derive(Debug, Default)]
pub(crate) struct Notified(Mutex<HashMap<String, i64>>);

impl Notified {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note(&self, file: &str, at_unix_ms: i64) {
        self.lock().insert(file.to_string(), at_unix_ms);
    }

    fn latest(&self, file: &str) -> Option<i64> {
        self.lock().get(file).copied()
    }

    fn forget(&self, file: &str) {
        self.lock().remove(file);
    }

    fn prune(&self, now_unix_ms: i64) {
        self.lock()
            .retain(|_, at| now_unix_ms.saturating_sub(*at) < NOTIFIED_TTL_MS);
    }
}

/// When a verified file's rows committed: the commit timestamp Postgres
/// recorded, else when its latest NOTIFY arrived, else (neither known, e.g. the
/// rows landed while this verifier was down and commit timestamps are off) the
/// latest `_etl_loaded_at`, the start of the writing transaction.
pub(crate) fn committed_at(check: &FileCheck, notified_at: Option<i64>) -> Option<i64> {
    check
        .last_commit_unix_ms
        .or(notified_at)
        .or(check.last_loaded_at_unix_ms)
}

/// The background task that keeps the verifier connected and checking.
pub(crate) struct Watcher {
    pub(crate) db: tokio_postgres::Config,
    pub(crate) table: String,
    pub(crate) poll_interval: Duration,
    pub(crate) registry: Arc<Registry>,
    pub(crate) wake_tx: mpsc::UnboundedSender<Wake>,
    pub(crate) wake_rx: mpsc::UnboundedReceiver<Wake>,
    pub(crate) health: Health,
    pub(crate) shutdown: Shutdown,
}

struct Session {
    client: Client,
    conn: JoinHandle<()>,
    /// Kept so the listening connection stays open.
    _listen: Client,
    listen_conn: JoinHandle<()>,
}

enum Ended {
    Shutdown,
    Lost,
}

impl Watcher {
    pub(crate) async fn run(mut self) {
        let server = etl_pg::describe(&self.db);
        let mut verifier = Verifier::new(&self.table, &server);
        let notified = Arc::new(Notified::default());
        loop {
            self.health.set(false).await;
            let session = etl_service::retry("postgres", &self.shutdown, || {
                connect(
                    &self.db,
                    &server,
                    &self.registry,
                    self.wake_tx.clone(),
                    notified.clone(),
                )
            })
            .await;
            let Some(session) = session else { return };
            let commit_timestamps = verifier.detect_commit_timestamps(&session.client).await;
            tracing::info!(
                database = %server,
                table = %self.table,
                channel = CHANNEL,
                latency_ends_at = if commit_timestamps { "commit timestamp" } else { "NOTIFY receipt" },
                "listening for rows"
            );
            self.health.set(true).await;
            match self.session(session, &mut verifier, &notified).await {
                Ended::Shutdown => return,
                Ended::Lost => {
                    tracing::warn!(database = %server, "lost the Postgres connection, reconnecting");
                }
            }
        }
    }

    async fn session(
        &mut self,
        mut s: Session,
        verifier: &mut Verifier,
        notified: &Notified,
    ) -> Ended {
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the session starts with a full check anyway.
        tick.tick().await;
        let mut warned: HashMap<String, String> = HashMap::new();
        // Files no run in memory holds, with when to look at them.
        let mut unknown: BTreeMap<String, Instant> = BTreeMap::new();
        // Whatever was announced while we were away is lost: look at everything.
        let mut pending = self.collect(Wake::All, BTreeMap::new(), &mut unknown);
        loop {
            if !pending.is_empty() {
                let files = std::mem::take(&mut pending);
                if let Some(end) = self
                    .check_files(&s.client, verifier, files, notified, &mut warned)
                    .await
                {
                    return end;
                }
            }
            let next_unknown = unknown.values().min().copied();
            tokio::select! {
                biased;
                _ = self.shutdown.wait() => return Ended::Shutdown,
                _ = &mut s.conn => return Ended::Lost,
                _ = &mut s.listen_conn => return Ended::Lost,
                Some(wake) = self.wake_rx.recv() => {
                    pending = self.collect(wake, pending, &mut unknown);
                    // Drain the burst: one NOTIFY per file per transaction.
                    while let Ok(wake) = self.wake_rx.try_recv() {
                        pending = self.collect(wake, pending, &mut unknown);
                    }
                }
                _ = tick.tick() => {
                    notified.prune(now_unix_ms());
                    if let Err(e) = self.registry.sync().await {
                        tracing::warn!(error = %e, "cannot sync runs with the store; will retry");
                    }
                    pending = self.collect(Wake::All, pending, &mut unknown);
                }
                _ = sleep_until_some(next_unknown) => {
                    let now = Instant::now();
                    let due: Vec<String> = unknown
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(name, _)| name.clone())
                        .collect();
                    for name in due {
                        unknown.remove(&name);
                        if let Some(m) = self.unknown_file(&s.client, verifier, &name).await {
                            pending.insert(name, m);
                        }
                        if s.client.is_closed() {
                            return Ended::Lost;
                        }
                    }
                }
            }
        }
    }

    /// Adds the unverified files `wake` names to `pending` (a notification for a
    /// verified file needs no check); a file memory does not hold goes to
    /// `unknown`.
    fn collect(
        &self,
        wake: Wake,
        mut pending: BTreeMap<String, Arc<Manifest>>,
        unknown: &mut BTreeMap<String, Instant>,
    ) -> BTreeMap<String, Arc<Manifest>> {
        match wake {
            Wake::File(name) => match self.registry.lookup(&name) {
                Lookup::Unverified(m) => {
                    pending.insert(name, m);
                }
                Lookup::Done => {}
                Lookup::Unknown => {
                    unknown
                        .entry(name)
                        .or_insert_with(|| Instant::now() + UNKNOWN_SETTLE);
                }
            },
            Wake::All => {
                for m in self.registry.unverified() {
                    pending.insert(m.file_name.clone(), m);
                }
            }
        }
        pending
    }

    /// A NOTIFY named `file`, which memory does not hold. Returns its manifest
    /// if it turns out to be a file to check.
    async fn unknown_file(
        &self,
        client: &Client,
        verifier: &mut Verifier,
        file: &str,
    ) -> Option<Arc<Manifest>> {
        let looked_up = async {
            match self.registry.store().run_of_file(file).await? {
                // A replay of a file whose run finished: already proven. If we
                // still hold the run, another verifier ended it: let it go.
                Some((run_id, true)) => {
                    if self.registry.holds(&run_id) {
                        self.registry.adopt(&run_id).await?;
                    }
                    Ok(None)
                }
                Some((run_id, false)) => {
                    // Registered through another verifier, or just now.
                    self.registry.adopt(&run_id).await?;
                    Ok(match self.registry.lookup(file) {
                        Lookup::Unverified(m) => Some(m),
                        Lookup::Done | Lookup::Unknown => None,
                    })
                }
                None => {
                    duplicates::unknown_file(&self.registry, client, verifier, file).await?;
                    Ok::<_, Error>(None)
                }
            }
        };
        match looked_up.await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(file, error = %e, "cannot look at the rows of an unregistered file");
                None
            }
        }
    }

    /// Checks `files` one by one; `Some` when the session must end.
    async fn check_files(
        &self,
        client: &Client,
        verifier: &mut Verifier,
        files: BTreeMap<String, Arc<Manifest>>,
        notified: &Notified,
        warned: &mut HashMap<String, String>,
    ) -> Option<Ended> {
        for (name, manifest) in files {
            if self.shutdown.is_triggered() {
                return Some(Ended::Shutdown);
            }
            let checked = match verifier.check(client, &manifest).await {
                Ok(check) => {
                    // Read after the check: a NOTIFY of rows the check saw has
                    // arrived by now (it is sent at their commit, before our read).
                    let committed = committed_at(&check, notified.latest(&name));
                    self.registry
                        .record(&name, check.clone(), committed)
                        .await
                        .map(|recorded| (recorded, check, committed))
                }
                Err(e) => Err(e),
            };
            match checked {
                Ok((recorded, check, committed)) => {
                    warned.remove(&name);
                    match recorded {
                        Recorded::Verified => {
                            notified.forget(&name);
                            let latency = committed
                                .map_or(0, |t| latency_ms(manifest.uploaded_at_unix_ms, t));
                            trace_outcome(&manifest, &check, latency);
                        }
                        Recorded::FirstProblem => trace_outcome(&manifest, &check, 0),
                        Recorded::Unchanged => {}
                    }
                }
                Err(e) => {
                    if client.is_closed() {
                        return Some(Ended::Lost);
                    }
                    // The poll repeats a failing check every interval: say it once.
                    let message = e.to_string();
                    if warned.get(&name) != Some(&message) {
                        tracing::warn!(file = %name, error = %message, "cannot check file; will retry");
                        warned.insert(name, message);
                    }
                }
            }
        }
        client.is_closed().then_some(Ended::Lost)
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn connect(
    db: &tokio_postgres::Config,
    server: &str,
    registry: &Registry,
    wake_tx: mpsc::UnboundedSender<Wake>,
    notified: Arc<Notified>,
) -> Result<Session, Error> {
    let pg_error = |what: &str| {
        let server = server.to_string();
        let what = what.to_string();
        move |source| Error::Postgres {
            server,
            what,
            source,
        }
    };
    let (client, conn) = etl_pg::connect(db, "checks")
        .await
        .map_err(pg_error("connecting (checks)"))?;
    // Postgres delivers a NOTIFY at its transaction's commit: its arrival time
    // is the rows' commit time (see the crate docs on latency).
    let (listen, listen_conn) = etl_pg::notify::listen(db, move |file| {
        notified.note(file, now_unix_ms());
        let _ = wake_tx.send(Wake::File(file.to_string()));
    })
    .await
    .map_err(|e| {
        let what = e.step();
        pg_error(&what)(e.into_source())
    })?;
    // The schema, then every unfinished run (all of them after a restart).
    registry.sync().await?;
    Ok(Session {
        client,
        conn,
        _listen: listen,
        listen_conn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_time_prefers_what_postgres_recorded() {
        let check = FileCheck {
            last_loaded_at_unix_ms: Some(1_000),
            last_commit_unix_ms: Some(1_300),
            ..FileCheck::default()
        };
        assert_eq!(committed_at(&check, Some(1_200)), Some(1_300));
        let check = FileCheck {
            last_commit_unix_ms: None,
            ..check
        };
        assert_eq!(committed_at(&check, Some(1_200)), Some(1_200));
        assert_eq!(committed_at(&check, None), Some(1_000));
        assert_eq!(committed_at(&FileCheck::default(), None), None);
    }

    #[test]
    fn notify_times_are_kept_for_a_while() {
        let n = Notified::default();
        n.note("a.csv", 1_000);
        n.note("a.csv", 2_000);
        n.note("b.csv", 1_000 + NOTIFIED_TTL_MS);
        assert_eq!(n.latest("a.csv"), Some(2_000));
        n.prune(2_000 + NOTIFIED_TTL_MS);
        assert_eq!(n.latest("a.csv"), None);
        assert_eq!(n.latest("b.csv"), Some(1_000 + NOTIFIED_TTL_MS));
        n.forget("b.csv");
        assert_eq!(n.latest("b.csv"), None);
    }
}
