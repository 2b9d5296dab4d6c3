//! Live counters of a run, the summary at its end, and how progress is shown:
//! a progress bar (indicatif) when stderr is a terminal, a log line every few
//! seconds otherwise. The gRPC `WatchRun` reads the same counters.

use std::{
    collections::BTreeMap,
    fmt,
    io::IsTerminal,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use etl_proto::v1::RunProgress;

use crate::source::{BadKind, BadRow};

/// Bad rows kept per input file for the summary; the rest are only counted.
pub const BAD_ROW_SAMPLES: usize = 20;

/// Counters shared by the reader, the workers, the uploads and the watchers.
#[derive(Debug)]
pub struct Progress {
    started: Instant,
    run_id: Mutex<String>,
    pub rows_read: AtomicU64,
    pub rows_kept: AtomicU64,
    pub rows_dropped: AtomicU64,
    pub bad_rows: AtomicU64,
    pub files: AtomicU64,
    pub files_skipped: AtomicU64,
    pub bytes: AtomicU64,
    pub input_bytes_read: AtomicU64,
    pub input_bytes_total: AtomicU64,
    /// Uploads and calls retried after a failure that may pass.
    pub retries: AtomicU64,
    /// Temporaries of this run left in `input/` by a killed upload, removed.
    pub stale_removed: AtomicU64,
    details: Mutex<Details>,
}

#[derive(Debug, Default, Clone)]
struct Details {
    dropped: BTreeMap<String, u64>,
    bad: BTreeMap<BadKind, u64>,
    samples: Vec<(String, Vec<BadRow>)>,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            run_id: Mutex::default(),
            rows_read: AtomicU64::default(),
            rows_kept: AtomicU64::default(),
            rows_dropped: AtomicU64::default(),
            bad_rows: AtomicU64::default(),
            files: AtomicU64::default(),
            files_skipped: AtomicU64::default(),
            bytes: AtomicU64::default(),
            input_bytes_read: AtomicU64::default(),
            input_bytes_total: AtomicU64::default(),
            retries: AtomicU64::default(),
            stale_removed: AtomicU64::default(),
            details: Mutex::default(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking worker must not hide the counters of everyone else.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set_run_id(&self, run_id: &str) {
        *lock(&self.run_id) = run_id.to_string();
    }

    pub fn run_id(&self) -> String {
        lock(&self.run_id).clone()
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts a bad row of input `file`, keeping the first [`BAD_ROW_SAMPLES`].
    pub fn bad_row(&self, file: &str, row: BadRow) {
        self.bad_rows.fetch_add(1, Relaxed);
        self.rows_read.fetch_add(1, Relaxed);
        let mut d = lock(&self.details);
        *d.bad.entry(row.kind).or_default() += 1;
        let idx = match d.samples.iter().position(|(f, _)| f == file) {
            Some(i) => i,
            None => {
                d.samples.push((file.to_string(), Vec::new()));
                d.samples.len() - 1
            }
        };
        let samples = &mut d.samples[idx].1;
        if samples.len() < BAD_ROW_SAMPLES {
            samples.push(row);
        }
    }

    /// Adds the drop counts of one chunk (key: see `DropReason::key`).
    pub fn dropped(&self, counts: &BTreeMap<String, u64>) {
        let total: u64 = counts.values().sum();
        self.rows_dropped.fetch_add(total, Relaxed);
        let mut d = lock(&self.details);
        for (k, n) in counts {
            *d.dropped.entry(k.clone()).or_default() += n;
        }
    }

    /// The counters now, as `WatchRun` sends them.
    pub fn snapshot(&self) -> RunProgress {
        RunProgress {
            run_id: self.run_id(),
            rows_read: self.rows_read.load(Relaxed),
            rows_kept: self.rows_kept.load(Relaxed),
            rows_dropped: self.rows_dropped.load(Relaxed),
            bad_rows: self.bad_rows.load(Relaxed),
            files: self.files.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            elapsed_seconds: self.elapsed().as_secs_f64(),
            done: false,
            error: String::new(),
            files_skipped: self.files_skipped.load(Relaxed),
        }
    }

    /// The final figures.
    pub fn summary(&self) -> Summary {
        let d = lock(&self.details).clone();
        let p = self.snapshot();
        Summary {
            run_id: p.run_id,
            rows_read: p.rows_read,
            rows_kept: p.rows_kept,
            rows_dropped: p.rows_dropped,
            dropped_by: d.dropped,
            bad_rows: p.bad_rows,
            bad_by_kind: d.bad,
            bad_samples: d.samples,
            files: p.files,
            files_skipped: p.files_skipped,
            bytes: p.bytes,
            retries: self.retries.load(Relaxed),
            stale_removed: self.stale_removed.load(Relaxed),
            elapsed: self.elapsed(),
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub run_id: String,
    /// Records and bad lines read: `rows_kept + rows_dropped + bad_rows`.
    pub rows_read: u64,
    pub rows_kept: u64,
    pub rows_dropped: u64,
    /// Dropped rows by reason: detected language code, `xx (low confidence)`, `undetected`.
    pub dropped_by: BTreeMap<String, u64>,
    pub bad_rows: u64,
    pub bad_by_kind: BTreeMap<BadKind, u64>,
    /// The first bad rows of each input file.
    pub bad_samples: Vec<(String, Vec<BadRow>)>,
    /// Chunk files of the run (uploaded now, or found already uploaded).
    pub files: u64,
    /// Chunk files that an earlier attempt of the run had already uploaded.
    pub files_skipped: u64,
    /// Bytes of chunk files written or uploaded by this attempt.
    pub bytes: u64,
    /// Uploads and calls retried after a lost connection or an unavailable
    /// verifier.
    pub retries: u64,
    /// Temporaries of the run in `input/`, left by a killed upload, removed.
    pub stale_removed: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub fn rows_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.rows_read as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "run {}", self.run_id)?;
        writeln!(
            f,
            "  rows: {} read, {} kept, {} dropped, {} bad",
            self.rows_read, self.rows_kept, self.rows_dropped, self.bad_rows
        )?;
        if !self.dropped_by.is_empty() {
            let by: Vec<String> = self
                .dropped_by
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            writeln!(f, "  dropped by language: {}", by.join(", "))?;
        }
        if !self.bad_by_kind.is_empty() {
            let by: Vec<String> = self
                .bad_by_kind
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            writeln!(f, "  bad rows: {}", by.join(", "))?;
            for (file, rows) in &self.bad_samples {
                for row in rows {
                    writeln!(
                        f,
                        "    {file}: line {}: {}: {}",
                        row.line, row.kind, row.reason
                    )?;
                }
            }
        }
        writeln!(
            f,
            "  files: {} ({} already uploaded, skipped), {} bytes written",
            self.files, self.files_skipped, self.bytes
        )?;
        if self.retries > 0 || self.stale_removed > 0 {
            writeln!(
                f,
                "  recovered: {} retries (connection lost or verifier unavailable), {} stale temporaries removed",
                self.retries, self.stale_removed
            )?;
        }
        write!(
            f,
            "  time: {:.2} s, {:.0} rows/s",
            self.elapsed.as_secs_f64(),
            self.rows_per_second()
        )
    }
}

/// Shows progress until dropped: a bar when stderr is a terminal, else a log
/// line every 5 seconds.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
    bar: Option<indicatif::ProgressBar>,
}

impl Reporter {
    pub fn start(progress: std::sync::Arc<Progress>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        let task = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let mut last_log = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let p = progress.snapshot();
                    let rate = p.rows_read as f64 / p.elapsed_seconds.max(1e-3);
                    match &bar {
                        Some(bar) => {
                            bar.set_length(progress.input_bytes_total.load(Relaxed));
                            bar.set_position(progress.input_bytes_read.load(Relaxed));
                            bar.set_message(format!(
                                "{} rows, {:.0} rows/s, {} files",
                                p.rows_read, rate, p.files
                            ));
                        }
                        None if last_log.elapsed() >= Duration::from_secs(5) => {
                            last_log = Instant::now();
                            tracing::info!(
                                run_id = %p.run_id,
                                rows_read = p.rows_read,
                                rows_kept = p.rows_kept,
                                files = p.files,
                                rows_per_second = rate as u64,
                                "progress"
                            );
                        }
                        None => {}
                    }
                }
            })
        };
        Self { task, bar }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bad_rows_per_file() {
        let p = Progress::new();
        for line in 1..=30 {
            p.bad_row(
                "a.csv",
                BadRow {
                    line,
                    kind: BadKind::EmptyLine,
                    reason: "empty line".into(),
                },
            );
        }
        p.bad_row(
            "b.csv",
            BadRow {
                line: 3,
                kind: BadKind::InvalidUtf8,
                reason: "x".into(),
            },
        );
        let s = p.summary();
        assert_eq!(s.bad_rows, 31);
        assert_eq!(s.bad_by_kind[&BadKind::EmptyLine], 30);
        assert_eq!(s.bad_samples[0].1.len(), BAD_ROW_SAMPLES);
        assert_eq!(s.bad_samples[0].1[19].line, 20);
        assert_eq!(s.bad_samples[1].0, "b.csv");
        let text = s.to_string();
        assert!(text.contains("b.csv: line 3: invalid UTF-8"), "{text}");
    }
}
