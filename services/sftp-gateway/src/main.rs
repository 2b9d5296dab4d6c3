//! `sftp-gateway`: parses flags, sets up telemetry, runs the gateway until
//! SIGTERM/Ctrl-C. `sftp-gateway healthcheck` probes a running one.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use etl_service::Shutdown;

/// The file-etl SFTP server: per-user roots with input/, finished/ and error/,
/// and FileReady events over gRPC (etl.v1.SftpGateway) for completed uploads.
#[derive(Parser)]
#[command(name = "sftp-gateway", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: sftp_gateway::Config,
}

#[derive(Subcommand)]
enum Command {
    /// Exits 0 if the gateway's gRPC health is SERVING, 1 otherwise.
    Healthcheck {
        /// gRPC address of the gateway.
        #[arg(long, default_value = "http://127.0.0.1:50052")]
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
                tracing::error!(error = format!("{e:#}"), "sftp-gateway failed");
                eprintln!("sftp-gateway: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(config: sftp_gateway::Config) -> anyhow::Result<()> {
    let _telemetry = etl_telemetry::init("sftp-gateway").context("failed to set up telemetry")?;
    let shutdown = Shutdown::on_signals();
    let running = sftp_gateway::start(config, shutdown)
        .await
        .context("failed to start sftp-gateway")?;
    running
        .wait()
        .await
        .context("sftp-gateway stopped with an error")?;
    Ok(())
}
