//! sftp-gateway: the SFTP server files are uploaded to, and the live notice
//! that tells the pipeline an upload is complete.
//!
//! An uploader (the extractor, or any SFTP client) logs in as a user, writes
//! a file as a hidden temporary name in `input/` and renames it into place.
//! The gateway sees the rename (or the close of a file written in place),
//! publishes a `FileReady` event, and the connect-manager, subscribed over
//! gRPC `WatchFiles`, reads the file back over SFTP.
//!
//! # Layout, in the order data flows
//! - [`config`]: flags and `ETL_*` env twins ([`Config`]).
//! - `users`: who may log in (passwords, argon2 hashes from a users file,
//!   OpenSSH authorized keys), with which permission profile, and in which
//!   root (the user's name unless `--root` or the users file names another;
//!   users with the same root share one tree); `host_key`:
//!   the server's identity, generated on first start, its fingerprint
//!   published in the data directory for clients to pin.
//! - `limits`: connection caps and failed-login penalties, checked at accept.
//! - `ssh`: accepts connections, authenticates (attempt cap, grace time),
//!   starts the `sftp` subsystem, closes idle connections; drains in-flight
//!   uploads on shutdown.
//! - `sftp`: the SFTP v3 operations (open/read/write/close, stat, directories,
//!   rename, …) with SFTP status codes for errors; permissions per profile.
//! - `quota`: bytes per root (shared by its users) and the file size limit.
//! - `tree`: each root (`<data-dir>/<root>` with `input/`, `finished/`,
//!   `error/`) and the confinement of every path to it, symlinks never
//!   followed (`openat2` beneath the root).
//! - [`notify`]: completed uploads become [`FileReady`] events (broadcast) inside
//!   an `sftp.receive` span that joins the uploader's announced trace; files
//!   moved into `error/` become REJECTED events with their reason. Notices,
//!   announcements and stored trace contexts are keyed by root and path, not
//!   by user, so every user of a shared root hears of every file in it.
//! - [`trace_store`]: each completed upload's `traceparent`, stored with the
//!   file (extended attribute `user.etl.traceparent`) so it survives restarts
//!   and renames; served over SFTP by the `traceparent@file-etl` extension.
//! - `existing`: the files already present, as events, for `WatchFiles` with
//!   `include_existing`.
//! - `api`: gRPC `etl.v1.SftpGateway` (`WatchFiles`, `AnnounceUpload`), served
//!   next to health and reflection; with `ETL_API_TOKEN` (or a token file) every
//!   call but health and reflection needs it, and `--tls-cert`/`--tls-key`
//!   serve it over TLS (`etl_service::security`).
//! - [`Error`]: the one error type.
//!
//! [`start`] binds both listeners and returns a [`Running`] at once.
//!
//! # Security (every limit is a flag with an `ETL_SFTP_*` twin; see [`Config`])
//! - Before login: at most `--max-startups` (10) connections not yet logged
//!   in, `--max-connections` (100) in all and `--max-connections-per-addr`
//!   (20) per address, refused at accept; `--login-grace-time` (30 s) to log
//!   in; `--max-auth-attempts` (6) failures per connection; each failure is
//!   logged with the address and adds `--auth-penalty` (5 s) to it; past
//!   `--auth-penalty-min` (15 s) the address is blocked until its penalty runs
//!   out (at most `--auth-penalty-max`, 10 min; `--auth-penalty-exempt` lists
//!   addresses never blocked).
//! - Passwords: argon2 hashes in `--users-file` (`sftp-gateway hash-password`
//!   makes them), or `ETL_SFTP_PASSWORD` / `ETL_SFTP_USERS` in the
//!   environment; none needs to be on the command line.
//! - After login: `--idle-timeout` (10 min without an SFTP request, no upload
//!   open); per-user `--permissions` (`full`, the default and today's
//!   behaviour; `upload`: writes and deletes only in the watched directories;
//!   `read`); `--max-file-size` (1 GiB) and `--user-quota` (10 GiB per root,
//!   shared by the root's users), refused with an SFTP FAILURE status whose
//!   message names the limit; paths opened beneath the user's root with
//!   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so no symlink is ever
//!   followed. A root is a name checked at start (one path component, no
//!   `/`, no `..`, not hidden): sharing a tree needs no link on disk.
//! - Host key: its fingerprint is written to `<data-dir>/ssh_host_key.sha256`
//!   at every start (and printed by `sftp-gateway host-key`), for clients to pin.
//! - gRPC: the control-plane token (above). `WatchFiles` names one existing
//!   user and streams the files of that user's root only (no stream of every
//!   root); `AnnounceUpload` takes paths of at most 4096 bytes under an
//!   existing user, and at most 10,000 announcements wait per user
//!   (RESOURCE_EXHAUSTED beyond), whatever root they are in.

pub mod config;
mod error;
pub mod notify;

mod api;
mod existing;
mod host_key;
mod limits;
mod quota;
mod sftp;
mod ssh;
pub mod trace_store;
mod tree;
mod users;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
};

pub use config::Config;
pub use error::Error;
pub use etl_proto::v1::FileReady;
use etl_proto::v1::sftp_gateway_server::SftpGatewayServer;
use etl_service::Shutdown;
pub use host_key::{FINGERPRINT_FILE, host_key_fingerprint};
pub use notify::Notifier;
pub use users::hash_password;
/// The SFTP extension that serves a file's stored `traceparent`.
pub const TRACEPARENT_EXTENSION: &str = sftp::TRACEPARENT_EXTENSION;
use tokio::{sync::broadcast, task::JoinHandle};

/// The gRPC service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "etl.v1.SftpGateway";

