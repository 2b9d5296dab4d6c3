//! The command line: flags with their `ETL_*` env twins (see `--help`) and
//! what each subcommand does. `serve` (the default) runs the gRPC server,
//! `run` extracts files now, `generate` writes synthetic reviews,
//! `healthcheck` probes a running server. `main.rs` only parses and calls
//! [`Cli::run`].

use std::{
    io::{BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use etl_core::review::LabelScheme;
use etl_service::Shutdown;

use crate::{
    Config, Endpoints, Progress, RunDefaults, SourceSpec, progress::Reporter,
    run::DEFAULT_SOURCE_NAME,
};

/// The file-etl extractor: reads labeled review datasets (Amazon CSV without
/// header: label,title,body), keeps the rows in the wanted languages, writes them
/// as TSV chunk files (header body feedback_type source is_streaming language_code),
/// uploads them over SFTP and registers each file with the sink-verifier.
///
/// Without a subcommand it runs the gRPC server, like `extractor serve`.
#[derive(Parser)]
#[command(name = "extractor", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the gRPC server (etl.v1.Extractor: StartRun, WatchRun) until SIGTERM.
    Serve(Config),
    /// Extracts input files now: chunk files to --output-dir and/or uploaded over SFTP.
    Run(RunArgs),
    /// Writes synthetic Amazon-format reviews (deterministic per seed).
    Generate(GenerateArgs),
    /// Exits 0 if the extractor's gRPC health is SERVING, 1 otherwise.
    Healthcheck {
        /// gRPC address of the extractor (https:// trusts ETL_TLS_CA). Health needs
        /// no API token.
        #[arg(
            long,
            env = "ETL_EXTRACTOR_URL",
            default_value = "http://127.0.0.1:50051"
        )]
        addr: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Input file in Amazon format; source name "amazon". Repeatable; the env twin
    /// takes a comma-separated list.
    #[arg(
        long = "input",
        value_name = "PATH",
        env = "ETL_INPUT",
        value_delimiter = ','
    )]
    inputs: Vec<PathBuf>,

    /// A named input: NAME=PATH, or NAME=PATH:polarity / NAME=PATH:stars to set the
    /// label scheme of this file. NAME is written to the `source` column. Repeatable;
    /// the env twin takes a comma-separated list.
    #[arg(
        long = "source",
        value_name = "NAME=PATH[:SCHEME]",
        env = "ETL_SOURCES",
        value_delimiter = ','
    )]
    sources: Vec<String>,

    /// Label scheme of inputs that do not name one: polarity (1 negative, 2 positive)
    /// or stars (1-5: >3 positive, 3 neutral, <3 negative).
    #[arg(long, env = "ETL_LABELS", default_value = "polarity")]
    labels: LabelScheme,

    /// Write chunk files into this directory. Without it, chunk files are uploaded.
    #[arg(long, env = "ETL_OUTPUT_DIR", value_name = "DIR")]
    output_dir: Option<PathBuf>,

    /// Upload chunk files over SFTP (implied when there is no --output-dir).
    #[arg(long, env = "ETL_UPLOAD")]
    upload: bool,

    /// Upload without registering files with the sink-verifier (standalone use).
    #[arg(long, env = "ETL_NO_REGISTER")]
    no_register: bool,

    /// Run id, part of every chunk file name. Default: derived from the inputs'
    /// content, names and the options that shape the output, so running the same
    /// input again (after a crash, or twice) resumes the same run: chunk files
    /// already published are skipped and nothing is loaded twice.
    #[arg(long, env = "ETL_RUN_ID")]
    run_id: Option<String>,

    #[command(flatten)]
    endpoints: Endpoints,

    #[command(flatten)]
    defaults: RunDefaults,

    /// The token and CA of the calls to the gateway and the verifier.
    #[command(flatten)]
    security: etl_service::ClientSecurity,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Number of reviews.
    #[arg(long, env = "ETL_GENERATE_ROWS", default_value_t = 1000)]
    rows: u64,

    /// Seed: the same seed always gives the same reviews.
    #[arg(long, env = "ETL_GENERATE_SEED", default_value_t = 42)]
    seed: u64,

    /// Label scheme: polarity (labels 1, 2) or stars (labels 1-5).
    #[arg(long, env = "ETL_LABELS", default_value = "polarity")]
    labels: LabelScheme,

    /// Output file; default: stdout.
    #[arg(long, env = "ETL_GENERATE_OUTPUT", value_name = "FILE")]
    output: Option<PathBuf>,
}

impl Cli {
    /// Runs what the command line asks for and returns the process's exit
    /// code; errors are logged and printed to stderr with their context.
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            None => return serve(self.config).await,
            Some(Command::Serve(config)) => return serve(config).await,
            Some(Command::Run(args)) => run(args).await,
            Some(Command::Generate(args)) => write_generated(&args),
            Some(Command::Healthcheck { addr }) => {
                return etl_service::healthcheck_command(&addr).await;
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "extractor failed");
                eprintln!("extractor: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve(config: Config) -> ExitCode {
    etl_service::serve_main("extractor", |shutdown| async move {
        crate::start(config, shutdown).await?.wait().await
    })
    .await
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let _telemetry = etl_telemetry::init("extractor").context("failed to set up telemetry")?;
    let mut sources: Vec<SourceSpec> = args
        .inputs
        .iter()
        .map(|path| SourceSpec {
            name: DEFAULT_SOURCE_NAME.into(),
            path: path.clone(),
            labels: args.labels,
        })
        .collect();
    for s in &args.sources {
        sources.push(SourceSpec::parse(s, args.labels).map_err(anyhow::Error::msg)?);
    }
    let mut opts = args.defaults.options(sources);
    opts.run_id = args.run_id;
    opts.output_dir = args.output_dir;
    if args.upload || opts.output_dir.is_none() {
        let auth = args
            .security
            .auth()
            .context("failed to read the API token or the TLS CA")?;
        opts.upload = Some(args.endpoints.upload_target(!args.no_register, auth)?);
    }
    let progress = Arc::new(Progress::new());
    let reporter = Reporter::start(progress.clone());
    let result = crate::extract(opts, progress, Shutdown::on_signals()).await;
    drop(reporter);
    let summary = result?;
    println!("{summary}");
    Ok(())
}

fn write_generated(args: &GenerateArgs) -> anyhow::Result<()> {
    match &args.output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut out = BufWriter::new(file);
            crate::generate(args.rows, args.seed, args.labels, &mut out)?;
            out.flush()?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::new(stdout.lock());
            crate::generate(args.rows, args.seed, args.labels, &mut out)?;
            out.flush()?;
        }
    }
    Ok(())
}
