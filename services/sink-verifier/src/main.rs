//! `sink-verifier`: parse flags, set up telemetry, run the library until SIGTERM.
//! `sink-verifier healthcheck` probes a running one.

use std::process::ExitCode;

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
        None => {
            etl_service::serve_main("sink-verifier", |shutdown| async move {
                sink_verifier::start(cli.config, shutdown)
                    .await?
                    .wait()
                    .await
            })
            .await
        }
    }
}
