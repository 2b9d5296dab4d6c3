//! `extractor`: parses the command line and hands it to the library
//! ([`extractor::cli`]), which sets up telemetry and does the work.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    extractor::cli::Cli::parse().run().await
}
