//! When to check: the sink's `NOTIFY etl_rows, '<file>'` (sent in the same
//! transaction as the rows, so they are visible when it arrives), a registration
//! (the rows may already be there), and a periodic poll of every unverified file
//! (a NOTIFY is lost while we are disconnected, and a sink need not send one).
//!
//! Two connections: one only listens, so a long check never delays a
//! notification; the other runs the checks, one file at a time. Either going
//! away turns health NOT_SERVING and starts a reconnect with
//! [`etl_service::retry`]; after reconnecting every unverified file is checked,
//! since notifications sent meanwhile are lost.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use etl_service::{Health, Shutdown};
use futures::future::poll_fn;
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_postgres::{AsyncMessage, Client, NoTls, config::Host};

use crate::{
    Error,
    manifest::{Manifest, Recorded, Registry},
    verify::{Verifier, trace_outcome},
};

/// The channel the sink notifies on.
pub const CHANNEL: &str = "etl_rows";

/// A reason to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wake {
    /// This file's rows may have landed (NOTIFY payload or registration).
    File(String),
    /// Check every unverified file.
    All,
}

/// A database URL for logs and errors: user, hosts, ports and database, never
/// the password.
pub fn describe_database(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            Host::Tcp(h) => format!("{h}:{p}"),
            Host::Unix(path) => format!("{}:{p}", path.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// The background task that keeps the verifier connected and checking.
pub struct Watcher {
    pub db: tokio_postgres::Config,
    pub table: String,
    pub poll_interval: Duration,
    pub registry: Arc<Registry>,
    pub wake_tx: mpsc::UnboundedSender<Wake>,
    pub wake_rx: mpsc::UnboundedReceiver<Wake>,
    pub health: Health,
    pub shutdown: Shutdown,
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
    pub async fn run(mut self) {
        let server = describe_database(&self.db);
        let mut verifier = Verifier::new(&self.table, &server);
        loop {
            self.health.set(false).await;
            let session = etl_service::retry("postgres", &self.shutdown, || {
                connect(&self.db, &server, self.wake_tx.clone())
            })
            .await;
            let Some(session) = session else { return };
            tracing::info!(database = %server, table = %self.table, channel = CHANNEL, "listening for rows");
            self.health.set(true).await;
            match self.session(session, &mut verifier).await {
                Ended::Shutdown => return,
                Ended::Lost => {
                    tracing::warn!(database = %server, "lost the Postgres connection, reconnecting");
                }
            }
        }
    }

    async fn session(&mut self, mut s: Session, verifier: &mut Verifier) -> Ended {
        let mut tick = tokio::time::interval(self.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned: HashMap<String, String> = HashMap::new();
        // Whatever was announced while we were away is lost: look at everything.
        let mut pending = self.collect(Wake::All, BTreeMap::new());
        loop {
            if !pending.is_empty() {
                let files = std::mem::take(&mut pending);
                if let Some(end) = self
                    .check_files(&s.client, verifier, files, &mut warned)
                    .await
                {
                    return end;
                }
            }
            tokio::select! {
                biased;
                _ = self.shutdown.wait() => return Ended::Shutdown,
                _ = &mut s.conn => return Ended::Lost,
                _ = &mut s.listen_conn => return Ended::Lost,
                Some(wake) = self.wake_rx.recv() => {
                    pending = self.collect(wake, pending);
                    // Drain the burst: one NOTIFY per file per transaction.
                    while let Ok(wake) = self.wake_rx.try_recv() {
                        pending = self.collect(wake, pending);
                    }
                }
                _ = tick.tick() => pending = self.collect(Wake::All, pending),
            }
        }
    }

    /// Adds the unverified files `wake` names to `pending` (a notification for an
    /// unregistered or verified file needs no check).
    fn collect(
        &self,
        wake: Wake,
        mut pending: BTreeMap<String, Arc<Manifest>>,
    ) -> BTreeMap<String, Arc<Manifest>> {
        match wake {
            Wake::File(name) => {
                if let Some(m) = self.registry.unverified_file(&name) {
                    pending.insert(name, m);
                }
            }
            Wake::All => {
                for m in self.registry.unverified() {
                    pending.insert(m.file_name.clone(), m);
                }
            }
        }
        pending
    }

    /// Checks `files` one by one; `Some` when the session must end.
    async fn check_files(
        &self,
        client: &Client,
        verifier: &mut Verifier,
        files: BTreeMap<String, Arc<Manifest>>,
        warned: &mut HashMap<String, String>,
    ) -> Option<Ended> {
        for (name, manifest) in files {
            if self.shutdown.is_triggered() {
                return Some(Ended::Shutdown);
            }
            match verifier.check(client, &manifest).await {
                Ok(check) => {
                    warned.remove(&name);
                    match self.registry.record(&name, check.clone()) {
                        Recorded::Verified | Recorded::FirstProblem => {
                            trace_outcome(&manifest, &check);
                        }
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

async fn connect(
    db: &tokio_postgres::Config,
    server: &str,
    wake_tx: mpsc::UnboundedSender<Wake>,
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
    let (client, connection) = db
        .connect(NoTls)
        .await
        .map_err(pg_error("connecting (checks)"))?;
    let conn = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "check connection ended");
        }
    });
    let (listen, mut connection) = db
        .connect(NoTls)
        .await
        .map_err(pg_error("connecting (LISTEN)"))?;
    // Notifications arrive only to whoever polls the connection itself, so the
    // listening connection is driven here rather than by `connection.await`.
    let listen_conn = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if n.channel() == CHANNEL {
                        let _ = wake_tx.send(Wake::File(n.payload().to_string()));
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "listen connection ended");
                    return;
                }
                None => return,
            }
        }
    });
    listen
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(pg_error("LISTEN etl_rows"))?;
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
    fn database_description_hides_the_password() {
        let cfg: tokio_postgres::Config = "postgres://etl:s3cret@db.example:5433/nlp_db"
            .parse()
            .expect("valid url");
        let d = describe_database(&cfg);
        assert_eq!(d, "postgres://etl@db.example:5433/nlp_db");
        assert!(!d.contains("s3cret"));
        let cfg: tokio_postgres::Config = "host=localhost user=postgres password=pw dbname=x"
            .parse()
            .expect("valid key-value");
        assert_eq!(
            describe_database(&cfg),
            "postgres://postgres@localhost:5432/x"
        );
    }
}
