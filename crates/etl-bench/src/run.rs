//! The benchmark in order, for each storage: a private stack is started cold
//! (empty directory) and stopped, started again (the `up` that is timed), then
//! the warm-up (connectors applied, one file through them), the burst, the
//! floors on the same stack, the steady phase, the last samples of every
//! process, and `etlctl down`. With `--tracing-overhead`, one more warm-up and
//! burst run on a fresh stack with `--no-tracing`. Then the scale-out series:
//! for each worker count (`--scale-workers`, 1,2,3) a fresh stack with
//! `etlctl up --workers N`, warm-up, the same burst, a short steady phase, and
//! `down`; a run that fails is recorded as failed and the series goes on, so
//! the figures already measured are written all the same.
//!
//! Every stack is stopped whatever happens (an error, Ctrl-C): the benchmark
//! never leaves processes behind. Progress goes to stderr; the table to stdout.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::Parser;
use extractor::chunk::ChunkFile;

use crate::burst::{self, Burst, Windows, per_second, ratio};
use crate::error::{Error, Result};
use crate::floors::{self, Floors, ms};
use crate::report::{
    self, BenchReport, Machine, ScaleBurst, ScaleReport, ScaleRun, SecondBurst, Settings,
    StorageReport, TracingOverhead,
};
use crate::resources::{self, Resources};
use crate::stack::{BROKER, DemoRun, Ports, Stack, Storage};
use crate::steady::{self, Plan};

