//! `bench.json` and the table: one report for every storage measured, the
//! issue's goals evaluated against it (reported, never asserted: a benchmark
//! measures, the tests check behaviour).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::burst::{Burst, Stage};
use crate::floors::Floors;
use crate::resources::Resources;
use crate::steady::Steady;

/// The four services whose memory the goal bounds (the broker is not ours).
pub const SERVICES: [&str; 4] = [
    "extractor",
    "sftp-gateway",
    "connect-manager",
    "sink-verifier",
];

/// `bench.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BenchReport {
    pub started_at: String,
    pub machine: Machine,
    pub settings: Settings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<StorageReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<StorageReport>,
    /// The scale-out series on the memory broker: `scale.workers_N`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleReport>,
    /// The same on the durable broker (`--scale-storage durable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_durable: Option<ScaleReport>,
    pub goals: Vec<Goal>,
}

/// Where it ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub kernel: String,
    /// /proc/loadavg when the bench started: the figures assume nothing
    /// else runs, and a high load says they are not to be trusted.
    pub load_at_start: String,
}

/// What was run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Settings {
    pub rows: u64,
    pub seed: u64,
    pub chunk_size: u32,
    pub steady_rate_per_s: f64,
    pub steady_seconds: f64,
    pub steady_rows_per_file: usize,
    pub tracing: bool,
    pub quick: bool,
    /// Connectors applied and one file sent before the burst.
    pub warmup: bool,
    /// A second burst (seed + 2) after the steady phase, on the same stack.
    pub second_burst: bool,
    /// The gateway account profile the steady files were uploaded with.
    pub steady_profile: String,
    /// connect-manager worker counts of the scale-out series (empty: not run).
    pub scale_workers: Vec<u16>,
    /// Seconds of steady uploads per scale-out stack (0: none).
    pub scale_steady_seconds: f64,
}

/// The scale-out series on one broker storage: the burst with 1, 2, 3, …
/// connect-manager workers, each on a fresh stack, keyed `workers_N` in
/// bench.json (`scale.workers_2.burst.elapsed_ms`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScaleReport {
    pub storage: String,
    pub broker: String,
    #[serde(flatten)]
    pub runs: BTreeMap<String, ScaleRun>,
}

/// One stack of the scale-out series.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScaleRun {
    /// connect-manager workers (`etlctl up --workers`).
    pub workers: u16,
    /// `standalone` for one worker, else `distributed`.
    pub mode: String,
    /// Why the run did not finish; the figures below are then absent or zero.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `etlctl up --workers N` until every component (each worker) was healthy.
    pub up_ms: u64,
    pub burst: ScaleBurst,
    /// A short steady phase on the same stack (`--scale-steady-seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady: Option<Steady>,
    /// Where the connectors' tasks ran after the burst (`etlctl status`): worker
    /// → `connector/task`, plus `unassigned` / `elsewhere` if any was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<BTreeMap<String, Vec<String>>>,
    /// Restarts of any process of the stack during the run (a worker that died).
    pub restarts: u32,
}

/// The burst of one scale-out stack: the same demo as the storages' burst.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ScaleBurst {
    pub run_id: String,
    pub passed: bool,
    pub rows_landed: u64,
    /// StartRun → the verifier's complete report (etlctl's figure).
    pub elapsed_ms: u64,
    pub rows_per_s: f64,
    /// The one-worker run's elapsed_ms ÷ this one's (above 1: faster than one
    /// worker); absent without a one-worker run.
    pub speedup: Option<f64>,
    /// The verifier's upload-to-commit latency of the burst's files.
    pub latency_ms: BTreeMap<String, u64>,
    /// The warm-up file on connectors just applied (their start and, with
    /// several workers, the cluster's sharing out of their tasks).
    pub warmup_ms: Option<f64>,
}

impl ScaleReport {
    /// The key of a run in bench.json.
    pub fn key(workers: u16) -> String {
        format!("workers_{workers}")
    }

