//! The burst: `etlctl demo --rows 100000` end to end, and when each stage ran.
//!
//! The stages overlap (the pipeline is a pipeline), so each is a window on one
//! timeline whose origin is the moment `StartRun` returned (etlctl prints
//! `run … started`), measured from the record the system itself keeps:
//!
//! | stage | window | from |
//! |---|---|---|
//! | extract | StartRun → the extractor's run done (read, transform, chunk, upload, register: pipelined) | `report.json` `extract.elapsed_ms` |
//! | upload | first `sftp.upload` span start → last span end | the extractor's spans (Jaeger API) |
//! | source produce | first `send review-etl` span start → last span end (records acknowledged) | connect-manager's spans; without tracing, the records' CreateTime in Kafka |
//! | sink write | first write transaction start → last commit | Postgres: `min(_etl_loaded_at)` (`now()` of the transaction) and `max(pg_xact_commit_timestamp(xmin))` of the run's rows |
//! | verify | first `verify file` span → last | the verifier's spans |
//!
//! The end-to-end figure is etlctl's own: StartRun to the verifier's complete
//! report (`report.json` `elapsed_ms`). Rows/s of every stage are the rows
//! landed over the stage's window, so the stages compare with each other.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use etl_pg::{lineage, quote_ident};
use etl_telemetry::jaeger::{self, SpanView};
use etl_telemetry::names;
use futures::StreamExt as _;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::floors::Record;
use crate::stack::DemoReport;

/// A span of wall-clock time, in Unix microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
}

impl Window {
    pub fn duration_ms(&self) -> f64 {
        (self.end_us - self.start_us).max(0) as f64 / 1000.0
    }