/// A started gateway.
pub struct Running {
    /// The SFTP (SSH) listener's bound address.
    pub sftp_addr: SocketAddr,
    /// The gRPC listener's bound address.
    pub grpc_addr: SocketAddr,
    notifier: Notifier,
    host_key_fingerprint: String,
    ssh_task: JoinHandle<Result<(), Error>>,
    grpc_task: JoinHandle<Result<(), Error>>,
}

impl Running {
    /// FileReady events from now on, of every root, in process, without gRPC.
    pub fn subscribe(&self) -> broadcast::Receiver<FileReady> {
        self.notifier.subscribe()
    }

    /// The event hub (subscribe, announce uploads) for in-process users.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// `SHA256:…` fingerprint of the host key, for clients that pin it.
    pub fn host_key_fingerprint(&self) -> &str {
        &self.host_key_fingerprint
    }

    /// Waits until both servers stopped (after the shutdown passed to
    /// [`start`] tripped, or one of them failed, which stops the other).
    pub async fn wait(self) -> Result<(), Error> {
        let ssh = join("SFTP server", self.ssh_task).await;
        let grpc = join("gRPC server", self.grpc_task).await;
        ssh.and(grpc)
    }
}

async fn join(what: &'static str, task: JoinHandle<Result<(), Error>>) -> Result<(), Error> {
    task.await.map_err(|e| Error::Task {
        what,
        reason: e.to_string(),
    })?
}

/// Prepares the user trees and the host key, binds the SFTP and gRPC
/// listeners (port 0 allowed; see [`Running`] for the bound addresses), starts
/// serving and returns. Health turns SERVING once both listen; the gateway
/// has no dependency to wait for.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    config.validate()?;
    let security = config
        .security
        .server()
        .map_err(|e| Error::Config(e.to_string()))?;
    // A failing server stops its sibling through this child, not the caller's token.
    let shutdown = shutdown.child();

    let users = users::Users::from_config(&config)?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // One tree per root, shared by every user of that root: one quota, one
    // set of trace contexts, one stream of notices.
    let mut roots: BTreeMap<&str, Arc<tree::UserTree>> = BTreeMap::new();
    let mut trees = HashMap::new();
    for (user, root) in users.roots() {
        let tree = match roots.get(root) {
            Some(tree) => tree.clone(),
            None => {
                let tree = tree::UserTree::create_with_limits(
                    &config.data_dir,
                    root,
                    config.user_quota,
                    config.max_file_size,
                )
                .map_err(|source| Error::DataDir {
                    path: config.data_dir.join(root),
                    source,
                })?;
                tracing::debug!(root, bytes = tree.usage().used(), "root measured");
                let tree = Arc::new(tree);
                roots.insert(root, tree.clone());
                tree
            }
        };
        tracing::debug!(user, root, "user's root");
        trees.insert(user.to_string(), tree);
    }
    let root_count = roots.len();
    drop(roots);
    let host_key = host_key::load_or_generate(&config.host_key_path())?;
    let host_key_fingerprint = host_key::publish(&config.data_dir, &host_key)?;
    let notifier = Notifier::new(&config.watch_dirs);
    let store = Arc::new(trace_store::TraceStore::new(&config.data_dir));
    let trees = Arc::new(trees);

    let sftp_listener = etl_service::bind("sftp", &config.sftp_addr).await?;
    let grpc_listener = etl_service::bind("grpc", &config.grpc_addr).await?;
    let local = |l: &tokio::net::TcpListener, addr: &str| {
        l.local_addr().map_err(|source| Error::Listener {
            addr: addr.to_string(),
            source,
        })
    };
    let sftp_addr = local(&sftp_listener, &config.sftp_addr)?;
    let grpc_addr = local(&grpc_listener, &config.grpc_addr)?;

    let (mut routes, health) = etl_service::grpc::base_routes(SERVICE_NAME).await?;
    routes.add_service(SftpGatewayServer::new(api::GatewayApi {
        notifier: notifier.clone(),
        trees: trees.clone(),
        store: store.clone(),
        shutdown: shutdown.clone(),
    }));

    let user_count = users.len();
    let shared = Arc::new(ssh::Shared {
        users,
        trees,
        notifier: notifier.clone(),
        store,
        shutdown: shutdown.clone(),
        gate: limits::Gate::new(&config),
        login_grace_time: config.login_grace_time,
        idle_timeout: config.idle_timeout,
        max_auth_attempts: config.max_auth_attempts,
    });
    let ssh_config = Arc::new(ssh::server_config(host_key, config.max_auth_attempts));
    let ssh_task = {
        let shutdown = shutdown.clone();
        let addr = config.sftp_addr.clone();
        tokio::spawn(async move {
            let result = ssh::serve(sftp_listener, ssh_config, shared, shutdown.clone())
                .await
                .map_err(|source| Error::Listener { addr, source });
            if result.is_err() {
                shutdown.trigger();
            }
            result
        })
    };
    let grpc_task = {
        let shutdown = shutdown.clone();
        let health = health.clone();
        tokio::spawn(async move {
            etl_service::serve_until_shutdown(
                grpc_listener,
                routes.routes(),
                health,
                security,
                shutdown,
            )
            .await
            .map_err(Error::from)
        })
    };
    health.set(true).await;
    tracing::info!(
        %sftp_addr,
        %grpc_addr,
        users = user_count,
        roots = root_count,
        data_dir = %config.data_dir.display(),
        host_key = %host_key_fingerprint,
        watched = ?config.watch_dirs,
        "sftp-gateway started"
    );
    Ok(Running {
        sftp_addr,
        grpc_addr,
        notifier,
        host_key_fingerprint,
        ssh_task,
        grpc_task,
    })
}
