//! The command line: every subcommand and flag, each flag with its env twin where one
//! makes sense. Parsing only; the work is in the modules named after the commands.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::stack::{KafkaStorage, MAX_WORKERS, Ports, StackDir, StackPlan, Tracing};

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
    /// The whole pipeline end to end: up (or, with --stack external, services that
    /// already run, e.g. compose's), generate N rows, apply connectors, run the
    /// extractor, wait for the verifier's complete report, print it (with the Jaeger
    /// link of one file's trace) and write `<dir>/report.json`. Exits 0 only when every
    /// row landed exactly once, unaltered.
    Demo(DemoArgs),
    /// The trace of a chunk file (or a trace id) from Jaeger, as a waterfall: every span
    /// of every service the file went through.
    Trace(TraceArgs),
    /// The verifier's report of a run (as it stands now): rows expected and landed,
    /// missing, duplicates, altered, rejected files, copied files (content duplicates),
    /// overlapping rows (a warning), latency.
    /// Exits 0 when the run passed, 2 when it failed, 3 while it is still running.
    Report(ReportArgs),
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

    /// Kafka port on 127.0.0.1.
    #[arg(long, env = "ETL_KAFKA_PORT", default_value_t = Ports::default().kafka)]
    pub kafka_port: u16,

    /// The broker: kafka = Apache Kafka (KRaft) with its log in <dir>/kafka, durable
    /// (survives `down`/`up` and a broker crash; needs `make kafka` and a JDK);
    /// memory = tansu in memory (no JVM, gone after `down` or a broker crash:
    /// benchmarks only); sqlite = tansu
    /// with sqlite in <dir>/tansu (durable, far slower to consume).
    #[arg(long, env = "ETL_KAFKA_STORAGE", value_enum, default_value_t = KafkaStorage::Kafka)]
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

    /// connect-manager's Kafka-Connect-compatible REST port (worker 0's with --workers).
    #[arg(long, env = "ETL_REST_PORT", default_value_t = Ports::default().rest)]
    pub rest_port: u16,

    /// connect-manager workers. 1 (when a stack is started): one standalone
    /// connect-manager, as ever (connectors in <dir>/connect). N > 1: N connect-managers
    /// in distributed mode forming one cluster (group connect-cluster) that keeps its
    /// connectors in Kafka and shares their tasks; each supervised on its own. Worker 0
    /// keeps the standard ports (--base-port + 2, --rest-port); worker k listens on gRPC
    /// --base-port + 3 + k and REST --rest-port + k (50055/8084, 50056/8085, … by
    /// default), with data in <dir>/connect-<k> and log logs/connect-manager-<k>.log.
    /// Every command talks to worker 0. While a stack runs, a different N is refused
    /// (`etlctl down` first); left out, commands take the running stack as it is.
    #[arg(
        long,
        env = "ETL_WORKERS",
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WORKERS))
    )]
    pub workers: Option<u16>,

    /// Start only Postgres and tansu (no service binaries needed).
    #[arg(long, visible_alias = "infra-only", env = "ETL_WITHOUT_SERVICES")]
    pub without_services: bool,

    /// Directory holding the extractor, sftp-gateway, connect-manager and sink-verifier
    /// binaries. Default: the directory of this etlctl executable.
    #[arg(long, env = "ETL_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// OTLP/gRPC port of the embedded trace collector on 127.0.0.1; every service
    /// gets OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:<port>.
    #[arg(long, env = "ETL_OTLP_PORT", default_value_t = Ports::default().otlp)]
    pub otlp_port: u16,

    /// Port of the embedded collector's Jaeger UI and query API on 127.0.0.1
    /// (`etlctl trace` reads it).
    #[arg(long, env = "ETL_JAEGER_PORT", default_value_t = Ports::default().jaeger)]
    pub jaeger_port: u16,

    /// Send the services' spans to this OTLP/gRPC collector instead of starting the
    /// embedded one (no Jaeger UI of our own then: give `etlctl trace` --jaeger-url).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// No collector and no OTEL_* variables for the services: spans are made (rows
    /// still get trace ids) but not exported. For comparing tracing on and off.
    #[arg(long, env = "ETL_NO_TRACING")]
    pub no_tracing: bool,
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
        let plan = StackPlan {
            dir: self.dir.stack_dir()?,
            ports: Ports {
                postgres: self.pg_port,
                kafka: self.kafka_port,
                sftp: self.sftp_port,
                grpc_base: base,
                rest: self.rest_port,
                otlp: self.otlp_port,
                jaeger: self.jaeger_port,
            },
            kafka_storage: self.kafka_storage,
            topic: self.topic.clone(),
            partitions: self.partitions,
            with_services: !self.without_services,
            bin_dir,
            tracing: if self.no_tracing {
                Tracing::Off
            } else {
                match self.otlp_endpoint.as_deref().map(str::trim) {
                    Some(endpoint) if !endpoint.is_empty() => {
                        Tracing::Endpoint(endpoint.to_owned())
                    }
                    _ => Tracing::Embedded,
                }
            },
            connect_workers: self.workers.unwrap_or(1),
        };
        let conflicts = plan.port_conflicts();
        if !conflicts.is_empty() {
            anyhow::bail!(
                "the stack's ports do not fit together:\n  {}",
                conflicts.join("\n  ")
            );
        }
        Ok(plan)
    }
}