    pub fn insert(&mut self, run: ScaleRun) {
        self.runs.insert(Self::key(run.workers), run);
    }

    /// The runs by worker count.
    pub fn ordered(&self) -> Vec<&ScaleRun> {
        let mut runs: Vec<&ScaleRun> = self.runs.values().collect();
        runs.sort_by_key(|r| r.workers);
        runs
    }

    /// Each finished run's speedup over the finished one-worker run.
    pub fn compute_speedups(&mut self) {
        let one = self
            .runs
            .get(&Self::key(1))
            .filter(|r| r.error.is_none() && r.burst.elapsed_ms > 0)
            .map(|r| r.burst.elapsed_ms);
        for run in self.runs.values_mut() {
            run.burst.speedup = match one {
                Some(one) if run.error.is_none() && run.burst.elapsed_ms > 0 => {
                    Some((one as f64 / run.burst.elapsed_ms as f64 * 100.0).round() / 100.0)
                }
                _ => None,
            };
        }
    }
}

/// Everything measured on one broker storage.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StorageReport {
    pub storage: String,
    pub broker: String,
    pub floors: Floors,
    pub burst: Burst,
    pub steady: Steady,
    #[serde(flatten)]
    pub resources: Resources,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub second_burst: Option<SecondBurst>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing_overhead: Option<TracingOverhead>,
}

/// The same demo with another seed on a stack that holds the first burst:
/// rows that overlap a landed run's cost the verifier more.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SecondBurst {
    pub seed: u64,
    pub run_id: String,
    pub passed: bool,
    pub rows_landed: u64,
    /// Rows of this run whose content an earlier file holds.
    pub overlapping_rows: u64,
    pub elapsed_ms: u64,
    pub rows_per_s: f64,
    /// elapsed_ms ÷ the first burst's.
    pub ratio_to_first: Option<f64>,
}

/// The burst's throughput with tracing exported and with `--no-tracing`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TracingOverhead {
    pub on_rows_per_s: f64,
    pub off_rows_per_s: f64,
    /// on ÷ off (1.0: tracing costs nothing).
    pub ratio: f64,
}

