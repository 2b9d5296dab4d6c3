//! The real servers file-etl runs on — a private Postgres cluster and a Kafka broker
//! (Apache Kafka, or tansu) — each started as a child process on 127.0.0.1.
//!
//! Why a crate of its own: `etlctl up` runs these servers in production-like stacks, and
//! every integration test runs them too. Both need the same starters (the same flags, the
//! same readiness probes, the same watchdog), but the operator's CLI must not link a
//! test-support crate to get them. So they live here, and `testkit` adds the test
//! fixtures (one shared server per test binary) on top.
//!
//! Two kinds of callers use the same starters:
//! - `etlctl up` keeps data in a directory and listens on fixed ports
//!   ([`PgCluster::start_in`], [`Broker::start_on`] with [`Storage::Kafka`]); starting
//!   again on the same directory reuses its data;
//! - tests take a throwaway server (temp dir, free port) and give each test its own
//!   database or topic ([`PgCluster::create_unique_database`],
//!   [`Broker::create_unique_topic`]).
//!
//! Starting is blocking (process management is), returns only once the server answers
//! its own protocol (`pg_isready`, a Kafka metadata request), and fails with an
//! [`Error`] naming the binary, the port and the log file, plus the log's last lines.
//! Servers stop on drop, and a watchdog stops them when the process that started them
//! dies without dropping them.
//!
//! # Layout
//! - [`postgres`]: [`PgCluster`] — `initdb` (once) and `postgres` from Debian's
//!   postgresql-15, run as the `postgres` user when we are root.
//! - [`broker`]: [`Broker`] — Apache Kafka (KRaft, durable) or `tansu broker` with memory
//!   or sqlite [`Storage`]; topics through the Kafka admin API.
//! - `process` (private): child processes in their own process group, output appended to
//!   a log file, stopped on drop, and the watchdog that stops them if we die.
//! - [`logs`]: where a server's output goes when the caller does not say: per test, under
//!   `target/testkit-logs/<binary>/<test>/`.
//! - [`net`]: [`free_port`], [`free_port_run`], [`wait_for_tcp`].
//! - [`names`]: [`unique_name`] for databases and topics.
//! - [`error`]: the crate's [`Error`].
//!
//! # What the machine needs
//! `apt-get install postgresql-15` (binaries in `/usr/lib/postgresql/15/bin`, or set
//! `PG_BIN`), a JDK 17+ with Apache Kafka's jars (`make kafka`, or set `KAFKA_LIBS`), and
//! for tansu `cargo install tansu --locked --features dynostore,libsql` (or set `TANSU_BIN`).

pub mod broker;
pub mod error;
pub mod logs;
pub mod names;
pub mod net;
pub mod postgres;
mod process;

pub use broker::{Broker, BrokerBuilder, KAFKA_VERSION, Storage, kafka_libs};
pub use error::{Error, Result};
pub use logs::{binary_log_name, log_dir, log_root, test_log_dir};
pub use names::unique_name;
pub use net::{free_port, free_port_run, wait_for_tcp, wait_for_tcp_blocking};
pub use postgres::{PgBuilder, PgCluster};
