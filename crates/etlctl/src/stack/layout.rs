//! Where everything of one stack lives on disk: [`StackDir`].
//!
//! ```text
//! .etl/
//!   supervisor.pid   pid of `etlctl supervise` (written first, removed last)
//!   api-token        the control-plane token (0600)           } made once by the first
//!   sftp-extractor-password, sftp-connect-password (0600)     } `etlctl supervise`; see
//!                                                               `secrets`
//!   stack.json       endpoints, log paths, service pids and restarts (while up)
//!   connect-workers  how many connect-manager workers the last stack ran (kept)
//!   logs/            supervisor.log, postgres-<port>.log, kafka-<port>.log, <service>.log
//!                    (connect-manager-<k>.log per worker with `--workers` > 1)
//!   pg/              the Postgres cluster (data survives `down`)
//!   kafka/           Apache Kafka's log (the default --kafka-storage kafka)
//!   tansu/           broker data with --kafka-storage sqlite
//!   sftp/            the sftp-gateway's data directory:
//!     etl/             the one file tree, input/ finished/ error/: the root of both
//!                      SFTP users (`ETL_SFTP_ROOTS`, see `env`)
//!     ssh_host_ed25519_key, ssh_host_key.sha256   the host key and its fingerprint
//!   connect/         connect-manager's connector registry (one standalone worker)
//!   connect-<k>/     worker k's data directory with `--workers` > 1 (distributed mode:
//!                    connectors, status and offsets live in Kafka; see `plan`)
//!   verifier/, extractor/   the other services' data directories
//!   input/           generated demo input (the only files StartRun may read)
//!   report.json      the last demo's report
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::info::StackInfo;
use super::plan::{Instance, Service};
use super::secrets::SftpAccount;

/// The gateway root both SFTP users are given (`--root NAME:ROOT`): the file tree they
/// share, a directory of the gateway's data directory. Named as the one user of earlier
/// stacks was, so their files stay put.
pub const SFTP_TREE: &str = "etl";

/// The file sftp-gateway writes its host key's `SHA256:…` fingerprint to, in its data
/// directory, at every start and on `sftp-gateway host-key` (the gateway's
/// `host_key::FINGERPRINT_FILE`).
pub const HOST_KEY_FINGERPRINT_FILE: &str = "ssh_host_key.sha256";

/// The paths of one stack directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackDir {
    root: PathBuf,
}