/// Measures file-etl on the local stack (private ports and directories, so a
/// running stack is untouched): floors, the 100k-row burst per stage, steady
/// latency and resources, on each broker storage. Prints one table and writes
/// bench.json. Figures are reported against the goals, never asserted.
/// Needs the release binaries (`cargo build --release --bins`), a JDK with
/// `make kafka` for the durable broker, and tansu (`make tansu`) for memory.
#[derive(Clone, Debug, Parser)]
#[command(name = "etl-bench", version)]
pub struct Config {
    /// Broker storages to measure, comma-separated: memory (tansu's memory
    /// engine) and durable (Apache Kafka, log on disk).
    #[arg(
        long = "storage",
        env = "ETL_BENCH_STORAGES",
        value_enum,
        value_delimiter = ',',
        default_values_t = [Storage::Memory, Storage::Durable]
    )]
    pub storages: Vec<Storage>,

    /// Rows of the burst (`etlctl demo --rows`). Default 100000 (10000 with --quick).
    #[arg(long, env = "ETL_BENCH_ROWS")]
    pub rows: Option<u64>,

    /// Seed of the burst's input (the steady files use seed + 1).
    #[arg(long, env = "ETL_BENCH_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Input rows per chunk file of the burst (`etlctl demo --chunk-size`).
    #[arg(long, env = "ETL_BENCH_CHUNK_SIZE", default_value_t = 1000)]
    pub chunk_size: u32,

    /// Steady phase: files uploaded per second.
    #[arg(long, env = "ETL_BENCH_STEADY_RATE", default_value_t = 10.0)]
    pub steady_rate: f64,

    /// Steady phase: seconds of uploads. Default 60 (5 with --quick).
    #[arg(long, env = "ETL_BENCH_STEADY_SECONDS")]
    pub steady_seconds: Option<f64>,

    /// Steady phase: rows per file.
    #[arg(long, env = "ETL_BENCH_STEADY_ROWS", default_value_t = 100)]
    pub steady_rows: usize,

    /// A smoke run: 10,000 burst rows and 5 s of steady uploads (explicit
    /// --rows and --steady-seconds still win).
    #[arg(long, env = "ETL_BENCH_QUICK")]
    pub quick: bool,

    /// The etlctl binary that runs the stacks; the service binaries (and the
    /// extractor of the extractor-alone floor) are taken from its directory.
    #[arg(
        long,
        env = "ETL_BENCH_ETLCTL",
        default_value = "target/release/etlctl"
    )]
    pub etlctl: PathBuf,

    /// Connector configs the demo applies.
    #[arg(
        long,
        env = "ETL_BENCH_CONNECTORS_DIR",
        default_value = "deploy/connectors"
    )]
    pub connectors_dir: PathBuf,

    /// Where bench.json is written.
    #[arg(long, env = "ETL_BENCH_OUTPUT", default_value = ".etl/bench.json")]
    pub output: PathBuf,

    /// Parent of the run's temporary directory (stack data, etlctl's output).
    #[arg(long, env = "ETL_BENCH_WORK_DIR", default_value_os_t = std::env::temp_dir())]
    pub work_dir: PathBuf,

    /// Keep the temporary directory (stack data, logs) after a successful run;
    /// it is always kept after a failure.
    #[arg(long, env = "ETL_BENCH_KEEP")]
    pub keep: bool,

    /// Run the stacks with --no-tracing (no spans exported: the upload and
    /// verify stages are then not measured, and produce is read from Kafka).
    #[arg(long, env = "ETL_BENCH_NO_TRACING")]
    pub no_tracing: bool,

    /// After each storage, one more burst on a fresh stack with --no-tracing,
    /// to report the throughput ratio tracing on / off.
    #[arg(long, env = "ETL_BENCH_TRACING_OVERHEAD")]
    pub tracing_overhead: bool,

    /// Skip the warm-up: by default the connectors are applied and one steady
    /// file is sent through them before the burst, so that the burst meets
    /// running connectors (consumer group joined, table created) as a pipeline
    /// in service does; that file's latency is reported apart. Without it, the
    /// burst includes the connectors' start.
    #[arg(long, env = "ETL_BENCH_NO_WARMUP")]
    pub no_warmup: bool,

    /// Skip the second burst: after the steady phase, the same number of rows
    /// with seed + 2 on the same stack. The demo generator's sentence pool
    /// makes about a tenth of its rows overlap the first burst's, in every
    /// file, so it measures what the verifier's content-duplicate checks cost
    /// when a run's rows already landed (the first burst has nothing to
    /// compare with).
    #[arg(long, env = "ETL_BENCH_NO_SECOND_BURST")]
    pub no_second_burst: bool,

    /// The gateway account the steady files are uploaded with, by profile:
    /// upload (the extractor's account, as the pipeline uploads) or full
    /// (connect-manager's own account).
    #[arg(long, env = "ETL_BENCH_STEADY_PROFILE", default_value = "upload")]
    pub steady_profile: String,

    /// The sink's table (the connector config's table.name.format).
    #[arg(long, env = "ETL_BENCH_TABLE", default_value = "review")]
    pub table: String,

    /// Seconds the demo may take until the verifier's report is complete.
    #[arg(long, env = "ETL_BENCH_DEMO_TIMEOUT", default_value_t = 900)]
    pub demo_timeout: u64,

    /// Scale-out series: connect-manager worker counts, comma-separated. Each
    /// runs the warm-up, the burst and a short steady phase on a fresh stack
    /// started with `etlctl up --workers N` (1: the standalone worker; more: a
    /// distributed cluster, whose connectors the demo applies with tasks.max N).
    #[arg(
        long,
        env = "ETL_BENCH_SCALE_WORKERS",
        value_name = "N,…",
        value_delimiter = ',',
        default_values_t = [1u16, 2, 3],
        value_parser = clap::value_parser!(u16).range(1..=16)
    )]
    pub scale_workers: Vec<u16>,

    /// Broker storages of the scale-out series, comma-separated: bench.json's
    /// `scale` (memory) and `scale_durable`. Both by default: a distributed
    /// cluster keeps its connectors and task assignments in Kafka topics and
    /// consumer groups, which each broker must carry for the series to run.
    #[arg(
        long = "scale-storage",
        env = "ETL_BENCH_SCALE_STORAGES",
        value_enum,
        value_delimiter = ',',
        default_values_t = [Storage::Memory, Storage::Durable]
    )]
    pub scale_storages: Vec<Storage>,

    /// Seconds of steady uploads on each scale-out stack (at --steady-rate, of
    /// --steady-rows): the steady p50 with N workers. Default 10 (2 with
    /// --quick); 0 leaves the steady phase out.
    #[arg(long, env = "ETL_BENCH_SCALE_STEADY_SECONDS")]
    pub scale_steady_seconds: Option<f64>,

    /// Skip the scale-out series.
    #[arg(long, env = "ETL_BENCH_NO_SCALE")]
    pub no_scale: bool,
}

