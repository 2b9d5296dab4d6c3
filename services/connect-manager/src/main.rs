//! `connect-manager`: parses flags, sets up telemetry, runs the connectors
//! until SIGTERM/Ctrl-C. `connect-manager healthcheck` probes a running one.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        None => {
            etl_service::serve_main("connect-manager", |shutdown| async move {
                connect_manager::start(cli.config, shutdown)
                    .await?
                    .wait()
                    .await
            })
            .await
        }
    }
}
