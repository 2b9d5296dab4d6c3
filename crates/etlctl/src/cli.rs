//! The command line: every subcommand and flag, each flag with its env twin where one
//! makes sense. Parsing only; the work is in the modules named after the commands.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::stack::{KafkaStorage, Ports, StackDir, StackPlan};

/// Operator CLI of file-etl: runs the local stack (Postgres, tansu, the four services)
/// under one supervisor, applies connectors, runs the demo and reports what landed.
#[derive(Debug, Parser)]
#[command(name = "etlctl", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Starts the local stack in the background and returns once every health check
    /// passes. Says so and exits 0 when it is already up.
    Up(UpArgs),
    /// Stops the local stack (services, then tansu, then Postgres). Data in the stack
    /// directory is kept; `rm -rf .etl` forgets it.
    Down(DownArgs),
    /// Health and endpoints of every component; exits 1 unless all are healthy.
    Status(StatusArgs),
    /// Connector configs: apply the JSON files, or list what runs.
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
    /// The whole pipeline end to end: up, generate N rows, apply connectors, run the
    /// extractor, wait for the verifier's complete report, print it and write
    /// `<dir>/report.json`. Exits 0 only when every row landed exactly once, unaltered.
    Demo(DemoArgs),
    /// The trace of a file or a trace id (not available yet).
    Trace(TraceArgs),
    /// Exits 0 when the gRPC health service at --addr is SERVING, 1 otherwise.
    Healthcheck(HealthcheckArgs),
    /// Runs the stack in the foreground until SIGTERM/SIGINT (what `up` starts in the
    /// background).
    #[command(hide = true)]
    Supervise(StackArgs),
}

/// The stack directory alone, for commands that only read what `up` wrote.
#[derive(Debug, Clone, Args)]
pub struct DirArgs {
    /// The stack directory: pid file, stack.json, logs and data.
    #[arg(
        long,
        env = "ETL_STACK_DIR",
        default_value = ".etl",
        value_name = "DIR"
    )]
    pub dir: PathBuf,
}

impl DirArgs {
    pub fn stack_dir(&self) -> anyhow::Result<StackDir> {
        Ok(StackDir::new(&self.dir)?)
    }
}

/// What the stack is made of; shared by `up`, `demo` and `supervise`.
#[derive(Debug, Clone, Args)]
pub struct StackArgs {
    #[command(flatten)]
    pub dir: DirArgs,

    /// Postgres port on 127.0.0.1 (database nlp_db, user postgres, no password).
    #[arg(long, env = "ETL_PG_PORT", default_value_t = Ports::default().postgres)]
    pub pg_port: u16,

    /// Kafka (tansu) port on 127.0.0.1.
    #[arg(long, env = "ETL_KAFKA_PORT", default_value_t = Ports::default().kafka)]
    pub kafka_port: u16,

    /// Where tansu keeps records: memory (fast, gone after `down`) or sqlite in
    /// <dir>/tansu (survives `down`/`up`, several times slower to consume).
    #[arg(long, env = "ETL_KAFKA_STORAGE", value_enum, default_value_t = KafkaStorage::Memory)]
    pub kafka_storage: KafkaStorage,

    /// The topic created at start (if missing) and used by the connectors.
    #[arg(long, env = "ETL_TOPIC", default_value = "review-etl")]
    pub topic: String,

    /// Partitions of the topic when it is created.
    #[arg(long, env = "ETL_TOPIC_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,

    /// SFTP port of the sftp-gateway.
    #[arg(long, env = "ETL_SFTP_PORT", default_value_t = Ports::default().sftp)]
    pub sftp_port: u16,

    /// First of four consecutive gRPC ports: extractor, sftp-gateway, connect-manager,
    /// sink-verifier (50051..50054 by default).
    #[arg(long, env = "ETL_BASE_PORT", default_value_t = Ports::default().grpc_base)]
    pub base_port: u16,

    /// connect-manager's Kafka-Connect-compatible REST port.
    #[arg(long, env = "ETL_REST_PORT", default_value_t = Ports::default().rest)]
    pub rest_port: u16,

    /// Start only Postgres and tansu (no service binaries needed).
    #[arg(long, visible_alias = "infra-only", env = "ETL_WITHOUT_SERVICES")]
    pub without_services: bool,

