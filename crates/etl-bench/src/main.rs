//! `etl-bench`: parses the command line, runs the benchmark, prints the table
//! and writes bench.json. Exits 0 whether or not the goals are met (they are
//! reported, not asserted); 1 when the benchmark itself could not run.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let config = etl_bench::Config::parse();
    match bench(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etl-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(config: &etl_bench::Config) -> anyhow::Result<()> {
    let report = etl_bench::run(config).await?;
    print!("{}", report.render());
    if let Some(dir) = config.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&config.output, report.to_json())
        .with_context(|| format!("cannot write {}", config.output.display()))?;
    println!("written to {}", config.output.display());
    Ok(())
}
