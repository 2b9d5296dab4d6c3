//! One Postgres cluster and one Kafka broker per test binary, started on first use.
//!
//! Starting a cluster costs `initdb` plus a server start (a second or two); a binary with
//! fifty tests should pay that once. Tests stay independent by taking their own database
//! ([`PgCluster::create_unique_database`]) or topic ([`Broker::create_unique_topic`]).
//!
//! Every `#[tokio::test]` has its own runtime, which is gone when the test ends, so the
//! singletons hold nothing bound to a runtime: a child process and a port. Clients are
//! made per call, on the caller's runtime.
//!
//! A `static` is never dropped, so these servers are stopped by their watchdog (see the
//! private `process` module): when the test binary exits, however it exits, the watchdog sees its
//! pipe close, stops the server and removes its temp directory. Logs go to
//! `target/testkit-logs/<binary>/shared/`.

use std::sync::OnceLock;

use crate::broker::{Broker, Storage};
use crate::error::{Error, Result};
use crate::logs;
use crate::postgres::PgCluster;

static POSTGRES: OnceLock<Result<PgCluster, String>> = OnceLock::new();
static TANSU: OnceLock<Result<Broker, String>> = OnceLock::new();
static KAFKA: OnceLock<Result<Broker, String>> = OnceLock::new();

/// The test binary's shared temp Postgres cluster, started by the first caller (the
/// others wait for it). Blocks while starting.
pub fn shared_postgres() -> Result<&'static PgCluster> {
    POSTGRES
        .get_or_init(|| {
            let start = || PgCluster::builder().log_dir(shared_log_dir()?).start();
            start().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| Error::SharedStart {
            server: "postgres",
            message: message.clone(),
        })
}

/// The test binary's shared Apache Kafka broker (the stack's default), started by the
/// first caller in a temp directory. Blocks while starting (a JVM: a few seconds).
pub fn shared_broker() -> Result<&'static Broker> {
    KAFKA
        .get_or_init(|| {
            let start = || {
                // Kept (never dropped) and removed by the broker's watchdog at exit.
                let dir = tempfile::Builder::new()
                    .prefix("testkit-kafka-")
                    .tempdir()
                    .map_err(|e| Error::io("cannot create a temp dir", std::env::temp_dir(), e))?
                    .keep();
                Broker::builder(Storage::Kafka(dir))
                    .log_dir(shared_log_dir()?)
                    .remove_dir_on_exit()
                    .start()
            };
            start().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| Error::SharedStart {
            server: "kafka",
            message: message.clone(),
        })
}

/// The test binary's shared tansu broker (memory storage), started by the first caller.
/// Blocks while starting.
pub fn shared_tansu() -> Result<&'static Broker> {
    TANSU
        .get_or_init(|| {
            let start = || {
                Broker::builder(Storage::Memory)
                    .log_dir(shared_log_dir()?)
                    .start()
            };
            start().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| Error::SharedStart {
            server: "tansu",
            message: message.clone(),
        })
}

/// Not cleared like a test's directory: under cargo-nextest every test is a process of
/// its own, and each may have a shared server writing here.
fn shared_log_dir() -> Result<std::path::PathBuf> {
    logs::log_dir(&format!("{}/shared", logs::binary_log_name()))
}