    /// Directory holding the extractor, sftp-gateway, connect-manager and sink-verifier
    /// binaries. Default: the directory of this etlctl executable.
    #[arg(long, env = "ETL_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

impl StackArgs {
    /// The plan these flags describe, with every path made absolute.
    pub fn plan(&self) -> anyhow::Result<StackPlan> {
        let base = self.base_port;
        if base.checked_add(3).is_none() {
            anyhow::bail!("--base-port {base} leaves no room for four consecutive ports");
        }
        let bin_dir = match &self.bin_dir {
            Some(dir) => StackDir::new(dir)?.root().to_path_buf(),
            None => {
                let exe = std::env::current_exe()?;
                exe.parent()
                    .map(std::path::Path::to_path_buf)
                    .ok_or_else(|| anyhow::anyhow!("{} has no parent directory", exe.display()))?
            }
        };
        Ok(StackPlan {
            dir: self.dir.stack_dir()?,
            ports: Ports {
                postgres: self.pg_port,
                kafka: self.kafka_port,
                sftp: self.sftp_port,
                grpc_base: base,
                rest: self.rest_port,
            },
            kafka_storage: self.kafka_storage,
            topic: self.topic.clone(),
            partitions: self.partitions,
            with_services: !self.without_services,
            bin_dir,
        })
    }
}

/// The arguments of `etlctl supervise` for `plan`: everything explicit, so the
/// supervisor does not depend on the environment `up` ran in.
pub fn supervise_args(plan: &StackPlan) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["supervise".into(), "--dir".into()];
    args.push(plan.dir.root().into());
    let mut flag = |name: &str, value: String| {
        args.push(name.into());
        args.push(value.into());
    };
    flag("--pg-port", plan.ports.postgres.to_string());
    flag("--kafka-port", plan.ports.kafka.to_string());
    flag("--kafka-storage", plan.kafka_storage.to_string());
    flag("--topic", plan.topic.clone());
    flag("--partitions", plan.partitions.to_string());
    flag("--sftp-port", plan.ports.sftp.to_string());
    flag("--base-port", plan.ports.grpc_base.to_string());
    flag("--rest-port", plan.ports.rest.to_string());
    flag("--bin-dir", plan.bin_dir.display().to_string());
    if !plan.with_services {
        args.push("--without-services".into());
    }
    args
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Seconds to wait for every health check before giving up (the stack is left
    /// running for inspection; `etlctl down` stops it).
    #[arg(long, env = "ETL_UP_TIMEOUT", default_value_t = 180)]
    pub timeout: u64,

    /// Start even when some service binaries are missing (they show as `missing
    /// binary` in `status`, and are started as soon as they appear).
    #[arg(long, env = "ETL_ALLOW_MISSING_SERVICES")]
    pub allow_missing_services: bool,
}

impl UpArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }
}

#[derive(Debug, Clone, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub dir: DirArgs,

    /// Seconds to wait for the supervisor to stop everything before killing what is
    /// left.
    #[arg(long, env = "ETL_DOWN_TIMEOUT", default_value_t = 90)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub dir: DirArgs,

    /// Print JSON (components with health and endpoints) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConnectorsCommand {
    /// Creates (or updates) a connector for every `*.json` in --dir, with placeholders
    /// expanded from the environment first, then from the running stack.
    Apply(ConnectorsApplyArgs),
    /// Connectors known to connect-manager, with their state.
    List(ConnectorsTarget),
}

/// Which connect-manager to talk to.
#[derive(Debug, Clone, Args)]
pub struct ConnectorsTarget {
    /// The stack directory whose stack.json names connect-manager's URL.
    #[arg(
        long,
        env = "ETL_STACK_DIR",
        default_value = ".etl",
        value_name = "DIR"
    )]
    pub stack_dir: PathBuf,

    /// connect-manager's gRPC URL; overrides the stack's.
    #[arg(long, env = "ETL_CONNECT_URL", value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ConnectorsApplyArgs {
    /// Directory of connector files (`{"name": …, "config": {…}}`).
    #[arg(
        long = "dir",
        env = "ETL_CONNECTORS_DIR",
        default_value = "deploy/connectors",
        value_name = "DIR"
    )]
    pub connectors_dir: PathBuf,

    #[command(flatten)]
    pub target: ConnectorsTarget,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    /// Rows of synthetic Amazon-format reviews to generate.
    #[arg(long, env = "ETL_DEMO_ROWS")]
    pub rows: u64,

    /// Seed of the generator: the same seed gives the same file.
    #[arg(long, env = "ETL_DEMO_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Rows per chunk file.
    #[arg(long, env = "ETL_CHUNK_SIZE", default_value_t = 1000)]
    pub chunk_size: u32,

    /// Label scheme of the generated input: polarity (1/2) or stars (1-5).
    #[arg(long, env = "ETL_LABELS", default_value = "polarity")]
    pub labels: String,

    /// Seconds from StartRun until the verifier's report must be complete.
    #[arg(long, env = "ETL_DEMO_TIMEOUT", default_value_t = 600)]
    pub timeout: u64,

    /// Seconds to wait for the stack's health checks when the demo starts it.
    #[arg(long, env = "ETL_UP_TIMEOUT", default_value_t = 180)]
    pub up_timeout: u64,

    /// Directory of the connector files to apply.
    #[arg(
        long,
        env = "ETL_CONNECTORS_DIR",
        default_value = "deploy/connectors",
        value_name = "DIR"
    )]
    pub connectors_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// A chunk file name or a trace id.
    pub target: String,
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The gRPC server to probe: `host:port` or `http://host:port`.
    #[arg(long, env = "ETL_HEALTHCHECK_ADDR")]
    pub addr: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn supervise_args_parse_back_to_the_same_plan() {
        let cli = Cli::try_parse_from([
            "etlctl",
            "up",
            "--dir",
            "/tmp/x",
            "--pg-port",
            "15432",
            "--kafka-storage",
            "sqlite",
            "--base-port",
            "40000",
            "--without-services",
            "--bin-dir",
            "/opt/bin",
        ])
        .expect("parses");
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        let plan = up.stack.plan().expect("plan");
        let mut argv: Vec<OsString> = vec!["etlctl".into()];
        argv.extend(supervise_args(&plan));
        let cli = Cli::try_parse_from(argv).expect("parses");
        let Command::Supervise(stack) = cli.command else {
            panic!("not supervise")
        };
        assert_eq!(stack.plan().expect("plan"), plan);
        assert!(!plan.with_services);
        assert_eq!(plan.ports.postgres, 15432);
        assert_eq!(plan.kafka_storage, KafkaStorage::Sqlite);
    }
}