impl Config {
    pub fn rows(&self) -> u64 {
        self.rows
            .unwrap_or(if self.quick { 10_000 } else { 100_000 })
    }

    pub fn steady_plan(&self) -> Plan {
        let seconds = self
            .steady_seconds
            .unwrap_or(if self.quick { 5.0 } else { 60.0 });
        Plan {
            rate: self.steady_rate,
            duration: Duration::from_secs_f64(seconds.max(0.1)),
            rows_per_file: self.steady_rows.max(1),
            seed: self.seed + 1,
            drain: Duration::from_secs(60),
        }
    }

    /// The scale-out series' worker counts, in order, once each (none with
    /// `--no-scale`).
    pub fn scale_workers(&self) -> Vec<u16> {
        if self.no_scale {
            return Vec::new();
        }
        let mut workers = self.scale_workers.clone();
        workers.sort_unstable();
        workers.dedup();
        workers
    }

    /// The steady phase of each scale-out stack; `None` for none.
    pub fn scale_steady_plan(&self) -> Option<Plan> {
        let seconds = self
            .scale_steady_seconds
            .unwrap_or(if self.quick { 2.0 } else { 10.0 });
        (seconds > 0.0 && seconds.is_finite()).then(|| Plan {
            duration: Duration::from_secs_f64(seconds),
            ..self.steady_plan()
        })
    }

    fn validate(&self) -> Result<()> {
        if !(self.steady_rate > 0.0 && self.steady_rate.is_finite()) {
            return Err(Error::Config(format!(
                "--steady-rate {} must be a positive number of files per second",
                self.steady_rate
            )));
        }
        if self.rows() == 0 {
            return Err(Error::Config("--rows must be at least 1".to_owned()));
        }
        if self.storages.is_empty() {
            return Err(Error::Config("--storage names no storage".to_owned()));
        }
        if !self.scale_workers().is_empty() && self.scale_storages.is_empty() {
            return Err(Error::Config(
                "--scale-storage names no storage (or skip the series: --no-scale)".to_owned(),
            ));
        }
        if !self.etlctl.is_file() {
            return Err(Error::Config(format!(
                "{} not found: build the release binaries first (`cargo build --release --bins`) \
                 or point --etlctl at etlctl",
                self.etlctl.display()
            )));
        }
        if !self.connectors_dir.is_dir() {
            return Err(Error::Config(format!(
                "connector directory {} not found (run from the repository root, or set \
                 --connectors-dir)",
                self.connectors_dir.display()
            )));
        }
        Ok(())
    }

    fn extractor(&self) -> PathBuf {
        self.etlctl.with_file_name("extractor")
    }
}

