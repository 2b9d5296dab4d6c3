//! Test support: real servers shared by the tests of one binary, and the helpers tests
//! use beside them.
//!
//! The servers themselves (a private Postgres cluster, Apache Kafka or tansu) are started
//! by `etl-stack`, which `etlctl up` uses too; this crate re-exports its starters and
//! helpers under their old names, so a test needs one dependency, and adds what only
//! tests want:
//! - [`shared_postgres`] / [`shared_broker`] (Apache Kafka) / [`shared_tansu`]: one
//!   lazily started server per test binary; each test takes its own database or topic
//!   ([`PgCluster::create_unique_database`], [`Broker::create_unique_topic`]);
//! - the per-test log directories ([`test_log_dir`]) the servers write to, which CI keeps;
//! - [`Sshd`]: a private OpenSSH `sshd` serving SFTP, one per test, for code that must
//!   work with any SFTP server, not only `sftp-gateway`.
//!
//! # Layout
//! - [`shared`]: the shared servers and [`SharedError`].
//! - [`sshd`]: [`Sshd`] and the `ssh-keygen` helpers ([`sshd::keygen`], [`sshd::pub_key`]).
//! - re-exports from `etl_stack`: [`PgCluster`], [`Broker`], [`Storage`], [`free_port`],
//!   [`wait_for_tcp`], [`unique_name`], [`test_log_dir`], [`Error`], … (see that crate).
//!
//! # What the machine needs
//! What `etl-stack` needs: Debian's `postgresql-15`, a JDK 17+ with Apache Kafka's jars
//! (`make kafka`), and for tansu `cargo install tansu --locked --features dynostore,libsql`.
//! [`Sshd`] needs root and `/usr/sbin/sshd` (Debian `openssh-server`, plus
//! `openssh-client` for `ssh-keygen`).

pub mod shared;
pub mod sshd;

pub use etl_stack::{
    Broker, BrokerBuilder, Error, KAFKA_VERSION, PgBuilder, PgCluster, Result, Storage,
    binary_log_name, broker, free_port, kafka_libs, log_dir, log_root, logs, names, net, postgres,
    test_log_dir, unique_name, wait_for_tcp, wait_for_tcp_blocking,
};
pub use shared::{SharedError, shared_broker, shared_postgres, shared_tansu};
pub use sshd::Sshd;