/// The command line with an "Environment" section in `etlctl --help`: every variable
/// that is a flag's env twin, the flag and the commands that take it, so one page
/// shows what a container (compose's `etlctl` job) can set.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    let command = Cli::command();
    let section = environment_section(&command);
    command.after_long_help(section)
}

/// Parses the process's arguments (and env twins) with [`command`].
pub fn parse() -> Cli {
    use clap::FromArgMatches as _;
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn environment_section(root: &clap::Command) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    // (env name, flag, value hidden) -> commands
    type Vars = BTreeMap<(String, String, bool), Vec<String>>;
    let mut vars = Vars::new();
    fn walk(command: &clap::Command, path: &str, vars: &mut Vars) {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = if path.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{path} {}", sub.get_name())
            };
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let Some(env) = arg.get_env().and_then(|e| e.to_str()) else {
                    continue;
                };
                let flag = arg
                    .get_long()
                    .map_or_else(|| arg.get_id().to_string(), |l| format!("--{l}"));
                vars.entry((env.to_owned(), flag, arg.is_hide_env_values_set()))
                    .or_default()
                    .push(name.clone());
            }
            walk(sub, &name, vars);
        }
    }
    walk(root, "", &mut vars);
    let mut out =
        String::from("Environment (each variable is the env twin of a flag; the flag wins):\n");
    for ((env, flag, secret), commands) in vars {
        // A secret's value is not printed (clap's hide_env_values).
        let value = if secret {
            String::new()
        } else {
            std::env::var(&env).unwrap_or_default()
        };
        let _ = writeln!(
            out,
            "  {flag:<24} {}\n  {:<24} [env: {env}={value}]",
            commands.join(", "),
            ""
        );
    }
    out
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
    flag("--otlp-port", plan.ports.otlp.to_string());
    flag("--jaeger-port", plan.ports.jaeger.to_string());
    flag("--workers", plan.connect_workers.to_string());
    if let Tracing::Endpoint(endpoint) = &plan.tracing {
        flag("--otlp-endpoint", endpoint.clone());
    }
    if !plan.with_services {
        args.push("--without-services".into());
    }
    if plan.tracing == Tracing::Off {
        args.push("--no-tracing".into());
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

    #[command(flatten)]
    pub endpoints: EndpointArgs,

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

    /// local: the stack of --stack-dir; external: connect-manager at --url (default
    /// http://127.0.0.1:50053), placeholders from the environment and the files'
    /// defaults only.
    #[arg(long = "stack", env = "ETL_STACK", value_enum, default_value_t = StackMode::Local)]
    pub mode: StackMode,

    /// connect-manager's gRPC URL; overrides the stack's.
    #[arg(
        long,
        visible_alias = "connect-url",
        env = "ETL_CONNECT_URL",
        value_name = "URL"
    )]
    pub url: Option<String>,

    /// The API token (local: the stack's <dir>/api-token wins) and the CA of
    /// https:// URLs.
    #[command(flatten)]
    pub security: etl_service::ClientSecurity,
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

    /// Where the generated input is written (default <dir>/input). The extractor reads
    /// it by the same absolute path: with --stack external it must see this directory
    /// at the same path (compose: a shared volume).
    #[arg(long, env = "ETL_INPUT_DIR", value_name = "DIR")]
    pub input_dir: Option<PathBuf>,

    #[command(flatten)]
    pub endpoints: EndpointArgs,
}

