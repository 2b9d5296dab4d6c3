//! `sink-verifier`: parse flags, set up telemetry, run the library until SIGTERM.

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
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { addr }) = cli.command {
        let addr = addr.unwrap_or(cli.config.grpc_addr);
        let serving = etl_service::probe_health(&addr).await?;
        if !serving {
            anyhow::bail!("sink-verifier at {addr} is not SERVING");
        }
        return Ok(());
    }
    let _telemetry = etl_telemetry::init("sink-verifier").context("failed to set up telemetry")?;
    let shutdown = etl_service::Shutdown::on_signals();
    let running = sink_verifier::start(cli.config, shutdown)
        .await
        .context("failed to start sink-verifier")?;
    running.wait().await.context("sink-verifier failed")?;
    Ok(())
}