/// Runs everything the config asks for and returns the evaluated report.
/// The temporary directory is removed on success unless `--keep`.
pub async fn run(config: &Config) -> Result<BenchReport> {
    config.validate()?;
    let absolute = |p: &Path| -> Result<PathBuf> { std::path::absolute(p).map_err(Error::io(p)) };
    let config = Config {
        etlctl: absolute(&config.etlctl)?,
        connectors_dir: absolute(&config.connectors_dir)?,
        ..config.clone()
    };
    let work = make_work_dir(&config.work_dir)?;
    eprintln!("etl-bench: working in {}", work.display());

    let plan = config.steady_plan();
    let files = tokio::task::spawn_blocking(move || steady::make_files(&plan, "steady"))
        .await
        .map_err(|e| Error::Unexpected {
            what: "making the steady files".to_owned(),
            reason: e.to_string(),
        })??;

    let mut report = BenchReport {
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        machine: machine(),
        settings: Settings {
            rows: config.rows(),
            seed: config.seed,
            chunk_size: config.chunk_size,
            steady_rate_per_s: plan.rate,
            steady_seconds: plan.duration.as_secs_f64(),
            steady_rows_per_file: plan.rows_per_file,
            tracing: !config.no_tracing,
            quick: config.quick,
            warmup: !config.no_warmup,
            second_burst: !config.no_second_burst,
            steady_profile: config.steady_profile.clone(),
            scale_workers: config.scale_workers(),
            scale_steady_seconds: config
                .scale_steady_plan()
                .map_or(0.0, |p| p.duration.as_secs_f64()),
        },
        ..BenchReport::default()
    };
    for storage in config.storages.clone() {
        let measured = measure(&config, storage, &work, &files).await;
        let measured = match measured {
            Ok(m) => m,
            Err(e) => {
                eprintln!(
                    "etl-bench: {}: failed; stack data and logs kept in {}",
                    storage.name(),
                    work.display()
                );
                return Err(e);
            }
        };
        match storage {
            Storage::Memory => report.memory = Some(measured),
            Storage::Durable => report.durable = Some(measured),
        }
    }
    let mut scale_failed = false;
    if !config.scale_workers().is_empty() {
        let scale_files = match config.scale_steady_plan() {
            Some(plan) => tokio::task::spawn_blocking(move || steady::make_files(&plan, "scale"))
                .await
                .map_err(|e| Error::Unexpected {
                    what: "making the scale-out steady files".to_owned(),
                    reason: e.to_string(),
                })??,
            None => Vec::new(),
        };
        for storage in config.scale_storages.clone() {
            let scale = scale_series(&config, storage, &work, &scale_files).await?;
            scale_failed |= scale.runs.values().any(|r| r.error.is_some());
            match storage {
                Storage::Memory => report.scale = Some(scale),
                Storage::Durable => report.scale_durable = Some(scale),
            }
        }
    }
    report.evaluate();
    if scale_failed {
        eprintln!(
            "etl-bench: a scale-out run failed; stack data and logs kept in {}",
            work.display()
        );
    } else if config.keep {
        eprintln!("etl-bench: kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(report)
}

/// The scale-out series on one storage. A run that fails is recorded with its
/// error and the series goes on; only Ctrl-C stops it.
async fn scale_series(
    config: &Config,
    storage: Storage,
    work: &Path,
    files: &[ChunkFile],
) -> Result<ScaleReport> {
    let mut scale = ScaleReport {
        storage: storage.name().to_owned(),
        broker: storage.broker().to_owned(),
        ..ScaleReport::default()
    };
    for workers in config.scale_workers() {
        let run = match scale_run(config, storage, workers, work, files).await {
            Ok(run) => run,
            Err(e @ Error::Interrupted { .. }) => return Err(e),
            Err(e) => {
                eprintln!(
                    "etl-bench: {} with {workers} workers failed: {e}",
                    storage.name()
                );
                ScaleRun {
                    workers,
                    mode: mode(workers).to_owned(),
                    error: Some(e.to_string()),
                    ..ScaleRun::default()
                }
            }
        };
        scale.insert(run);
    }
    scale.compute_speedups();
    Ok(scale)
}

/// connect-manager's mode with `workers` workers, as etlctl runs it.
fn mode(workers: u16) -> &'static str {
    if workers > 1 {
        "distributed"
    } else {
        "standalone"
    }
}

/// One stack of the scale-out series: `up --workers N`, warm-up, the burst,
/// where the tasks ran, a short steady phase, `down`.
async fn scale_run(
    config: &Config,
    storage: Storage,
    workers: u16,
    work: &Path,
    files: &[ChunkFile],
) -> Result<ScaleRun> {
    let name = format!("{}-workers-{workers}", storage.name());
    let stack = new_stack(config, storage, work, &name, !config.no_tracing, workers)?;
    eprintln!(
        "etl-bench: {name}: {} with {workers} connect-manager worker(s) ({}); etlctl output in {}",
        storage.broker(),
        mode(workers),
        stack.log().display()
    );
    let up_ms = ms(up(&stack).await?);
    then_down(&stack, async {
        let info = stack.info()?;
        let warmup_ms = warm_up(config, &stack, &info.postgres.url).await?;
        let demo = demo(config, &stack, "burst", config.seed).await?;
        let r = &demo.report;
        // Where the tasks ran is a figure of the run, not a condition of it.
        let tasks = match stack.tasks().await {
            Ok(tasks) => Some(tasks),
            Err(e) => {
                eprintln!("etl-bench: {name}: where the tasks ran is unknown: {e}");
                None
            }
        };
        let steady = match config.scale_steady_plan() {
            Some(plan) if !files.is_empty() => {
                let steady = steady::run(
                    &plan,
                    files.to_vec(),
                    &gateway(&stack, &config.steady_profile)?,
                    &info.postgres.url,
                    &config.table,
                )
                .await?;
                eprintln!(
                    "etl-bench: {name}: steady p50 {} ms, {}/{} files landed",
                    steady.latency_ms.p50, steady.files_landed, steady.files
                );
                Some(steady)
            }
            _ => None,
        };
        let last = stack.info()?;
        let restarts = last.services.iter().map(|s| s.restarts).sum::<u32>()
            + last.kafka.process.restarts
            + last.postgres.process.restarts;
        Ok(ScaleRun {
            workers,
            mode: mode(workers).to_owned(),
            error: None,
            up_ms,
            burst: ScaleBurst {
                run_id: r.run_id.clone(),
                passed: demo.passed,
                rows_landed: r.rows_landed,
                elapsed_ms: r.elapsed_ms,
                rows_per_s: per_second(r.rows_landed, r.elapsed_ms as f64),
                speedup: None,
                latency_ms: [
                    ("p50", r.latency_ms.p50),
                    ("p95", r.latency_ms.p95),
                    ("p99", r.latency_ms.p99),
                    ("max", r.latency_ms.max),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
                warmup_ms,
            },
            steady,
            tasks,
            restarts,
        })
    })
    .await
}

/// `<work-dir>/etl-bench-<pid>-<time>`, readable by the `postgres` user that
/// runs the stack's cluster when we are root.
fn make_work_dir(parent: &Path) -> Result<PathBuf> {
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let dir = parent.join(format!("etl-bench-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    open_up(&dir)?;
    Ok(dir)
}

fn open_up(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(Error::io(dir))
}

fn machine() -> Machine {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    Machine {
        cpus: std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1),
        kernel: read("/proc/sys/kernel/osrelease"),
        load_at_start: read("/proc/loadavg"),
    }
}

/// A new private stack of `storage` with `workers` connect-manager workers in
/// `<work>/<name>`.
fn new_stack(
    config: &Config,
    storage: Storage,
    work: &Path,
    name: &str,
    tracing: bool,
    workers: u16,
) -> Result<Stack> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    open_up(&dir)?;
    Ok(Stack::new(
        &config.etlctl,
        &dir,
        storage,
        Ports::pick(workers)?,
        tracing,
        &work.join(format!("{name}.log")),
    ))
}

/// Runs `work` against a started stack, then stops the stack whatever
/// happened (an error, Ctrl-C). An error of `work` wins over one of `down`.
async fn then_down<T>(stack: &Stack, work: impl Future<Output = Result<T>>) -> Result<T> {
    let result = tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted { dir: stack.dir().to_path_buf() }),
    };
    let down = stack.down().await;
    let value = result?;
    down?;
    Ok(value)
}

