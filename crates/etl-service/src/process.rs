//! The life of a service process after its flags are parsed, the same for
//! every service: telemetry named after it, a [`Shutdown`] tripped by
//! SIGTERM/Ctrl-C, the service until it ends, and an exit code. An error is
//! logged (so it reaches the collector) and printed to stderr with its causes
//! (so a user starting the binary by hand sees it).

use std::{fmt::Display, future::Future, process::ExitCode};

use crate::Shutdown;

/// Runs `serve` (typically `start(config, shutdown)` then `wait()`) as the
/// process `name`, and returns the exit code for `main`.
pub async fn serve_main<F, Fut, E>(name: &'static str, serve: F) -> ExitCode
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let _telemetry = match etl_telemetry::init(name) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}: failed to set up telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    match serve(Shutdown::on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` is anyhow's "with causes"; other errors print as usual.
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