/// Which stack a command talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StackMode {
    /// The stack `etlctl up` runs, found through <dir>/stack.json.
    #[default]
    Local,
    /// Services that already run elsewhere (compose), at the --*-url flags.
    External,
}

/// The endpoints of an external stack (`--stack external`, e.g. compose's one-shot
/// job). With `--stack local` only --jaeger-url is used (it overrides stack.json's).
#[derive(Debug, Clone, Default, Args)]
pub struct EndpointArgs {
    /// local: the stack `etlctl up` runs (started if needed by `demo`), found through
    /// <dir>/stack.json; external: services already running elsewhere, at the URLs
    /// below (each defaulting to its design port on 127.0.0.1).
    #[arg(long = "stack", env = "ETL_STACK", value_enum, default_value_t = StackMode::Local)]
    pub mode: StackMode,

    /// The extractor's gRPC URL (--stack external).
    #[arg(long, env = "ETL_EXTRACTOR_URL", value_name = "URL")]
    pub extractor_url: Option<String>,

    /// The sftp-gateway's gRPC URL (--stack external).
    #[arg(long, env = "ETL_GATEWAY_URL", value_name = "URL")]
    pub gateway_url: Option<String>,

    /// connect-manager's gRPC URL (--stack external).
    #[arg(long, env = "ETL_CONNECT_URL", value_name = "URL")]
    pub connect_url: Option<String>,

    /// The sink-verifier's gRPC URL (--stack external).
    #[arg(long, env = "ETL_VERIFIER_URL", value_name = "URL")]
    pub verifier_url: Option<String>,

    /// The Jaeger UI / query API (default: the local stack's, from stack.json, else
    /// http://127.0.0.1:16686).
    #[arg(long, env = "ETL_JAEGER_URL", value_name = "URL")]
    pub jaeger_url: Option<String>,

    /// The API token the services require (local: the stack's <dir>/api-token wins;
    /// external: --api-token, --api-token-file or their env twins) and the CA of
    /// https:// URLs. Health probes need none.
    #[command(flatten)]
    pub security: etl_service::ClientSecurity,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The run id (the demo prints it; also in <dir>/report.json).
    #[arg(value_name = "RUN_ID")]
    pub run_id: String,

    #[command(flatten)]
    pub dir: DirArgs,

    #[command(flatten)]
    pub endpoints: EndpointArgs,

    /// Print the report as JSON (the shape of report.json) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// A chunk file name (looked up in <dir>/report.json, then in Postgres' review
    /// table) or a 32-hex-digit trace id.
    #[arg(value_name = "FILE|TRACE_ID")]
    pub target: String,

    #[command(flatten)]
    pub dir: DirArgs,

    /// local: Jaeger and Postgres from <dir>/stack.json; external: from --jaeger-url
    /// and --database-url (or the ETL_PG_* variables of the connector files).
    #[arg(long = "stack", env = "ETL_STACK", value_enum, default_value_t = StackMode::Local)]
    pub mode: StackMode,

    /// The Jaeger UI / query API (default: the local stack's, from stack.json, else
    /// http://127.0.0.1:16686).
    #[arg(long, env = "ETL_JAEGER_URL", value_name = "URL")]
    pub jaeger_url: Option<String>,