impl StackDir {
    /// `dir` made absolute against the current directory (children run elsewhere, and
    /// paths in `stack.json` and StartRun must not depend on anyone's cwd).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        let root = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(StackDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn stack_json(&self) -> PathBuf {
        self.root.join("stack.json")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.root.join("supervisor.pid")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs().join(format!("{name}.log"))
    }
    pub fn supervisor_log(&self) -> PathBuf {
        self.log("supervisor")
    }
    pub fn pg(&self) -> PathBuf {
        self.root.join("pg")
    }
    pub fn kafka(&self) -> PathBuf {
        self.root.join("kafka")
    }
    pub fn tansu(&self) -> PathBuf {
        self.root.join("tansu")
    }
    pub fn input(&self) -> PathBuf {
        self.root.join("input")
    }
    pub fn report_json(&self) -> PathBuf {
        self.root.join("report.json")
    }
    /// The control-plane token every service of this stack requires.
    pub fn api_token_file(&self) -> PathBuf {
        self.root.join("api-token")
    }
    /// The password of one of the gateway's SFTP users.
    pub fn sftp_password_file(&self, account: SftpAccount) -> PathBuf {
        self.root.join(format!("sftp-{}-password", account.user()))
    }
    /// The data directory of a service (`ETL_DATA_DIR`).
    pub fn service_data(&self, service: Service) -> PathBuf {
        self.root.join(service.data_dir_name())
    }
    /// The data directory of one process: its service's, or `connect-<k>` for
    /// connect-manager worker k. Workers never share one: in distributed mode a
    /// worker's id (and its sink consumers' static membership) derive from it, and the
    /// standalone `connect/` (whose `connectors.json` distributed workers do not read)
    /// is left as it was for a later one-worker stack.
    pub fn instance_data(&self, instance: Instance) -> PathBuf {
        match instance.worker {
            Some(k) => self
                .root
                .join(format!("{}-{k}", instance.service.data_dir_name())),
            None => self.service_data(instance.service),
        }
    }
    /// The log of one process: `logs/<instance name>.log`.
    pub fn instance_log(&self, instance: Instance) -> PathBuf {
        self.log(&instance.name())
    }
    /// The standalone connect-manager's connector registry, which a distributed
    /// cluster does not read (its connectors are in Kafka).
    pub fn standalone_connectors_file(&self) -> PathBuf {
        self.service_data(Service::ConnectManager)
            .join("connectors.json")
    }
    /// Where the supervisor notes how many connect-manager workers it runs; kept after
    /// `down`, so the next `up` knows whether the mode changed.
    pub fn connect_workers_file(&self) -> PathBuf {
        self.root.join("connect-workers")
    }

    /// The workers of the last stack in this directory: the supervisor's note, else
    /// (a directory of an etlctl from before workers) one if the standalone
    /// connect-manager left connectors, else unknown.
    pub fn last_connect_workers(&self) -> Option<u16> {
        std::fs::read_to_string(self.connect_workers_file())
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .or_else(|| self.standalone_connectors_file().is_file().then_some(1))
    }

    pub fn write_connect_workers(&self, workers: u16) -> std::io::Result<()> {
        write_atomically(
            &self.connect_workers_file(),
            format!("{workers}\n").as_bytes(),
        )
    }

    /// The file tree the extractor uploads into and the source connector reads.
    pub fn sftp_tree(&self) -> PathBuf {
        self.service_data(Service::SftpGateway).join(SFTP_TREE)
    }
    /// Where the gateway publishes its host key's fingerprint.
    pub fn host_key_fingerprint_file(&self) -> PathBuf {
        self.service_data(Service::SftpGateway)
            .join(HOST_KEY_FINGERPRINT_FILE)
    }

    /// The gateway's host key fingerprint (`SHA256:…`) as it last published it, `None`
    /// before its first start.
    pub fn read_host_key_fingerprint(&self) -> Option<String> {
        std::fs::read_to_string(self.host_key_fingerprint_file())
            .ok()?
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
    }

    /// Removes the links `sftp/extractor -> etl` and `sftp/connect -> etl` that earlier
    /// stacks made so both SFTP users would open the one tree; returns those removed.
    ///
    /// The gateway now gives both users the root [`SFTP_TREE`] by name (`--root`), so
    /// the links are unused, and left in place they would suggest that the gateway
    /// follows links to a user's root. Only links to [`SFTP_TREE`] are touched (the
    /// ones etlctl made); anything else there is the operator's and is left alone.
    pub fn remove_old_sftp_root_links(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for account in SftpAccount::ALL {
            let link = self.service_data(Service::SftpGateway).join(account.user());
            match std::fs::read_link(&link) {
                Ok(target) if target == Path::new(SFTP_TREE) => {
                    std::fs::remove_file(&link)?;
                    removed.push(link);
                }
                // Not a link (or none at all), or not ours.
                Ok(_) | Err(_) => {}
            }
        }
        Ok(removed)
    }

    /// Reads `stack.json`; `Ok(None)` when there is none.
    pub fn read_stack(&self) -> anyhow::Result<Option<StackInfo>> {
        let path = self.stack_json();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(StackInfo::from_json(&text).map_err(|e| {
                anyhow::anyhow!("{} is not a stack file: {e}", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    /// Writes `stack.json` atomically (temp file + rename): `up` and `status` poll it
    /// and must never read half of it.
    pub fn write_stack(&self, info: &StackInfo) -> std::io::Result<()> {
        write_atomically(&self.stack_json(), info.to_json().as_bytes())
    }

    /// The supervisor pid from `supervisor.pid`, if the file exists and parses.
    pub fn read_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn write_pid(&self, pid: u32) -> std::io::Result<()> {
        write_atomically(&self.pid_file(), format!("{pid}\n").as_bytes())
    }

    /// Removes `stack.json` and `supervisor.pid` (missing files are fine).
    pub fn remove_runtime_files(&self) {
        let _ = std::fs::remove_file(self.stack_json());
        let _ = std::fs::remove_file(self.pid_file());
    }

    /// A stack directory at `root` as given, for tests that need no real directory.
    #[cfg(test)]
    pub(crate) fn at(root: &str) -> Self {
        StackDir {
            root: PathBuf::from(root),
        }
    }
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_root_links_are_removed_and_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::new(tmp.path()).expect("dir");
        assert!(
            dir.remove_old_sftp_root_links()
                .expect("nothing there")
                .is_empty()
        );
        let sftp = dir.service_data(Service::SftpGateway);
        std::fs::create_dir_all(dir.sftp_tree()).expect("tree");
        std::fs::write(dir.sftp_tree().join("a.csv"), "x").expect("write");
        let extractor = sftp.join(SftpAccount::Extractor.user());
        let connect = sftp.join(SftpAccount::Connect.user());
        std::os::unix::fs::symlink(SFTP_TREE, &extractor).expect("old link");
        // Someone's own directory where the other link was: theirs.
        std::fs::create_dir_all(&connect).expect("mkdir");
        let removed = dir.remove_old_sftp_root_links().expect("remove");
        assert_eq!(removed, std::slice::from_ref(&extractor));
        assert!(std::fs::symlink_metadata(&extractor).is_err(), "link gone");
        assert!(connect.is_dir());
        assert!(
            dir.sftp_tree().join("a.csv").is_file(),
            "the tree untouched"
        );
    }

    #[test]
    fn the_published_fingerprint_is_read_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = StackDir::new(tmp.path()).expect("dir");
        assert_eq!(dir.read_host_key_fingerprint(), None);
        std::fs::create_dir_all(dir.service_data(Service::SftpGateway)).expect("mkdir");
        std::fs::write(dir.host_key_fingerprint_file(), "\nSHA256:abc\n").expect("write");
        assert_eq!(
            dir.read_host_key_fingerprint().as_deref(),
            Some("SHA256:abc")
        );
    }
}
