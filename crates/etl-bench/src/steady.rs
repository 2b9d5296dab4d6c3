//! Steady state: small files arriving at a steady rate (100-row files at 10
//! files/s for 60 s by default), and how long each one takes from its upload to
//! its rows committed in Postgres.
//!
//! The files are chunk files exactly as the extractor makes them: rows from
//! its generator (a seed other than the burst's, so no row repeats one of the
//! burst's), through its transform (label mapping, language filter), encoded
//! by its chunk encoder, named `{run}__steady__chunk_{n}.csv`. Each is uploaded
//! the way the extractor uploads — data to the hidden `input/.{name}.part`,
//! close, rename into `input/` — over one SFTP session of the crate the
//! extractor uses. They are not registered with the verifier: this is any SFTP
//! client dropping files, which the source connector picks up (the demo
//! applied it).
//!
//! Latency of a file: from the instant the close of its data returned (the
//! data is complete; only the publishing rename remains — where the verifier's
//! latency also starts) to the commit of the transaction that wrote its last
//! row: `max(pg_xact_commit_timestamp(xmin))` over the rows with its
//! `_etl_file` (the stack runs Postgres with `track_commit_timestamp=on`).
//! Both clocks are this machine's.
//!
//! Uploads are started on a fixed schedule, each on its own task, so a slow
//! upload does not delay the next one (the rate is the arrival rate, not a
//! closed loop).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use etl_core::review::LabelScheme;
use etl_pg::{lineage, quote_ident};
use etl_sftp::{SftpAuth, SftpClient, SftpConfig};
use extractor::chunk::{self, ChunkFile};
use extractor::source::RawRecord;
use extractor::transform::{self, Outcome, Transform, TransformOptions};
use serde::Serialize;
use tokio_postgres::error::SqlState;

use crate::burst::unix_us;
use crate::error::{Error, Result};
use crate::stack::SftpLogin;

/// Where uploads go and where the source picks them up.
const INPUT_DIR: &str = extractor::upload::INPUT_DIR;

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// Files started per second.
    pub rate: f64,
    pub duration: Duration,
    pub rows_per_file: usize,
    /// Seed of the extractor's generator.
    pub seed: u64,
    /// How long after the last upload the last file's rows may take to land.
    pub drain: Duration,
}

impl Plan {
    pub fn files(&self) -> usize {
        (self.rate * self.duration.as_secs_f64()).round().max(1.0) as usize
    }
}

/// The steady phase as written to bench.json.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Steady {
    pub files: usize,
    pub rows_per_file: usize,
    pub rate_per_s: f64,
    pub duration_s: f64,
    /// Files whose rows were all committed before the drain timeout.
    pub files_landed: usize,
    /// Upload close → last row committed, over the landed files.
    pub latency_ms: Percentiles,
    /// How far the uploads fell behind their schedule at worst (the client's
    /// own lateness; large values mean the rate was not held).
    pub max_schedule_lag_ms: f64,
}