    /// Postgres holding the review table, to find a file's trace id when report.json
    /// does not name it (default: the local stack's, else built from ETL_PG_HOST,
    /// ETL_PG_PORT, ETL_PG_USER, ETL_PG_PASSWORD, ETL_PG_DATABASE).
    #[arg(long, env = "ETL_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// Seconds to keep asking Jaeger while the trace is not there yet (spans are
    /// exported in batches, every few seconds).
    #[arg(long, env = "ETL_TRACE_WAIT", default_value_t = 10)]
    pub wait: u64,
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
        assert_eq!(plan.tracing, Tracing::Embedded);
    }

    #[test]
    fn workers_survive_the_trip_to_the_supervisor_and_default_to_one() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["etlctl", "up", "--dir", "/tmp/x"];
            argv.extend(extra);
            let Command::Up(up) = Cli::try_parse_from(argv).expect("parses").command else {
                panic!("not up")
            };
            up
        };
        let up = parse(&[]);
        assert_eq!(up.stack.workers, None, "not asked for");
        assert_eq!(up.stack.plan().expect("plan").connect_workers, 1);

        let up = parse(&["--workers", "3"]);
        let plan = up.stack.plan().expect("plan");
        assert_eq!(plan.connect_workers, 3);
        let mut argv: Vec<OsString> = vec!["etlctl".into()];
        argv.extend(supervise_args(&plan));
        let Command::Supervise(stack) = Cli::try_parse_from(argv).expect("parses").command else {
            panic!("not supervise")
        };
        assert_eq!(stack.plan().expect("plan"), plan);

        for bad in ["0", "17"] {
            let argv = ["etlctl", "up", "--workers", bad];
            assert!(Cli::try_parse_from(argv).is_err(), "--workers {bad}");
        }
        // Worker ports that meet another flag's are refused before anything starts.
        let up = parse(&["--workers", "2", "--rest-port", "4316"]);
        let err = up.stack.plan().expect_err("4317 twice");
        assert!(format!("{err:#}").contains("4317"), "{err:#}");
    }

    #[test]
    fn tracing_choices_survive_the_trip_to_the_supervisor() {
        for (extra, expected) in [
            (vec!["--no-tracing"], Tracing::Off),
            (
                vec!["--otlp-endpoint", "http://collector:4317"],
                Tracing::Endpoint("http://collector:4317".to_owned()),
            ),
            (
                vec!["--otlp-port", "14317", "--jaeger-port", "26686"],
                Tracing::Embedded,
            ),
        ] {
            let mut argv = vec!["etlctl", "up", "--dir", "/tmp/x"];
            argv.extend(extra.iter().copied());
            let Command::Up(up) = Cli::try_parse_from(argv).expect("parses").command else {
                panic!("not up")
            };
            let plan = up.stack.plan().expect("plan");
            assert_eq!(plan.tracing, expected, "{extra:?}");
            let mut argv: Vec<OsString> = vec!["etlctl".into()];
            argv.extend(supervise_args(&plan));
            let Command::Supervise(stack) = Cli::try_parse_from(argv).expect("parses").command
            else {
                panic!("not supervise")
            };
            assert_eq!(stack.plan().expect("plan"), plan);
        }
    }

    #[test]
    fn top_level_help_lists_every_env_twin() {
        let mut command = command();
        let help = command.render_long_help().to_string();
        // What compose sets on its one-shot `etlctl` job (besides connector
        // placeholders) must be visible here.
        for var in [
            "ETL_STACK",
            "ETL_STACK_DIR",
            "ETL_INPUT_DIR",
            "ETL_CONNECTORS_DIR",
            "ETL_EXTRACTOR_URL",
            "ETL_GATEWAY_URL",
            "ETL_CONNECT_URL",
            "ETL_VERIFIER_URL",
            "ETL_JAEGER_URL",
            "ETL_OTLP_PORT",
            "ETL_JAEGER_PORT",
            "ETL_NO_TRACING",
            "ETL_API_TOKEN",
            "ETL_API_TOKEN_FILE",
            "ETL_TLS_CA",
            "ETL_WORKERS",
        ] {
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{var} not in:\n{help}"
            );
        }
        // The hidden supervisor's flags are not advertised twice.
        assert!(!help.contains("supervise"), "{help}");
    }

    #[test]
    fn external_stack_flags_parse() {
        let cli = Cli::try_parse_from([
            "etlctl",
            "demo",
            "--rows",
            "10",
            "--stack",
            "external",
            "--extractor-url",
            "http://extractor:50051",
            "--input-dir",
            "/data/input",
        ])
        .expect("parses");
        let Command::Demo(demo) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(demo.endpoints.mode, StackMode::External);
        let endpoints = crate::endpoints::Endpoints::external(&demo.endpoints);
        assert_eq!(endpoints.extractor, "http://extractor:50051");
        // Unset URLs default to the design's ports on 127.0.0.1.
        assert_eq!(endpoints.verifier, "http://127.0.0.1:50054");
        assert_eq!(endpoints.jaeger.as_deref(), Some("http://127.0.0.1:16686"));
        assert_eq!(
            demo.input_dir.as_deref(),
            Some(std::path::Path::new("/data/input"))
        );
    }
}
