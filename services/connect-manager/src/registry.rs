//! The connectors this service runs: created, replaced and deleted through the
//! APIs, persisted in `<data-dir>/connectors.json` so they survive a restart,
//! each running as one task with its own [`Shutdown`].

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use etl_service::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::{sync::Mutex, task::JoinHandle};

use crate::{
    Error,
    connector::{ConnectorConfig, Kind, TaskContext},
    status::{Status, StatusSnapshot},
};

/// How long a stopping connector may take before its task is aborted.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const STORE_FILE: &str = "connectors.json";

/// A connector as the APIs show it.
#[derive(Clone, Debug)]
pub(crate) struct ConnectorView {
    pub(crate) name: String,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) kind: Kind,
    pub(crate) status: StatusSnapshot,
}

struct Running {
    config: BTreeMap<String, String>,
    kind: Kind,
    status: Arc<Status>,
    stop: Shutdown,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self, name: &str) {
        self.stop.trigger();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(STOP_TIMEOUT, self.task).await.is_err() {
            tracing::warn!(connector = name, "connector did not stop in time; aborted");
            abort.abort();
        }
    }

    fn view(&self, name: &str) -> ConnectorView {
        ConnectorView {
            name: name.to_string(),
            config: self.config.clone(),
            kind: self.kind,
            status: self.status.snapshot(),
        }
    }
}

/// The store file's shape: Kafka Connect's `{name, config}` per connector.
#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    config: BTreeMap<String, String>,
}

pub(crate) struct Registry {
    connectors: Mutex<BTreeMap<String, Running>>,
    store: PathBuf,
    data_dir: PathBuf,
    instance: String,
    brokers: String,
    shutdown: Shutdown,
}

/// A short, stable name for this worker: FNV-1a of its data directory's absolute
/// path. Two workers never share a data directory (each has its own store).
fn instance_of(data_dir: &Path) -> String {
    let path = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("w{:08x}", hash >> 32)
}

