//! `sink-verifier`: parse flags, set up telemetry, run the library until SIGTERM.
//! `sink-verifier healthcheck` probes a running one.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sink_verifier::Config;

#[derive(Parser)]
#[command(
    name = "sink-verifier",
    version,
    about = "Proves every row of every registered file landed in Postgres once and unaltered"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Exits 0 only when the verifier's gRPC health is SERVING.
    Healthcheck {
        /// Address to probe (default: --grpc-addr).
        #[arg(long)]
        addr: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck { addr }) => {
            let addr = addr.unwrap_or(cli.config.grpc_addr);
            etl_service::healthcheck_command(&addr).await
        }
        None => match run(cli.config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "sink-verifier failed");
                eprintln!("sink-verifier: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let _telemetry = etl_telemetry::init("sink-verifier").context("failed to set up telemetry")?;
    let shutdown = etl_service::Shutdown::on_signals();
    let running = sink_verifier::start(config, shutdown)
        .await
        .context("failed to start sink-verifier")?;
    running.wait().await.context("sink-verifier failed")?;
    Ok(())
}
