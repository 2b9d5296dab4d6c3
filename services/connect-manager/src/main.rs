//! `connect-manager`: parses flags, sets up telemetry, runs the connectors
//! until SIGTERM/Ctrl-C. `connect-manager healthcheck` probes a running one.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use etl_service::Shutdown;

/// Runs file-etl connectors: an SFTP CSV/TSV source producing to Kafka and a
/// JDBC-style sink writing to Postgres. gRPC etl.v1.ConnectManager and a
/// Kafka-Connect-compatible REST API manage them.
#[derive(Parser)]
#[command(
    name = "connect-manager",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: connect_manager::Config,
}

#[derive(Subcommand)]
enum Command {
    /// Exits 0 if connect-manager's gRPC health is SERVING, 1 otherwise.
    Healthcheck {
        /// gRPC address of connect-manager.
        #[arg(long, default_value = "http://127.0.0.1:50053")]
        addr: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck { addr }) => etl_service::healthcheck_command(&addr).await,
        None => match run(cli.config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "connect-manager failed");
                eprintln!("connect-manager: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(config: connect_manager::Config) -> anyhow::Result<()> {
    let _telemetry =
        etl_telemetry::init("connect-manager").context("failed to set up telemetry")?;
    let shutdown = Shutdown::on_signals();
    let running = connect_manager::start(config, shutdown)
        .await
        .context("failed to start connect-manager")?;
    running
        .wait()
        .await
        .context("connect-manager stopped with an error")?;
    Ok(())
}