impl Registry {
    /// Prepares the data directory; call [`Registry::restore`] to start the
    /// connectors stored there.
    pub(crate) fn open(data_dir: &Path, brokers: &str, shutdown: Shutdown) -> Result<Self, Error> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
            action: "create",
            path: data_dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            connectors: Mutex::new(BTreeMap::new()),
            store: data_dir.join(STORE_FILE),
            data_dir: data_dir.to_path_buf(),
            instance: instance_of(data_dir),
            brokers: brokers.to_string(),
            shutdown,
        })
    }

    /// Starts every stored connector. One that no longer validates is logged
    /// and left out (its entry stays in the file until replaced or deleted).
    pub(crate) async fn restore(&self) -> Result<usize, Error> {
        let stored = match std::fs::read(&self.store) {
            Ok(bytes) => {
                serde_json::from_slice::<Vec<Stored>>(&bytes).map_err(|e| Error::Store {
                    path: self.store.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(Error::DataDir {
                    action: "read",
                    path: self.store.clone(),
                    source,
                });
            }
        };
        let mut map = self.connectors.lock().await;
        for s in stored {
            match ConnectorConfig::parse(&s.name, &s.config) {
                Ok(parsed) => {
                    let running = self.spawn(&s.name, s.config, parsed);
                    map.insert(s.name, running);
                }
                Err(e) => {
                    tracing::error!(connector = %s.name, error = %e, "stored connector is invalid; not started")
                }
            }
        }
        tracing::info!(connectors = map.len(), store = %self.store.display(), "connectors restored");
        Ok(map.len())
    }

    fn spawn(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
        parsed: ConnectorConfig,
    ) -> Running {
        let status = Arc::new(Status::default());
        let stop = self.shutdown.child();
        let kind = parsed.kind();
        let task = parsed.spawn(TaskContext {
            name: name.to_string(),
            brokers: self.brokers.clone(),
            status: status.clone(),
            shutdown: stop.clone(),
            instance: self.instance.clone(),
            data_dir: self.data_dir.clone(),
        });
        tracing::info!(connector = name, kind = kind.as_str(), "connector started");
        Running {
            config,
            kind,
            status,
            stop,
            task,
        }
    }

    /// Creates `name`, or replaces its config (stopping the old task first).
    /// Returns the connector and whether it is new. With `only_new`, an
    /// existing connector is an error instead.
    pub(crate) async fn put(
        &self,
        name: &str,
        config: BTreeMap<String, String>,
        only_new: bool,
    ) -> Result<(ConnectorView, bool), Error> {
        let parsed = ConnectorConfig::parse(name, &config)?;
        let mut map = self.connectors.lock().await;
        if only_new && map.contains_key(name) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        if let Some(same) = map.get(name).filter(|r| r.config == config) {
            // Re-applying an unchanged config (etlctl does on every start) keeps
            // the task running instead of restarting it.
            return Ok((same.view(name), false));
        }
        let old = map.remove(name);
        let created = old.is_none();
        // Persist first: a connector that is running must survive a restart.
        let mut to_store: Vec<Stored> = map
            .iter()
            .map(|(n, r)| Stored {
                name: n.clone(),
                config: r.config.clone(),
            })
            .collect();
        to_store.push(Stored {
            name: name.to_string(),
            config: config.clone(),
        });
        if let Err(e) = self.persist(to_store) {
            if let Some(old) = old {
                map.insert(name.to_string(), old);
            }
            return Err(e);
        }
        if let Some(old) = old {
            // The old task must be gone before the new one takes the same files.
            old.stop(name).await;
        }
        let running = self.spawn(name, config, parsed);
        let view = running.view(name);
        map.insert(name.to_string(), running);
        Ok((view, created))
    }

    pub(crate) async fn list(&self) -> Vec<ConnectorView> {
        let map = self.connectors.lock().await;
        map.iter().map(|(n, r)| r.view(n)).collect()
    }

    pub(crate) async fn get(&self, name: &str) -> Result<ConnectorView, Error> {
        let map = self.connectors.lock().await;
        map.get(name)
            .map(|r| r.view(name))
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    pub(crate) async fn delete(&self, name: &str) -> Result<(), Error> {
        let mut map = self.connectors.lock().await;
        if !map.contains_key(name) {
            return Err(Error::NotFound(name.to_string()));
        }
        let to_store = map
            .iter()
            .filter(|(n, _)| n.as_str() != name)
            .map(|(n, r)| Stored {
                name: n.clone(),
                config: r.config.clone(),
            })
            .collect();
        self.persist(to_store)?;
        if let Some(running) = map.remove(name) {
            running.stop(name).await;
        }
        tracing::info!(connector = name, "connector deleted");
        Ok(())
    }

    /// Connectors that have records waiting and moved nothing for a long time.
    pub(crate) async fn stalled(&self) -> Vec<String> {
        let map = self.connectors.lock().await;
        map.iter()
            .filter(|(_, r)| r.status.snapshot().stalled)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Stops every connector and waits for their tasks (service shutdown).
    pub(crate) async fn stop_all(&self) {
        let mut map = self.connectors.lock().await;
        let all = std::mem::take(&mut *map);
        let stops = all
            .into_iter()
            .map(|(n, r)| async move { r.stop(&n).await });
        futures::future::join_all(stops).await;
    }

    /// Writes the store atomically (temp file + rename), readable only by us:
    /// configs hold passwords, as Kafka Connect's config topic does.
    fn persist(&self, connectors: Vec<Stored>) -> Result<(), Error> {
        let io = |action, source| Error::DataDir {
            action,
            path: self.store.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&connectors)
            .map_err(|e| io("encode", std::io::Error::other(e)))?;
        let tmp = self.store.with_extension("json.tmp");
        write_private(&tmp, &json).map_err(|e| io("write", e))?;
        std::fs::rename(&tmp, &self.store).map_err(|e| io("replace", e))?;
        Ok(())
    }
}

pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}