/// One of the goals, evaluated.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Goal {
    pub goal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    pub value: Option<f64>,
    pub limit: f64,
    pub unit: String,
    /// `None` when the value could not be measured.
    pub met: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl BenchReport {
    pub fn storages(&self) -> Vec<&StorageReport> {
        [self.memory.as_ref(), self.durable.as_ref()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The scale-out series measured, memory first.
    pub fn scales(&self) -> Vec<&ScaleReport> {
        [self.scale.as_ref(), self.scale_durable.as_ref()]
            .into_iter()
            .flatten()
            .collect()
    }

    pub fn to_json(&self) -> String {
        // Plain data: numbers, strings, maps with string keys.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Evaluates the goals of issue 12 against what was measured.
    pub fn evaluate(&mut self) {
        let mut goals = Vec::new();
        for s in self.storages() {
            let at = Some(s.storage.clone());
            let goal = |goal: &str, value: Option<f64>, limit: f64, unit: &str| Goal {
                goal: goal.to_owned(),
                storage: at.clone(),
                value,
                limit,
                unit: unit.to_owned(),
                met: value.map(|v| v <= limit),
                note: None,
            };
            goals.push(goal(
                "burst ≤ 1.25 × sum of floors",
                s.burst.ratio_to_floors,
                1.25,
                "×",
            ));
            let landed = s.steady.files_landed == s.steady.files && s.steady.files > 0;
            let lost = |mut g: Goal| {
                if !landed {
                    g.met = Some(false);
                    g.note = Some(format!(
                        "{} of {} files landed",
                        s.steady.files_landed, s.steady.files
                    ));
                }
                g
            };
            goals.push(lost(goal(
                "steady p50 ≤ 50 ms",
                (s.steady.files_landed > 0).then_some(s.steady.latency_ms.p50),
                50.0,
                "ms",
            )));
            goals.push(lost(goal(
                "steady p99 ≤ 200 ms",
                (s.steady.files_landed > 0).then_some(s.steady.latency_ms.p99),
                200.0,
                "ms",
            )));
            goals.push(goal(
                "etlctl up to all healthy ≤ 3 s",
                Some(s.resources.up_ms as f64 / 1000.0),
                3.0,
                "s",
            ));
            let rss = SERVICES
                .iter()
                .filter_map(|name| s.resources.rss_mb.get(*name).copied().flatten())
                .reduce(f64::max);
            goals.push(goal("peak RSS ≤ 100 MB per service", rss, 100.0, "MB"));
            if let Some(t) = &s.tracing_overhead {
                let mut g = goal("tracing on/off throughput ≥ 0.95", Some(t.ratio), 0.95, "×");
                g.met = Some(t.ratio >= 0.95);
                goals.push(g);
            }
        }
        if let (Some(m), Some(d)) = (&self.memory, &self.durable) {
            let value = (m.burst.elapsed_ms > 0).then(|| {
                (d.burst.elapsed_ms as f64 / m.burst.elapsed_ms as f64 * 100.0).round() / 100.0
            });
            goals.push(Goal {
                goal: "durable ≤ 1.5 × memory end to end".to_owned(),
                storage: None,
                value,
                limit: 1.5,
                unit: "×".to_owned(),
                met: value.map(|v| v <= 1.5),
                note: None,
            });
        }
        self.goals = goals;
    }

    /// The table for people: one column per storage.
    pub fn render(&self) -> String {
        let storages = self.storages();
        let mut t = Table::new(
            std::iter::once(String::new())
                .chain(storages.iter().map(|s| s.storage.clone()))
                .chain(std::iter::once("goal".to_owned()))
                .collect(),
        );
        let cells = |f: &dyn Fn(&StorageReport) -> String| -> Vec<String> {
            storages.iter().map(|s| f(s)).collect()
        };
        let st = &self.settings;

        t.section("broker");
        t.row("", cells(&|s| s.broker.clone()), "");

        t.section(&format!(
            "floors (same broker, storage, Postgres, machine; fastest of {} runs)",
            crate::floors::REPETITIONS
        ));
        t.row(
            "produce, the burst's records",
            cells(&|s| {
                format!(
                    "{} · {} rec · {}",
                    ms_text(s.floors.produce_ms as f64),
                    group(s.floors.records),
                    mb_text(s.floors.record_bytes)
                )
            }),
            "",
        );
        t.row(
            "consume",
            cells(&|s| ms_text(s.floors.consume_ms as f64)),
            "",
        );
        t.row(
            "binary COPY, the burst's rows",
            cells(&|s| {
                format!(
                    "{} · {} rows",
                    ms_text(s.floors.copy_ms as f64),
                    group(s.floors.rows)
                )
            }),
            "",
        );
        t.row(
            "sum (produce + consume + COPY)",
            cells(&|s| ms_text(s.floors.sum_ms as f64)),
            "",
        );
        t.row(
            "extractor alone (no upload)",
            cells(&|s| ms_text(s.floors.extractor_ms as f64)),
            "",
        );

        t.section(&format!(
            "burst: {} rows, {}-row chunks (window after StartRun · rows/s · × floor)",
            group(st.rows),
            st.chunk_size
        ));
        t.row(
            "end to end (× sum of floors)",
            cells(&|s| {
                format!(
                    "{} · {}/s · {}",
                    ms_text(s.burst.elapsed_ms as f64),
                    group(s.burst.rows_per_s.round() as u64),
                    ratio_text(s.burst.ratio_to_floors)
                )
            }),
            "≤ 1.25×",
        );
        for (i, name) in [
            "extract",
            "upload",
            "source produce",
            "sink write",
            "verify",
        ]
        .iter()
        .enumerate()
        {
            let floor = storages
                .iter()
                .find_map(|s| s.burst.stages.iter()[i].1.and_then(|x| x.floor.clone()));
            let label = match floor {
                Some(f) => format!("{name} (× {f})"),
                None => (*name).to_owned(),
            };
            t.row(
                &label,
                cells(&|s| stage_text(s.burst.stages.iter()[i].1)),
                "",
            );
        }
        t.row(
            "warm-up: 1st file on fresh connectors",
            cells(&|s| s.burst.warmup_ms.map_or("—".to_owned(), ms_text)),
            "",
        );
        t.row(
            "rows landed / verdict",
            cells(&|s| {
                format!(
                    "{} · {}",
                    group(s.burst.rows_landed),
                    if s.burst.passed { "PASSED" } else { "FAILED" }
                )
            }),
            "",
        );
        t.row(
            "verifier latency p50 / p95 / max",
            cells(&|s| {
                let l = |k: &str| s.burst.latency_ms.get(k).copied().unwrap_or(0);
                format!("{} / {} / {} ms", l("p50"), l("p95"), l("max"))
            }),
            "",
        );

        t.section(&format!(
            "steady: {}-row files at {}/s for {} s, {} account (upload close → rows committed)",
            st.steady_rows_per_file, st.steady_rate_per_s, st.steady_seconds, st.steady_profile
        ));
        t.row(
            "files landed",
            cells(&|s| format!("{}/{}", s.steady.files_landed, s.steady.files)),
            "",
        );
        let lat =
            |f: fn(&Steady) -> f64| move |s: &StorageReport| format!("{:.1} ms", f(&s.steady));
        t.row("p50", cells(&lat(|s| s.latency_ms.p50)), "≤ 50 ms");
        t.row("p95", cells(&lat(|s| s.latency_ms.p95)), "");
        t.row("p99", cells(&lat(|s| s.latency_ms.p99)), "≤ 200 ms");
        t.row("max", cells(&lat(|s| s.latency_ms.max)), "");
        t.row(
            "upload schedule lag, max",
            cells(&lat(|s| s.max_schedule_lag_ms)),
            "",
        );

        if st.second_burst {
            t.section(&format!(
                "second burst: seed {} on the same stack, after the steady phase (rows overlap the first's)",
                st.seed + 2
            ));
            let second = |f: fn(&SecondBurst) -> String| {
                move |s: &StorageReport| s.second_burst.as_ref().map_or("—".to_owned(), f)
            };
            t.row(
                "end to end (× first burst)",
                cells(&second(|b| {
                    format!(
                        "{} ({})",
                        ms_text(b.elapsed_ms as f64),
                        ratio_text(b.ratio_to_first)
                    )
                })),
                "",
            );
            t.row(
                "rows landed / overlapping / verdict",
                cells(&second(|b| {
                    format!(
                        "{} / {} · {}",
                        group(b.rows_landed),
                        group(b.overlapping_rows),
                        if b.passed { "PASSED" } else { "FAILED" }
                    )
                })),
                "",
            );
        }

        t.section("resources");
        t.row(
            "etlctl up → all healthy",
            cells(&|s| ms_text(s.resources.up_ms as f64)),
            "≤ 3 s",
        );
        t.row(
            "  first up (initdb, format)",
            cells(&|s| ms_text(s.resources.up_cold_ms as f64)),
            "",
        );
        for name in SERVICES {
            t.row(
                &format!("peak RSS {name}"),
                cells(&|s| opt_text(s.resources.rss_mb.get(name), |v| format!("{v:.1} MB"))),
                "≤ 100 MB",
            );
        }
        t.row(
            "peak RSS broker",
            cells(&|s| {
                s.resources
                    .broker_rss_mb
                    .map_or("—".to_owned(), |v| format!("{v:.1} MB"))
            }),
            "",
        );
        for name in SERVICES
            .iter()
            .chain(&[crate::stack::BROKER, crate::stack::POSTGRES])
        {
            t.row(
                &format!("CPU s / 100k rows {name}"),
                cells(&|s| {
                    opt_text(s.resources.cpu_s_per_100k_rows.get(*name), |v| {
                        format!("{v:.2} s")
                    })
                }),
                "",
            );
        }
        let restarts = cells(&|s| {
            let n: u32 = s.resources.restarts.values().sum();
            n.to_string()
        });
        t.row("restarts during the run", restarts, "0");
        if storages.iter().any(|s| s.tracing_overhead.is_some()) {
            t.section("tracing (burst rows/s, on vs --no-tracing)");
            t.row(
                "on / off",
                cells(&|s| match &s.tracing_overhead {
                    Some(o) => format!(
                        "{} / {} = {:.2}",
                        group(o.on_rows_per_s.round() as u64),
                        group(o.off_rows_per_s.round() as u64),
                        o.ratio
                    ),
                    None => "—".to_owned(),
                }),
                "≥ 0.95",
            );
        }

        let mut out = t.render();
        out.push_str(&self.render_scale());
        out.push_str("\ngoals (reported, not asserted)\n");
        for g in &self.goals {
            let mark = match g.met {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "?",
            };
            let at = g
                .storage
                .as_deref()
                .map(|s| format!("{s}: "))
                .unwrap_or_default();
            let value = g
                .value
                .map_or("not measured".to_owned(), |v| format!("{v:.2} {}", g.unit));
            let note = g
                .note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let _ = writeln!(out, "  {mark} {at}{} — {value}{note}", g.goal);
        }
        out
    }
}

impl BenchReport {
    /// The scale-out table: one column per storage, a group of rows per worker
    /// count. Empty when the series did not run.
    fn render_scale(&self) -> String {
        let scales = self.scales();
        if scales.is_empty() {
            return String::new();
        }
        let mut workers: Vec<u16> = scales
            .iter()
            .flat_map(|s| s.runs.values().map(|r| r.workers))
            .collect();
        workers.sort_unstable();
        workers.dedup();
        let mut t = Table::new(
            std::iter::once(String::new())
                .chain(scales.iter().map(|s| s.storage.clone()))
                .chain(std::iter::once(String::new()))
                .collect(),
        );
        t.section(&format!(
            "scale-out: the {}-row burst with N connect-manager workers, each on a fresh \
             stack (connectors with tasks.max N, the source's at least 2)",
            group(self.settings.rows)
        ));
        for n in workers {
            // A failed run says why in its first row, and nothing in the others.
            let cells = |first: bool, f: &dyn Fn(&ScaleRun) -> String| -> Vec<String> {
                scales
                    .iter()
                    .map(|s| match s.runs.get(&ScaleReport::key(n)) {
                        None => "—".to_owned(),
                        Some(r) => match &r.error {
                            Some(e) if first => format!(
                                "failed: {}",
                                e.lines()
                                    .next()
                                    .unwrap_or_default()
                                    .chars()
                                    .take(60)
                                    .collect::<String>()
                            ),
                            Some(_) => "—".to_owned(),
                            None => f(r),
                        },
                    })
                    .collect()
            };
            let plural = if n == 1 { "" } else { "s" };
            let mode = if n == 1 { "standalone" } else { "distributed" };
            t.row(
                &format!("{n} worker{plural}, {mode}: end to end (speedup over 1)"),
                cells(true, &|r| {
                    format!(
                        "{} · {}/s · {} · {}",
                        ms_text(r.burst.elapsed_ms as f64),
                        group(r.burst.rows_per_s.round() as u64),
                        ratio_text(r.burst.speedup),
                        if r.burst.passed { "PASSED" } else { "FAILED" }
                    )
                }),
                "",
            );
            if self.settings.scale_steady_seconds > 0.0 {
                t.row(
                    "  steady p50 / p99 (files landed)",
                    cells(false, &|r| match &r.steady {
                        Some(st) => format!(
                            "{:.1} / {:.1} ms · {}/{}",
                            st.latency_ms.p50, st.latency_ms.p99, st.files_landed, st.files
                        ),
                        None => "—".to_owned(),
                    }),
                    "",
                );
            }
            t.row(
                "  tasks per worker",
                cells(false, &|r| match &r.tasks {
                    Some(tasks) => tasks
                        .iter()
                        .map(|(worker, tasks)| match worker.as_str() {
                            "unassigned" | "elsewhere" => format!("{worker} {}", tasks.len()),
                            _ => tasks.len().to_string(),
                        })
                        .collect::<Vec<_>>()
                        .join(" · "),
                    None => "—".to_owned(),
                }),
                "",
            );
            t.row(
                "  warm-up file; etlctl up",
                cells(false, &|r| {
                    format!(
                        "{}; {}",
                        r.burst.warmup_ms.map_or("—".to_owned(), ms_text),
                        ms_text(r.up_ms as f64)
                    )
                }),
                "",
            );
        }
        format!("\n{}", t.render())
    }
}

fn stage_text(stage: Option<&Stage>) -> String {
    match stage {
        None => "—".to_owned(),
        Some(s) => format!(
            "{:.1}–{:.1} s · {}/s · {}",
            s.start_ms / 1000.0,
            s.end_ms / 1000.0,
            group(s.rows_per_s.round() as u64),
            ratio_text(s.ratio_to_floor)
        ),
    }
}

fn opt_text(v: Option<&Option<f64>>, f: impl Fn(f64) -> String) -> String {
    v.copied().flatten().map_or("—".to_owned(), f)
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or("—".to_owned(), |r| format!("{r:.2}×"))
}

/// Milliseconds below ten seconds, seconds above.
pub fn ms_text(ms: f64) -> String {
    if ms < 10_000.0 {
        format!("{} ms", group(ms.round() as u64))
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn mb_text(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A plain-text table: a first column of labels, value columns right-aligned,
/// section lines between groups of rows.
struct Table {
    header: Vec<String>,
    rows: Vec<Line>,
}

enum Line {
    Section(String),
    Row(Vec<String>),
}

impl Table {
    fn new(header: Vec<String>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    fn section(&mut self, title: &str) {
        self.rows.push(Line::Section(title.to_owned()));
    }

    fn row(&mut self, label: &str, values: Vec<String>, goal: &str) {
        let mut cells = vec![format!("  {label}")];
        cells.extend(values);
        cells.push(goal.to_owned());
        self.rows.push(Line::Row(cells));
    }

    fn render(&self) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for line in &self.rows {
            if let Line::Row(cells) = line {
                for (w, c) in widths.iter_mut().zip(cells) {
                    *w = (*w).max(c.chars().count());
                }
            }
        }
        let pad = |s: &str, w: usize, right: bool| {
            let n = w.saturating_sub(s.chars().count());
            if right {
                format!("{}{s}", " ".repeat(n))
            } else {
                format!("{s}{}", " ".repeat(n))
            }
        };
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("   ");
                }
                // Labels and goals left, values right.
                let right = i > 0 && i + 1 < columns;
                out.push_str(&pad(c, *w, right));
            }
            out.trim_end().to_owned() + "\n"
        };
        let mut out = line(&self.header);
        for l in &self.rows {
            match l {
                Line::Section(title) => {
                    let _ = writeln!(out, "{title}");
                }
                Line::Row(cells) => out.push_str(&line(cells)),
            }
        }
        out
    }
}

/// Peak RSS per service only (the broker has its own field).
pub fn service_rss(all: &BTreeMap<String, Option<f64>>) -> BTreeMap<String, Option<f64>> {
    all.iter()
        .filter(|(name, _)| SERVICES.contains(&name.as_str()))
        .map(|(n, v)| (n.clone(), *v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::burst::Stages;
    use crate::steady::Percentiles;

    fn storage(name: &str, elapsed_ms: u64, p99: f64) -> StorageReport {
        StorageReport {
            storage: name.to_owned(),
            broker: "b".to_owned(),
            floors: Floors {
                sum_ms: 1_000,
                ..Floors::default()
            },
            burst: Burst {
                elapsed_ms,
                ratio_to_floors: Some(elapsed_ms as f64 / 1_000.0),
                stages: Stages {
                    extract: Some(Stage {
                        start_ms: 0.0,
                        end_ms: 900.0,
                        duration_ms: 900.0,
                        rows_per_s: 1_000.0,
                        floor: Some("extractor alone".to_owned()),
                        floor_ms: Some(450),
                        ratio_to_floor: Some(2.0),
                        measured_by: String::new(),
                    }),
                    ..Stages::default()
                },
                ..Burst::default()
            },
            steady: Steady {
                files: 10,
                files_landed: 10,
                latency_ms: Percentiles {
                    p50: 20.0,
                    p99,
                    ..Percentiles::default()
                },
                ..Steady::default()
            },
            resources: Resources {
                up_ms: 2_000,
                rss_mb: [
                    ("extractor".to_owned(), Some(30.0)),
                    ("connect-manager".to_owned(), Some(120.0)),
                ]
                .into_iter()
                .collect(),
                ..Resources::default()
            },
            second_burst: None,
            tracing_overhead: None,
        }
    }

    #[test]
    fn the_second_burst_is_reported_beside_the_first_when_it_ran() {
        let mut with = storage("memory", 2_000, 10.0);
        with.second_burst = Some(SecondBurst {
            seed: 44,
            run_id: "run-2".to_owned(),
            passed: true,
            rows_landed: 92_959,
            overlapping_rows: 11_013,
            elapsed_ms: 3_000,
            rows_per_s: 30_986.3,
            ratio_to_first: Some(1.5),
        });
        let mut report = BenchReport {
            memory: Some(with),
            durable: Some(storage("durable", 2_000, 10.0)),
            settings: Settings {
                seed: 42,
                second_burst: true,
                ..Settings::default()
            },
            ..BenchReport::default()
        };
        report.evaluate();
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(json["memory"]["second_burst"]["elapsed_ms"], 3_000);
        assert_eq!(json["memory"]["second_burst"]["overlapping_rows"], 11_013);
        assert_eq!(json["memory"]["second_burst"]["ratio_to_first"], 1.5);
        assert!(json["durable"].get("second_burst").is_none());
        let text = report.render();
        assert!(
            text.contains("second burst: seed 44 on the same stack"),
            "{text}"
        );
        assert!(text.contains("3,000 ms (1.50×)"), "{text}");
        assert!(text.contains("92,959 / 11,013 · PASSED"), "{text}");

        report.settings.second_burst = false;
        assert!(!report.render().contains("second burst"));
    }

    #[test]
    fn goals_are_evaluated_per_storage_and_across() {
        let mut report = BenchReport {
            memory: Some(storage("memory", 1_100, 150.0)),
            durable: Some(storage("durable", 2_000, 250.0)),
            ..BenchReport::default()
        };
        report.evaluate();
        let find = |goal: &str, at: Option<&str>| {
            report
                .goals
                .iter()
                .find(|g| g.goal.starts_with(goal) && g.storage.as_deref() == at)
                .unwrap_or_else(|| panic!("{goal} {at:?} in {:?}", report.goals))
                .clone()
        };
        assert_eq!(find("burst", Some("memory")).met, Some(true));
        assert_eq!(find("burst", Some("durable")).met, Some(false));
        assert_eq!(find("steady p99", Some("memory")).met, Some(true));
        assert_eq!(find("steady p99", Some("durable")).met, Some(false));
        let rss = find("peak RSS", Some("memory"));
        assert_eq!((rss.value, rss.met), (Some(120.0), Some(false)));
        let across = find("durable ≤ 1.5", None);
        assert_eq!((across.value, across.met), (Some(1.82), Some(false)));

        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        for storage in ["memory", "durable"] {
            let s = &json[storage];
            assert!(s["floors"]["sum_ms"].is_u64(), "{s}");
            assert!(s["burst"]["elapsed_ms"].is_u64());
            assert!(s["burst"]["ratio_to_floors"].is_f64());
            for p in ["p50", "p95", "p99", "max"] {
                assert!(s["steady"]["latency_ms"][p].is_f64(), "{p}");
            }
            assert!(s["up_ms"].is_u64());
            assert_eq!(s["rss_mb"]["extractor"], 30.0);
        }

        let text = report.render();
        assert!(text.contains("0.0–0.9 s · 1,000/s · 2.00×"), "{text}");
        assert!(text.contains("extract (× extractor alone)"), "{text}");
        assert!(
            text.contains("✗ durable: steady p99 ≤ 200 ms — 250.00 ms"),
            "{text}"
        );
    }

    #[test]
    fn lost_steady_files_fail_the_latency_goals() {
        let mut s = storage("memory", 1_000, 10.0);
        s.steady.files_landed = 9;
        let mut report = BenchReport {
            memory: Some(s),
            ..BenchReport::default()
        };
        report.evaluate();
        let p50 = report
            .goals
            .iter()
            .find(|g| g.goal.starts_with("steady p50"))
            .expect("p50 goal");
        assert_eq!(p50.met, Some(false));
        assert_eq!(p50.note.as_deref(), Some("9 of 10 files landed"));
    }

    fn scale_run(workers: u16, elapsed_ms: u64) -> ScaleRun {
        ScaleRun {
            workers,
            mode: if workers == 1 {
                "standalone"
            } else {
                "distributed"
            }
            .to_owned(),
            up_ms: 1_500,
            burst: ScaleBurst {
                passed: true,
                rows_landed: 93_000,
                elapsed_ms,
                rows_per_s: 93_000_000.0 / elapsed_ms as f64,
                ..ScaleBurst::default()
            },
            tasks: Some(
                (0..workers)
                    .map(|k| {
                        (
                            format!("connect-manager-{k}"),
                            vec!["postgres-sink/0".to_owned()],
                        )
                    })
                    .collect(),
            ),
            ..ScaleRun::default()
        }
    }

    #[test]
    fn the_scale_out_series_is_keyed_by_workers_and_compared_with_one() {
        let mut scale = ScaleReport {
            storage: "memory".to_owned(),
            broker: "tansu".to_owned(),
            ..ScaleReport::default()
        };
        scale.insert(scale_run(1, 4_000));
        scale.insert(scale_run(2, 2_500));
        scale.insert(ScaleRun {
            workers: 3,
            error: Some("`etlctl up` failed (exit 1); the end of x.log:\nmore".to_owned()),
            ..ScaleRun::default()
        });
        scale.compute_speedups();
        let mut report = BenchReport {
            memory: Some(storage("memory", 1_100, 150.0)),
            scale: Some(scale),
            settings: Settings {
                rows: 100_000,
                scale_workers: vec![1, 2, 3],
                scale_steady_seconds: 0.0,
                ..Settings::default()
            },
            ..BenchReport::default()
        };
        report.evaluate();
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(json["scale"]["storage"], "memory");
        assert_eq!(json["scale"]["workers_1"]["burst"]["elapsed_ms"], 4_000);
        assert_eq!(json["scale"]["workers_2"]["burst"]["speedup"], 1.6);
        assert_eq!(json["scale"]["workers_2"]["mode"], "distributed");
        assert!(json["scale"]["workers_3"]["error"].is_string());
        assert!(json["scale"]["workers_3"]["burst"]["speedup"].is_null());
        assert!(json.get("scale_durable").is_none());
        let text = report.render();
        assert!(text.contains("scale-out: the 100,000-row burst"), "{text}");
        assert!(
            text.contains("2 workers, distributed: end to end (speedup over 1)")
                && text.contains("2,500 ms · 37,200/s · 1.60× · PASSED"),
            "{text}"
        );
        assert!(
            text.contains("failed: `etlctl up` failed (exit 1)"),
            "{text}"
        );
        assert!(text.contains("tasks per worker"), "{text}");
        assert!(!text.contains("steady p50 / p99 (files landed)"), "{text}");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(ms_text(9_999.4), "9,999 ms");
        assert_eq!(ms_text(12_345.0), "12.3 s");
    }
}
