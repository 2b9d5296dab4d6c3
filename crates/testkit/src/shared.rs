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
//! A `static` is never dropped, so these servers are stopped by their watchdog (see
//! `etl_stack`'s process module): when the test binary exits, however it exits, the
//! watchdog sees its pipe close, stops the server and removes its temp directory. Logs go
//! to `target/testkit-logs/<binary>/shared/`.

use std::sync::OnceLock;

use etl_stack::{Broker, PgCluster, Storage, logs};

/// A shared server failed to start, now or earlier in this test binary. The first
/// caller's error is kept as text (an [`etl_stack::Error`] cannot be cloned), so every
/// later test fails with the same reason instead of starting another server.
///
/// `Debug` prints the message, as [`etl_stack::Error`]'s does: tests that `.expect()`
/// show the server log's tail with its line breaks intact.
#[derive(thiserror::Error)]
#[error("the shared {server} failed to start: {message}")]
pub struct SharedError {
    pub server: &'static str,
    pub message: String,
}

impl std::fmt::Debug for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

static POSTGRES: OnceLock<Result<PgCluster, String>> = OnceLock::new();
static TANSU: OnceLock<Result<Broker, String>> = OnceLock::new();
static KAFKA: OnceLock<Result<Broker, String>> = OnceLock::new();

fn shared<T>(
    cell: &'static OnceLock<Result<T, String>>,
    server: &'static str,
    start: impl FnOnce() -> etl_stack::Result<T>,
) -> Result<&'static T, SharedError> {
    cell.get_or_init(|| start().map_err(|e| format!("{e:?}")))
        .as_ref()
        .map_err(|message| SharedError {
            server,
            message: message.clone(),
        })
}

/// The test binary's shared temp Postgres cluster, started by the first caller (the
/// others wait for it). Blocks while starting.
pub fn shared_postgres() -> Result<&'static PgCluster, SharedError> {
    shared(&POSTGRES, "postgres", || {
        PgCluster::builder().log_dir(shared_log_dir()?).start()
    })
}

/// The test binary's shared Apache Kafka broker (the stack's default), started by the
/// first caller in a temp directory. Blocks while starting (a JVM: a few seconds).
pub fn shared_broker() -> Result<&'static Broker, SharedError> {
    shared(&KAFKA, "kafka", || {
        // Kept (never dropped) and removed by the broker's watchdog at exit.
        let dir = tempfile::Builder::new()
            .prefix("testkit-kafka-")
            .tempdir()
            .map_err(|e| etl_stack::Error::Io {
                action: "cannot create a temp dir in",
                path: std::env::temp_dir(),
                source: e,
            })?
            .keep();
        Broker::builder(Storage::Kafka(dir))
            .log_dir(shared_log_dir()?)
            .remove_dir_on_exit()
            .start()
    })
}

/// The test binary's shared tansu broker (memory storage), started by the first caller.
/// Blocks while starting.
pub fn shared_tansu() -> Result<&'static Broker, SharedError> {
    shared(&TANSU, "tansu", || {
        Broker::builder(Storage::Memory)
            .log_dir(shared_log_dir()?)
            .start()
    })
}

/// Not cleared like a test's directory: under cargo-nextest every test is a process of
/// its own, and each may have a shared server writing here.
fn shared_log_dir() -> etl_stack::Result<std::path::PathBuf> {
    logs::log_dir(&format!("{}/shared", logs::binary_log_name()))
}
