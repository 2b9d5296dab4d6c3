//! `sftp-gateway`: parses flags, sets up telemetry, runs the gateway until
//! SIGTERM/Ctrl-C. `sftp-gateway healthcheck` probes a running one;
//! `hash-password` prints a users-file hash; `host-key` prints (and
//! publishes) the host key's fingerprint without starting the server.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Reads a password from standard input (first line) and prints its argon2
    /// hash, for a --users-file line NAME:HASH[:PROFILE].
    HashPassword,
    /// Prints the SHA256 fingerprint of the host key (generating the key if
    /// missing) and writes it to DATA_DIR/ssh_host_key.sha256, for clients to pin.
    HostKey {
        /// Directory holding the host key (as for the server).
        #[arg(long, env = "ETL_DATA_DIR", default_value = "./data/sftp")]
        data_dir: std::path::PathBuf,
        /// The host key file. Default: DATA_DIR/ssh_host_ed25519_key.
        #[arg(long, env = "ETL_SFTP_HOST_KEY", value_name = "PATH")]
        host_key: Option<std::path::PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck { addr }) => etl_service::healthcheck_command(&addr).await,
        Some(Command::HashPassword) => hash_password(),
        Some(Command::HostKey { data_dir, host_key }) => {
            let config = sftp_gateway::Config {
                data_dir,
                host_key,
                ..Default::default()
            };
            match sftp_gateway::host_key_fingerprint(&config) {
                Ok(fingerprint) => {
                    println!("{fingerprint}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sftp-gateway: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            etl_service::serve_main("sftp-gateway", |shutdown| async move {
                sftp_gateway::start(cli.config, shutdown)
                    .await?
                    .wait()
                    .await
            })
            .await
        }
    }
}

fn hash_password() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("sftp-gateway: cannot read the password from standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("sftp-gateway: empty password (give it on standard input)");
        return ExitCode::FAILURE;
    }
    match sftp_gateway::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sftp-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}
