//! The local stack: where it lives on disk, what it is made of, what each service is
//! told, and the `stack.json` the supervisor writes so every other command can find it.
//!
//! # Layout
//! - [`layout`]: [`StackDir`], the paths under `.etl/` (the tree is drawn there), the
//!   SFTP users' shared root, `stack.json` and the pid file on disk.
//! - [`secrets`]: the API token and the SFTP users' passwords, made once per stack
//!   (0600); [`SftpAccount`], who logs in to the gateway and with which profile.
//! - [`plan`]: [`StackPlan`] — the [`Service`]s and their processes ([`Instance`]s: a
//!   connect-manager per worker with `--workers`), the broker, the [`Ports`] and the
//!   tracing, computed the same way by `up` and the supervisor.
//! - [`env`](mod@env): every variable the stack hands its services, named once, and each
//!   process's values ([`StackPlan::instance_env`]).
//! - [`info`]: the `stack.json` model, [`StackInfo`], and the connector placeholders it
//!   fills.

pub mod env;
pub mod info;
pub mod layout;
pub mod plan;
pub mod secrets;

pub use info::{
    CollectorKind, ConnectInfo, ConnectMode, KafkaInfo, PostgresInfo, ProcessInfo, ServiceInfo,
    ServiceState, SftpAccountInfo, StackInfo, TracingInfo,
};
pub(crate) use layout::write_atomically;
pub use layout::{SFTP_TREE, StackDir};
pub use plan::{
    CONNECT_GROUP_ID, DATABASE, Instance, KafkaStorage, MAX_WORKERS, Ports, Service, StackPlan,
    Tracing,
};
pub use secrets::{SftpAccount, StackSecrets};