/// Latency percentiles (nearest rank), in ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `values` (rounded to 0.1 ms).
    pub fn of(values: &[f64]) -> Percentiles {
        if values.is_empty() {
            return Percentiles::default();
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            round1(sorted[i])
        };
        Percentiles {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            max: round1(sorted[sorted.len() - 1]),
            mean: round1(sorted.iter().sum::<f64>() / sorted.len() as f64),
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// `plan.files()` chunk files of exactly `plan.rows_per_file` rows each, made
/// by the extractor's generator, transform and encoder. CPU-bound: call it on
/// a blocking thread, before the clock matters.
pub fn make_files(plan: &Plan, run_id: &str) -> Result<Vec<ChunkFile>> {
    let wanted = plan.files() * plan.rows_per_file;
    let transform = Transform::new(&TransformOptions::default())?;
    let mut kept = Vec::with_capacity(wanted);
    // The generator is lazy and endless enough; ~93% of its rows are kept (the
    // rest is German, French, Spanish).
    let rows = extractor::generate::generate_rows(u64::MAX, plan.seed, LabelScheme::Polarity);
    for (i, row) in rows.enumerate() {
        if kept.len() == wanted {
            break;
        }
        let record = RawRecord {
            line: i as u64 + 1,
            label: row.label,
            title: row.title,
            body: row.body,
        };
        let Ok(labeled) = transform::label(LabelScheme::Polarity, record) else {
            continue;
        };
        if let Outcome::Keep(out) = transform.apply(labeled, "steady") {
            kept.push(out);
        }
    }
    Ok(kept
        .chunks(plan.rows_per_file)
        .enumerate()
        .map(|(n, rows)| chunk::encode(run_id, "steady", n as u64, rows))
        .collect())
}

/// The stack's SFTP gateway and the login to upload with.
#[derive(Clone, Debug)]
pub struct Gateway {
    pub addr: String,
    pub login: SftpLogin,
    pub host_key: Option<String>,
}

/// One upload: data written and closed at `closed_at`, renamed after.
struct Uploaded {
    name: String,
    closed_at: SystemTime,
}

/// Uploads `files` at `plan.rate` to the gateway `sftp`, waits for
/// their rows in `table` at `pg_url`, and measures each file's latency.
pub async fn run(
    plan: &Plan,
    files: Vec<ChunkFile>,
    sftp: &Gateway,
    pg_url: &str,
    table: &str,
) -> Result<Steady> {
    let client = connect(sftp).await?;
    let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();

    let period = Duration::from_secs_f64(1.0 / plan.rate.max(0.001));
    let mut ticks = tokio::time::interval(period);
    // Late ticks fire at once: the arrival schedule is kept, not shifted.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let first = tokio::time::Instant::now();
    let mut max_lag = Duration::ZERO;
    let mut tasks = Vec::with_capacity(files.len());
    for (i, file) in files.into_iter().enumerate() {
        ticks.tick().await;
        let due = first + period * i as u32;
        max_lag = max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
        let client = client.clone();
        tasks.push(tokio::spawn(async move { upload(&client, file).await }));
    }
    let mut uploaded = Vec::with_capacity(tasks.len());
    for task in tasks {
        let result = task.await.map_err(|e| Error::Unexpected {
            what: "an upload task".to_owned(),
            reason: e.to_string(),
        })?;
        uploaded.push(result?);
    }
    let _ = client.close().await;

    let committed = wait_committed(pg_url, table, &names, plan.rows_per_file, plan.drain).await?;
    let latencies: Vec<f64> = uploaded
        .iter()
        .filter_map(|u| {
            let commit = committed.get(&u.name)?;
            Some((commit.timestamp_micros() - unix_us(u.closed_at)) as f64 / 1000.0)
        })
        .collect();
    Ok(Steady {
        files: names.len(),
        rows_per_file: plan.rows_per_file,
        rate_per_s: plan.rate,
        duration_s: plan.duration.as_secs_f64(),
        files_landed: latencies.len(),
        latency_ms: Percentiles::of(&latencies),
        max_schedule_lag_ms: round1(max_lag.as_secs_f64() * 1000.0),
    })
}

/// Uploads one file and waits (at most `timeout`) for its rows: returns its
/// latency in ms, upload close to the commit of its last row. The warm-up: on
/// connectors just applied, it also pays for their start (consumer group
/// join, the table's creation).
pub async fn one_file(
    file: ChunkFile,
    sftp: &Gateway,
    pg_url: &str,
    table: &str,
    timeout: Duration,
) -> Result<f64> {
    let client = connect(sftp).await?;
    let rows = file.manifest.row_count as usize;
    let uploaded = upload(&client, file).await?;
    let _ = client.close().await;
    let names = [uploaded.name.clone()];
    let committed = wait_committed(pg_url, table, &names, rows, timeout).await?;
    let commit = committed.get(&uploaded.name).ok_or_else(|| {
        Error::Timeout(format!(
            "the rows of {} were not committed within {}s (see connect-manager's log)",
            uploaded.name,
            timeout.as_secs()
        ))
    })?;
    Ok(round1(
        (commit.timestamp_micros() - unix_us(uploaded.closed_at)) as f64 / 1000.0,
    ))
}

/// Logs in to the gateway, pinning its published host key as the stack's own
/// clients do.
async fn connect(sftp: &Gateway) -> Result<SftpClient> {
    let config = SftpConfig::from_addr(
        &sftp.addr,
        &sftp.login.user,
        SftpAuth::Password(sftp.login.password.clone()),
    )?;
    let client = match &sftp.host_key {
        Some(fingerprint) => SftpClient::connect_pinned(&config, fingerprint).await?,
        None => SftpClient::connect(&config).await?,
    };
    client.mkdir_all(INPUT_DIR).await?;
    Ok(client)
}

/// The extractor's way: hidden temporary, close, rename into place.
async fn upload(client: &SftpClient, file: ChunkFile) -> Result<Uploaded> {
    let part = format!("{INPUT_DIR}/{}", etl_core::naming::temp_name(&file.name));
    let target = format!("{INPUT_DIR}/{}", file.name);
    // `write` returns once every WRITE is acknowledged and the CLOSE answered.
    client.write(&part, &file.data).await?;
    let closed_at = SystemTime::now();
    client.rename(&part, &target).await?;
    Ok(Uploaded {
        name: file.name,
        closed_at,
    })
}

/// Polls `table` until every file in `names` has `rows` rows (or `drain`
/// passes); returns the commit time of each complete file's last row.
async fn wait_committed(
    url: &str,
    table: &str,
    names: &[String],
    rows: usize,
    drain: Duration,
) -> Result<HashMap<String, DateTime<Utc>>> {
    let pg = Error::postgres;
    let (client, connection) = crate::stack::connect_postgres(url, "steady").await?;
    let file = quote_ident(lineage::FILE);
    let query = format!(
        "SELECT {file}, count(*), max(pg_xact_commit_timestamp(xmin)) FROM {} \
         WHERE {file} = ANY($1) GROUP BY 1",
        quote_ident(table)
    );
    let deadline = tokio::time::Instant::now() + drain;
    let mut done: HashMap<String, DateTime<Utc>> = HashMap::new();
    loop {
        let waiting: Vec<&String> = names.iter().filter(|n| !done.contains_key(*n)).collect();
        if waiting.is_empty() {
            break;
        }
        let rows_now = match client.query(&query, &[&waiting]).await {
            Ok(rows) => rows,
            // The sink creates the table with its first rows (the warm-up).
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Vec::new(),
            Err(e) => return Err(pg(url)(e)),
        };
        for row in rows_now {
            let name: String = row.try_get(0).map_err(pg(url))?;
            let count: i64 = row.try_get(1).map_err(pg(url))?;
            let commit: Option<DateTime<Utc>> = row.try_get(2).map_err(pg(url))?;
            if count as usize >= rows {
                let commit = commit.ok_or_else(|| Error::Postgres {
                    url: url.to_owned(),
                    reason: format!(
                        "no commit timestamp for the rows of {name}: the server must run with \
                         track_commit_timestamp=on (etlctl's Postgres does)"
                    ),
                })?;
                done.insert(name, commit);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(client);
    let _ = connection.await;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&values);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(p.mean, 50.5);
        let one = Percentiles::of(&[7.25]);
        assert_eq!((one.p50, one.p99, one.max), (7.3, 7.3, 7.3));
        assert_eq!(Percentiles::of(&[]), Percentiles::default());
    }

    #[test]
    fn steady_files_are_extractor_chunks_of_exactly_the_asked_rows() {
        let plan = Plan {
            rate: 10.0,
            duration: Duration::from_secs(1),
            rows_per_file: 100,
            seed: 7,
            drain: Duration::from_secs(1),
        };
        let files = make_files(&plan, "steady-1").expect("files");
        assert_eq!(files.len(), 10);
        for (n, f) in files.iter().enumerate() {
            assert_eq!(f.manifest.row_count, 100);
            assert_eq!(f.name, format!("steady-1__steady__chunk_{n:06}.csv"));
            let text = std::str::from_utf8(&f.data).expect("utf8");
            assert!(
                text.starts_with(
                    "header\tbody\tfeedback_type\tsource\tis_streaming\tlanguage_code\n"
                ),
                "{text}"
            );
        }
        // Deterministic for a seed.
        assert_eq!(make_files(&plan, "steady-1").expect("again"), files);
    }
}
