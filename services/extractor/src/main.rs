//! `extractor`: parses the command line and hands it to the library
//! ([`extractor::cli`]), which sets up telemetry and does the work.

use clap::Parser;

/// mimalloc instead of glibc's malloc: the transform allocates per row (fields, the TSV line, the
/// detector's buffers) and glibc's allocator showed in every profile; the same choice as connect-manager's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    extractor::cli::Cli::parse().run().await
}