    fn widen(self, other: Window) -> Window {
        Window {
            start_us: self.start_us.min(other.start_us),
            end_us: self.end_us.max(other.end_us),
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

fn chrono_us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The window covered by the spans of `service` whose name starts with `name`.
pub fn span_window(spans: &[SpanView], service: &str, name: &str) -> Option<Window> {
    spans
        .iter()
        .filter(|s| s.service == service && s.operation.starts_with(name))
        .map(|s| Window {
            start_us: s.start_us as i64,
            end_us: (s.start_us + s.duration_us) as i64,
        })
        .reduce(Window::widen)
}

fn count_spans(spans: &[SpanView], service: &str, name: &str) -> usize {
    spans
        .iter()
        .filter(|s| s.service == service && s.operation.starts_with(name))
        .count()
}

/// Every span of the run's traces (one trace per chunk file), read from the
/// Jaeger query API. Spans are exported in batches (every second on the local
/// stack): asks again until every file's `verify file` span is there, or
/// `patience` has passed.
pub async fn spans(
    jaeger_url: &str,
    trace_ids: &BTreeMap<String, String>,
    patience: Duration,
) -> Result<Vec<SpanView>> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let fetched: Vec<Result<Vec<SpanView>>> =
            futures::stream::iter(trace_ids.values().cloned())
                .map(|id| async move {
                    let json = jaeger::fetch_trace(jaeger_url, &id).await.map_err(|e| {
                        Error::Unexpected {
                            what: format!("trace {id}"),
                            reason: e.to_string(),
                        }
                    })?;
                    jaeger::parse_trace(&json).map_err(|e| Error::Unexpected {
                        what: format!("trace {id}"),
                        reason: e.to_string(),
                    })
                })
                .buffer_unordered(8)
                .collect()
                .await;
        let mut spans = Vec::new();
        let mut missing = 0;
        for r in fetched {
            match r {
                Ok(s) => spans.extend(s),
                Err(_) => missing += 1,
            }
        }
        let complete =
            missing == 0 && count_spans(&spans, "sink-verifier", VERIFY_SPAN) >= trace_ids.len();
        if complete || tokio::time::Instant::now() >= deadline {
            return Ok(spans);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

const UPLOAD_SPAN: &str = "sftp.upload";
const SEND_SPAN: &str = "send ";
const VERIFY_SPAN: &str = "verify file";

/// The sink's window over the run's rows: first write transaction's start
/// (`_etl_loaded_at` defaults to `now()`, the transaction's start) to the last
/// commit. `None` when no row of the run is there.
pub async fn sink_window(url: &str, table: &str, run_id: &str) -> Result<Option<Window>> {
    let pg = Error::postgres;
    let (client, connection) = crate::stack::connect_postgres(url, "burst").await?;
    let pattern = run_files_pattern(run_id);
    let row = client
        .query_one(
            &format!(
                "SELECT min({}), max(pg_xact_commit_timestamp(xmin)) FROM {} WHERE {} LIKE $1",
                quote_ident(lineage::LOADED_AT),
                quote_ident(table),
                quote_ident(lineage::FILE),
            ),
            &[&pattern],
        )
        .await
        .map_err(pg(url))?;
    let first: Option<DateTime<Utc>> = row.try_get(0).map_err(pg(url))?;
    let last: Option<DateTime<Utc>> = row.try_get(1).map_err(pg(url))?;
    drop(client);
    let _ = connection.await;
    Ok(first.zip(last).map(|(first, last)| Window {
        start_us: chrono_us(first),
        end_us: chrono_us(last),
    }))
}

/// A `LIKE` pattern for the chunk files of `run_id`: they are `{run_id}__…`,
/// and `_` (a wildcard) and `\` (`LIKE`'s escape character) are escaped.
pub fn run_files_pattern(run_id: &str) -> String {
    format!(
        "{}\\_\\_%",
        run_id.replace('\\', "\\\\").replace('_', "\\_")
    )
}

/// The producers' CreateTime of the run's records (header `etl.run`): when
/// the first and the last record were handed to the producer.
pub fn kafka_window(records: &[Record], run_id: &str) -> Option<Window> {
    records
        .iter()
        .filter(|r| r.header(names::HEADER_RUN) == Some(run_id))
        .filter_map(|r| r.timestamp_ms)
        .map(|ms| Window {
            start_us: ms * 1000,
            end_us: ms * 1000,
        })
        .reduce(Window::widen)
}

/// One stage of the burst, as written to bench.json.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stage {
    /// ms after StartRun returned (negative: before it).
    pub start_ms: f64,
    pub end_ms: f64,
    pub duration_ms: f64,
    /// Rows landed ÷ duration.
    pub rows_per_s: f64,
    /// Where the window comes from.
    pub measured_by: String,
    /// The floor it is compared with, and the ratio (duration ÷ floor).
    pub floor: Option<String>,
    pub floor_ms: Option<u64>,
    pub ratio_to_floor: Option<f64>,
}

/// The burst's stages, in pipeline order (absent: not measurable in this run,
/// e.g. spans without tracing).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stages {
    pub extract: Option<Stage>,
    pub upload: Option<Stage>,
    pub source_produce: Option<Stage>,
    pub sink_write: Option<Stage>,
    pub verify: Option<Stage>,
}

impl Stages {
    /// (name, stage) in pipeline order.
    pub fn iter(&self) -> [(&'static str, Option<&Stage>); 5] {
        [
            ("extract", self.extract.as_ref()),
            ("upload", self.upload.as_ref()),
            ("source produce", self.source_produce.as_ref()),
            ("sink write", self.sink_write.as_ref()),
            ("verify", self.verify.as_ref()),
        ]
    }
}

/// The burst as written to bench.json.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Burst {
    pub run_id: String,
    /// The verifier's verdict: every row landed once, unaltered.
    pub passed: bool,
    pub rows_generated: u64,
    pub rows_landed: u64,
    pub files: u64,
    /// StartRun → the verifier's complete report (etlctl's figure).
    pub elapsed_ms: u64,
    pub rows_per_s: f64,
    /// elapsed_ms ÷ floors.sum_ms.
    pub ratio_to_floors: Option<f64>,
    /// The verifier's upload-to-commit latency of the burst's files.
    pub latency_ms: BTreeMap<String, u64>,
    pub stages: Stages,
    /// The warm-up before the burst: one steady file through connectors just
    /// applied (their start, the table's creation), upload close to commit.
    pub warmup_ms: Option<f64>,
}

/// The raw windows of a burst, before the floors are known.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    pub origin_us: i64,
    pub extract: Option<Window>,
    pub upload: Option<Window>,
    pub produce: Option<(Window, &'static str)>,
    pub sink: Option<Window>,
    pub verify: Option<Window>,
}

impl Windows {
    /// Windows from what the run left behind: report.json, the spans (empty
    /// without tracing), the sink's rows' window and the topic's records.
    pub fn new(
        started_at: SystemTime,
        report: &DemoReport,
        spans: &[SpanView],
        sink: Option<Window>,
        records: &[Record],
    ) -> Self {
        let origin_us = unix_us(started_at);
        let extract = report.extract.as_ref().map(|x| Window {
            start_us: origin_us,
            end_us: origin_us + x.elapsed_ms as i64 * 1000,
        });
        let produce = span_window(spans, "connect-manager", SEND_SPAN)
            .map(|w| (w, "connect-manager's `send review-etl` spans"))
            .or_else(|| {
                kafka_window(records, &report.run_id)
                    .map(|w| (w, "the records' CreateTime in Kafka (no spans)"))
            });
        Windows {
            origin_us,
            extract,
            upload: span_window(spans, "extractor", UPLOAD_SPAN),
            produce,
            sink,
            verify: span_window(spans, "sink-verifier", VERIFY_SPAN),
        }
    }

    /// The stages, each with its floor (floors: name → ms) and rows/s over `rows`.
    pub fn stages(&self, rows: u64, floors: &crate::floors::Floors) -> Stages {
        let stage = |w: Option<Window>, how: &str, floor: Option<(&str, u64)>| {
            w.map(|w| {
                let duration_ms = w.duration_ms();
                Stage {
                    start_ms: (w.start_us - self.origin_us) as f64 / 1000.0,
                    end_ms: (w.end_us - self.origin_us) as f64 / 1000.0,
                    duration_ms,
                    rows_per_s: per_second(rows, duration_ms),
                    measured_by: how.to_owned(),
                    floor: floor.map(|(name, _)| name.to_owned()),
                    floor_ms: floor.map(|(_, ms)| ms),
                    ratio_to_floor: floor.and_then(|(_, ms)| ratio(duration_ms, ms)),
                }
            })
        };
        Stages {
            extract: stage(
                self.extract,
                "report.json extract.elapsed_ms: StartRun to the extractor's run done",
                Some(("extractor alone", floors.extractor_ms)),
            ),
            upload: stage(self.upload, "the extractor's `sftp.upload` spans", None),
            source_produce: self
                .produce
                .and_then(|(w, how)| stage(Some(w), how, Some(("produce", floors.produce_ms)))),
            sink_write: stage(
                self.sink,
                "Postgres: first write transaction start (_etl_loaded_at) to last commit (pg_xact_commit_timestamp)",
                Some(("consume + COPY", floors.consume_ms + floors.copy_ms)),
            ),
            verify: stage(self.verify, "the verifier's `verify file` spans", None),
        }
    }
}

/// `rows` per second over `ms` milliseconds (0 when no time passed).
pub fn per_second(rows: u64, ms: f64) -> f64 {
    if ms <= 0.0 {
        0.0
    } else {
        (rows as f64 * 1000.0 / ms).round()
    }
}

/// `value ÷ floor`, two decimals; `None` for a zero floor.
pub fn ratio(value_ms: f64, floor_ms: u64) -> Option<f64> {
    (floor_ms > 0).then(|| (value_ms / floor_ms as f64 * 100.0).round() / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, operation: &str, start_us: u64, duration_us: u64) -> SpanView {
        SpanView {
            trace_id: "t".to_owned(),
            span_id: format!("{start_us}"),
            parent_id: None,
            service: service.to_owned(),
            operation: operation.to_owned(),
            start_us,
            duration_us,
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn a_stage_window_spans_its_first_start_to_its_last_end() {
        let spans = [
            span("extractor", "sftp.upload", 1_000, 500),
            span("extractor", "sftp.upload", 1_200, 2_000),
            span("extractor", "extract.chunk", 0, 9_000),
            span("connect-manager", "send review-etl", 2_000, 100),
        ];
        assert_eq!(
            span_window(&spans, "extractor", UPLOAD_SPAN),
            Some(Window {
                start_us: 1_000,
                end_us: 3_200
            })
        );
        assert!(span_window(&spans, "sink-verifier", VERIFY_SPAN).is_none());
        assert_eq!(count_spans(&spans, "connect-manager", SEND_SPAN), 1);
    }

    #[test]
    fn stages_are_placed_on_the_start_run_timeline() {
        let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let report = DemoReport {
            run_id: "run-1".to_owned(),
            extract: Some(crate::stack::ExtractSummary {
                elapsed_ms: 2_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let records = [Record {
            partition: 0,
            key: None,
            value: None,
            headers: vec![("etl.run".to_owned(), Some(b"run-1".to_vec()))],
            timestamp_ms: Some(100_500),
        }];
        let windows = Windows::new(origin, &report, &[], None, &records);
        let floors = crate::floors::Floors {
            extractor_ms: 1_000,
            produce_ms: 10,
            ..Default::default()
        };
        let stages = windows.stages(1_000, &floors);
        let extract = stages.extract.expect("extract");
        assert_eq!((extract.start_ms, extract.end_ms), (0.0, 2_000.0));
        assert_eq!(extract.rows_per_s, 500.0);
        assert_eq!(extract.ratio_to_floor, Some(2.0));
        let produce = stages.source_produce.expect("produce from Kafka");
        assert_eq!(produce.start_ms, 500.0);
        assert!(produce.measured_by.contains("CreateTime"));
        assert!(stages.upload.is_none() && stages.sink_write.is_none());
    }

    #[test]
    fn a_run_s_files_are_matched_literally() {
        assert_eq!(run_files_pattern("run-1"), r"run-1\_\_%");
        assert_eq!(run_files_pattern(r"a_b\c"), r"a\_b\\c\_\_%");
    }

    #[test]
    fn ratios_and_rates_survive_zero() {
        assert_eq!(ratio(10.0, 0), None);
        assert_eq!(ratio(125.0, 100), Some(1.25));
        assert_eq!(per_second(10, 0.0), 0.0);
        assert_eq!(per_second(100_000, 4_000.0), 25_000.0);
    }
}