/// `etlctl up` stopped by Ctrl-C or an error still gets its `down`.
async fn up(stack: &Stack) -> Result<Duration> {
    let result = tokio::select! {
        r = stack.up() => r,
        _ = tokio::signal::ctrl_c() => Err(Error::Interrupted { dir: stack.dir().to_path_buf() }),
    };
    if result.is_err() {
        let _ = stack.down().await;
    }
    result
}

/// Everything measured on one storage.
async fn measure(
    config: &Config,
    storage: Storage,
    work: &Path,
    files: &[ChunkFile],
) -> Result<StorageReport> {
    let name = storage.name();
    let stack = new_stack(config, storage, work, name, !config.no_tracing, 1)?;
    eprintln!(
        "etl-bench: {name}: {} on ports {}-{}; etlctl output in {}",
        storage.broker(),
        stack.ports().postgres,
        stack.ports().jaeger,
        stack.log().display()
    );

    let up_cold = up(&stack).await?;
    stack.down().await?;
    eprintln!("etl-bench: {name}: first up {} ms", ms(up_cold));
    let up_warm = up(&stack).await?;
    eprintln!("etl-bench: {name}: up {} ms", ms(up_warm));

    let mut report = then_down(&stack, async {
        let mut report = on_a_running_stack(config, &stack, work, files).await?;
        report.resources.up_cold_ms = ms(up_cold);
        report.resources.up_ms = ms(up_warm);
        Ok(report)
    })
    .await?;

    if config.tracing_overhead && !config.no_tracing {
        let off = new_stack(
            config,
            storage,
            work,
            &format!("{name}-no-tracing"),
            false,
            1,
        )?;
        up(&off).await?;
        let burst = then_down(&off, async {
            warm_up(config, &off, &off.info()?.postgres.url).await?;
            let demo = demo(config, &off, "burst with --no-tracing", config.seed).await?;
            Ok(demo.report.rows_per_second)
        })
        .await?;
        let on = report.burst.rows_per_s;
        report.tracing_overhead = Some(TracingOverhead {
            on_rows_per_s: on,
            off_rows_per_s: burst,
            ratio: if burst > 0.0 {
                (on / burst * 100.0).round() / 100.0
            } else {
                0.0
            },
        });
    }
    Ok(report)
}

/// Warm-up: the connectors applied and one file through them, so that the
/// burst meets a pipeline in service (consumer group joined, table made).
/// With several workers, a sink task that joined its consumer group after the
/// file went through another task still has its share of the partitions ahead
/// (a rebalance the burst would meet): more files follow, a few seconds apart
/// (other workers' counters arrive through the status topic), until every sink
/// task has written rows, or [`SETTLE_FILES`] were sent. The files are not any
/// run's, so the verifier has nothing to compare them with, and their rows are
/// not the burst's. Returns the first file's latency.
async fn warm_up(config: &Config, stack: &Stack, pg_url: &str) -> Result<Option<f64>> {
    if config.no_warmup {
        return Ok(None);
    }
    let name = stack.storage().name();
    eprintln!("etl-bench: {name}: warm-up, connectors and one file");
    stack.apply_connectors(&config.connectors_dir).await?;
    let plan = Plan {
        duration: Duration::from_secs_f64(SETTLE_FILES as f64 / config.steady_rate),
        ..config.steady_plan()
    };
    let mut files = steady::make_files(&plan, "warmup")?.into_iter();
    let gateway = gateway(stack, &config.steady_profile)?;
    let mut first_ms = None;
    loop {
        let Some(file) = files.next() else {
            eprintln!(
                "etl-bench: {name}: warm-up: some sink task still wrote no row after \
                 {SETTLE_FILES} files; the burst may meet its consumer group's rebalance"
            );
            break;
        };
        let ms = steady::one_file(
            file,
            &gateway,
            pg_url,
            &config.table,
            Duration::from_secs(120),
        )
        .await?;
        first_ms.get_or_insert(ms);
        let mut waiting = stack.sink_tasks_without_rows().await?;
        if !waiting.is_empty() {
            tokio::time::sleep(SETTLE_PAUSE).await;
            waiting = stack.sink_tasks_without_rows().await?;
        }
        if waiting.is_empty() {
            break;
        }
        eprintln!(
            "etl-bench: {name}: warm-up: {} wrote no row yet; one more file",
            waiting.join(", ")
        );
    }
    Ok(first_ms)
}

/// Warm-up files at most: the first, and more while a sink task has written
/// nothing (see [`warm_up`]).
const SETTLE_FILES: usize = 8;

/// After a warm-up file, before the sink tasks' counters are read again: a
/// task on another worker reports them through the status topic every ~2 s.
const SETTLE_PAUSE: Duration = Duration::from_secs(3);

/// The stack's gateway and the login of the account with `profile`, from
/// `stack.json` as it is now (the gateway publishes its host key once it runs).
fn gateway(stack: &Stack, profile: &str) -> Result<steady::Gateway> {
    let info = stack.info()?;
    Ok(steady::Gateway {
        addr: info.sftp_addr.clone(),
        login: info.sftp_login(profile)?,
        host_key: info.sftp_host_key.clone(),
    })
}

/// Burst, floors, steady and the last samples, on the stack `up` started.
async fn on_a_running_stack(
    config: &Config,
    stack: &Stack,
    work: &Path,
    files: &[ChunkFile],
) -> Result<StorageReport> {
    let name = stack.storage().name();
    let info = stack.info()?;

    let warmup_ms = warm_up(config, stack, &info.postgres.url).await?;

    // Burst, with every process sampled around it.
    let before = resources::snapshot(&info.processes());
    let demo = demo(config, stack, "burst", config.seed).await?;
    let after = resources::snapshot(&stack.info()?.processes());
    let r = &demo.report;

    let spans = match &info.tracing.jaeger_url {
        Some(url) if !config.no_tracing => {
            burst::spans(url, &r.trace_ids, Duration::from_secs(15)).await?
        }
        _ => Vec::new(),
    };
    let mut records = floors::capture(&info.kafka.bootstrap, &info.kafka.topic).await?;
    records.retain(|rec| rec.header(etl_telemetry::names::HEADER_RUN) == Some(r.run_id.as_str()));
    // Every landed row came through the topic (a file sent twice adds records).
    if (records.len() as u64) < r.rows_landed {
        return Err(Error::Unexpected {
            what: format!("topic {}", info.kafka.topic),
            reason: format!(
                "{} records read back, fewer than the {} rows landed",
                records.len(),
                r.rows_landed
            ),
        });
    }
    let sink = burst::sink_window(&info.postgres.url, &config.table, &r.run_id).await?;
    let windows = Windows::new(demo.started_at, r, &spans, sink, &records);

    // Floors, on the same stack.
    eprintln!("etl-bench: {name}: floors");
    let mut best: Option<(Duration, Duration, Duration, Duration)> = None;
    let mut runs = Vec::new();
    let (mut consumed, mut record_bytes, mut rows) = (0, 0, 0);
    for i in 0..floors::REPETITIONS {
        let chunks = work.join(format!("{name}-extractor-alone"));
        let extractor = floors::extractor_alone(
            &config.extractor(),
            Path::new(&r.input),
            config.chunk_size,
            &chunks,
            stack.log(),
        )
        .await?;
        let _ = std::fs::remove_dir_all(&chunks);
        let floor_topic = format!("etl-bench-floor-{}-{i}", std::process::id());
        let produce = floors::produce(&info.kafka.bootstrap, &floor_topic, &records).await?;
        let consume;
        (consume, consumed, record_bytes) =
            floors::consume(&info.kafka.bootstrap, &floor_topic, records.len() as u64).await?;
        if consumed != records.len() as u64 {
            return Err(Error::Unexpected {
                what: format!("topic {floor_topic}"),
                reason: format!("{} records produced, {consumed} consumed", records.len()),
            });
        }
        let copy;
        (copy, rows) = floors::copy(
            &info.postgres.url,
            &config.table,
            &r.run_id,
            "etl_bench_copy_floor",
        )
        .await?;
        runs.push(floors::FloorRun {
            produce_ms: ms(produce),
            consume_ms: ms(consume),
            copy_ms: ms(copy),
            extractor_ms: ms(extractor),
        });
        best = Some(match best {
            None => (produce, consume, copy, extractor),
            Some((p, c, y, e)) => (
                p.min(produce),
                c.min(consume),
                y.min(copy),
                e.min(extractor),
            ),
        });
    }
    let (produce, consume, copy, extractor) = best.unwrap_or_default();
    let floors = Floors {
        records: consumed,
        record_bytes,
        rows,
        produce_ms: ms(produce),
        consume_ms: ms(consume),
        copy_ms: ms(copy),
        sum_ms: ms(produce) + ms(consume) + ms(copy),
        extractor_ms: ms(extractor),
        repetitions: floors::REPETITIONS,
        runs,
    };
    eprintln!(
        "etl-bench: {name}: floors produce {} ms, consume {} ms, COPY {} ms, extractor {} ms",
        floors.produce_ms, floors.consume_ms, floors.copy_ms, floors.extractor_ms
    );
    let each = |f: fn(&floors::FloorRun) -> u64| -> Vec<String> {
        floors.runs.iter().map(|r| f(r).to_string()).collect()
    };
    eprintln!(
        "etl-bench: {name}: floors per run (ms): produce {}; consume {}; COPY {}; extractor {}",
        each(|r| r.produce_ms).join(", "),
        each(|r| r.consume_ms).join(", "),
        each(|r| r.copy_ms).join(", "),
        each(|r| r.extractor_ms).join(", ")
    );

    let burst = Burst {
        run_id: r.run_id.clone(),
        passed: demo.passed,
        rows_generated: r.rows_generated,
        rows_landed: r.rows_landed,
        files: r.files,
        elapsed_ms: r.elapsed_ms,
        rows_per_s: per_second(r.rows_landed, r.elapsed_ms as f64),
        ratio_to_floors: ratio(r.elapsed_ms as f64, floors.sum_ms),
        latency_ms: [
            ("p50", r.latency_ms.p50),
            ("p95", r.latency_ms.p95),
            ("p99", r.latency_ms.p99),
            ("max", r.latency_ms.max),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        stages: windows.stages(r.rows_landed, &floors),
        warmup_ms,
    };

    // Steady.
    let plan = config.steady_plan();
    eprintln!(
        "etl-bench: {name}: steady, {} files of {} rows at {}/s",
        files.len(),
        plan.rows_per_file,
        plan.rate
    );
    let steady = steady::run(
        &plan,
        files.to_vec(),
        &gateway(stack, &config.steady_profile)?,
        &info.postgres.url,
        &config.table,
    )
    .await?;
    eprintln!(
        "etl-bench: {name}: steady p50 {} ms, p99 {} ms, {}/{} files landed",
        steady.latency_ms.p50, steady.latency_ms.p99, steady.files_landed, steady.files
    );

    let second_burst = if config.no_second_burst {
        None
    } else {
        Some(second_burst(config, stack, r.elapsed_ms).await?)
    };

    // Last samples, just before `down`.
    let last_info = stack.info()?;
    let last = resources::snapshot(&last_info.processes());
    let peak = resources::peak_rss_mb(&last);
    let per_100k = resources::cpu_seconds(&before, &after)
        .into_iter()
        .map(|(k, v)| {
            let scaled = v
                .filter(|_| r.rows_landed > 0)
                .map(|s| (s * 100_000.0 / r.rows_landed as f64 * 100.0).round() / 100.0);
            (k, scaled)
        })
        .collect();
    let mut restarts: std::collections::BTreeMap<String, u32> = last_info
        .services
        .iter()
        .map(|s| (s.process_name(), s.restarts))
        .collect();
    restarts.insert(BROKER.to_owned(), last_info.kafka.process.restarts);
    restarts.insert("postgres".to_owned(), last_info.postgres.process.restarts);

    Ok(StorageReport {
        storage: name.to_owned(),
        broker: stack.storage().broker().to_owned(),
        floors,
        burst,
        steady,
        resources: Resources {
            up_ms: 0,
            up_cold_ms: 0,
            rss_mb: report::service_rss(&peak),
            broker_rss_mb: peak.get(BROKER).copied().flatten(),
            cpu_s_per_100k_rows: per_100k,
            cpu_s_total: resources::cpu_total(&last),
            restarts,
        },
        second_burst,
        tracing_overhead: None,
    })
}

/// One `etlctl demo` of the configured size on `stack` with `seed`, its start
/// and outcome logged under `what`.
async fn demo(config: &Config, stack: &Stack, what: &str, seed: u64) -> Result<DemoRun> {
    let name = stack.storage().name();
    eprintln!(
        "etl-bench: {name}: {what} of {} rows, seed {seed}",
        config.rows()
    );
    let demo = stack
        .demo(
            config.rows(),
            seed,
            config.chunk_size,
            &config.connectors_dir,
            Duration::from_secs(config.demo_timeout),
        )
        .await?;
    let r = &demo.report;
    eprintln!(
        "etl-bench: {name}: {what}: {} rows landed in {} ms, {} overlapping ({})",
        r.rows_landed,
        r.elapsed_ms,
        r.overlapping_rows,
        if demo.passed { "PASSED" } else { "FAILED" }
    );
    Ok(demo)
}

/// The second burst (see `Config::no_second_burst`), compared with the first
/// one's `first_ms`.
async fn second_burst(config: &Config, stack: &Stack, first_ms: u64) -> Result<SecondBurst> {
    let seed = config.seed + 2;
    let demo = demo(config, stack, "second burst", seed).await?;
    let r = &demo.report;
    Ok(SecondBurst {
        seed,
        run_id: r.run_id.clone(),
        passed: demo.passed,
        rows_landed: r.rows_landed,
        overlapping_rows: r.overlapping_rows,
        elapsed_ms: r.elapsed_ms,
        rows_per_s: per_second(r.rows_landed, r.elapsed_ms as f64),
        ratio_to_first: (first_ms > 0)
            .then(|| (r.elapsed_ms as f64 / first_ms as f64 * 100.0).round() / 100.0),
    })
}
