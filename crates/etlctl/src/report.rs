//! The demo's report: built from the verifier's `RunReport`, printed for people,
//! written as `report.json` for scripts, and the one place that decides pass or fail.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use etl_proto::v1::{RunProgress, RunReport};
use serde::{Deserialize, Serialize};

/// Delivery latency of the run's files: upload renamed into place → last row committed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyMs {
    pub p50: u64,
    pub p95: u64,
    #[serde(default)]
    pub p99: u64,
    pub max: u64,
}

/// What the extractor said about the run (its last `WatchRun` message).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtractSummary {
    pub rows_read: u64,
    pub rows_kept: u64,
    pub rows_dropped: u64,
    pub bad_rows: u64,
    pub files: u64,
    pub files_skipped: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

impl From<&RunProgress> for ExtractSummary {
    fn from(p: &RunProgress) -> Self {
        ExtractSummary {
            rows_read: p.rows_read,
            rows_kept: p.rows_kept,
            rows_dropped: p.rows_dropped,
            bad_rows: p.bad_rows,
            files: p.files,
            files_skipped: p.files_skipped,
            bytes: p.bytes,
            elapsed_ms: (p.elapsed_seconds * 1000.0).round() as u64,
        }
    }
}

/// A landed file that holds exactly the rows of another landed file of another run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileCopy {
    /// The file that landed later (it may be a file nobody registered).
    pub copy: String,
    pub original: String,
}

/// At most this many copies are named in the text report (all are in the JSON).
const COPIES_NAMED: usize = 10;

/// `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoReport {
    pub run_id: String,
    /// Whether the verifier declared the run complete (every file verified).
    pub complete: bool,
    pub passed: bool,
    pub input: String,
    pub rows_generated: u64,
    pub files: u64,
    pub files_verified: u64,
    pub rows_expected: u64,
    pub rows_landed: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub altered: u64,
    /// Files the connector rejected (to `error/`), with their reasons.
    #[serde(default)]
    pub files_rejected: u64,
    #[serde(default)]
    pub rejected: BTreeMap<String, String>,
    /// Rows of the run's files that are in a copied file: a file whose landed rows
    /// are exactly another landed file's of another run, or the original of one.
    /// They fail the run.
    #[serde(default)]
    pub content_duplicates: u64,
    /// The copies among the run's files, and the copies of them, with their originals.
    #[serde(default)]
    pub copies: Vec<FileCopy>,
    /// Rows whose content also landed under another file that is neither a copy
    /// of theirs nor copied by it: a warning, not a failure.
    #[serde(default)]
    pub overlapping_rows: u64,
    /// The verifier's verdict: RUNNING, PASSED or FAILED.
    #[serde(default)]
    pub state: String,
    pub latency_ms: LatencyMs,
    /// Wall time of the demo from StartRun to the complete report (or the timeout).
    pub elapsed_ms: u64,
    /// rows_landed / elapsed.
    pub rows_per_second: f64,
    /// The verifier's own span: first upload to last verified commit.
    pub verifier_elapsed_ms: u64,
    pub extract: Option<ExtractSummary>,
    /// Chunk file name → trace id of its trace.
    pub trace_ids: BTreeMap<String, String>,
    /// The Jaeger UI page of the first file's trace (`etlctl trace <file>` prints it
    /// in the terminal); `None` when no Jaeger is known (tracing off) or nothing was
    /// traced.
    #[serde(default)]
    pub jaeger_trace_url: Option<String>,
}

impl DemoReport {
    pub fn new(
        report: &RunReport,
        input: String,
        rows_generated: u64,
        elapsed: Duration,
        extract: Option<ExtractSummary>,
    ) -> Self {
        let (p50, p95, p99, max) = report
            .latency
            .as_ref()
            .map(|l| (l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms))
            .unwrap_or_default();
        let elapsed_ms = elapsed.as_millis() as u64;
        let rows_per_second = if elapsed_ms == 0 {
            0.0
        } else {
            // Two decimals are plenty and keep the JSON readable.
            (report.rows_landed as f64 * 1000.0 / elapsed_ms as f64 * 100.0).round() / 100.0
        };
        let mut demo = DemoReport {
            run_id: report.run_id.clone(),
            complete: report.complete,
            passed: false,
            input,
            rows_generated,
            files: report.files,
            files_verified: report.files_verified,
            rows_expected: report.rows_expected,
            rows_landed: report.rows_landed,
            missing: report.missing,
            duplicates: report.duplicates,
            altered: report.altered,
            files_rejected: report.files_rejected,
            rejected: report
                .file_reports
                .iter()
                .filter(|f| f.rejected)
                .map(|f| (f.file_name.clone(), f.reject_reason.clone()))
                .collect(),
            content_duplicates: report.content_duplicates,
            copies: copies(report),
            overlapping_rows: report.overlapping_rows,
            state: report.state.clone(),
            latency_ms: LatencyMs { p50, p95, p99, max },
            elapsed_ms,
            rows_per_second,
            verifier_elapsed_ms: report.elapsed_ms,
            extract,
            trace_ids: report
                .file_reports
                .iter()
                .filter(|f| !f.trace_id.is_empty())
                .map(|f| (f.file_name.clone(), f.trace_id.clone()))
                .collect(),
            jaeger_trace_url: None,
        };
        demo.passed = demo.problems().is_empty();
        demo
    }

    /// The first file (by name) with its trace id.
    pub fn first_trace(&self) -> Option<(&str, &str)> {
        self.trace_ids
            .iter()
            .next()
            .map(|(f, t)| (f.as_str(), t.as_str()))
    }

    /// Names the Jaeger page of the first file's trace, on the Jaeger UI at `jaeger`.
    pub fn link_jaeger(&mut self, jaeger: Option<&str>) {
        self.jaeger_trace_url = jaeger
            .zip(self.first_trace())
            .map(|(jaeger, (_, trace))| crate::endpoints::trace_page(jaeger, trace));
    }

    /// Why the run does not pass; empty when it does. A run passes only when it is
    /// complete and every expected row landed exactly once, unaltered.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.complete {
            problems.push(format!(
                "the report is not complete ({} of {} files verified)",
                self.files_verified, self.files
            ));
        }
        if self.missing > 0 {
            problems.push(format!("{} rows missing", self.missing));
        }
        if self.duplicates > 0 {
            problems.push(format!("{} rows duplicated", self.duplicates));
        }
        if self.altered > 0 {
            problems.push(format!("{} rows altered", self.altered));
        }
        for (file, reason) in &self.rejected {
            problems.push(format!("{file} rejected: {}", reason.trim()));
        }
        if self.content_duplicates > 0 || !self.copies.is_empty() {
            problems.push(format!(
                "{} rows are in copied files: a landed file came again under another name \
                 (content duplicates)",
                group(self.content_duplicates)
            ));
        }
        for c in self.copies.iter().take(COPIES_NAMED) {
            problems.push(format!("{} is a copy of {}", c.copy, c.original));
        }
        if self.copies.len() > COPIES_NAMED {
            problems.push(format!(
                "… and {} more copies (all in the JSON report)",
                self.copies.len() - COPIES_NAMED
            ));
        }
        if self.state == "FAILED" && problems.is_empty() {
            problems.push("the verifier says FAILED".to_owned());
        }
        if self.rows_landed != self.rows_expected {
            problems.push(format!(
                "{} rows landed, {} expected",
                self.rows_landed, self.rows_expected
            ));
        }
        problems
    }

    /// What is worth knowing but does not fail the run.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.overlapping_rows > 0 {
            warnings.push(format!(
                "{} rows also landed under other files that are not copies (overlapping rows: \
                 an earlier input with the same start, or the same review twice); not a failure",
                group(self.overlapping_rows)
            ));
        }
        warnings
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// The report for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(out, "run {}: {verdict}", self.run_id);
        let _ = writeln!(out, "  input            {}", self.input);
        let _ = writeln!(out, "  rows generated   {}", group(self.rows_generated));
        if let Some(x) = &self.extract {
            let _ = writeln!(
                out,
                "  extracted        {} read, {} kept, {} dropped, {} bad; {} files ({} skipped)",
                group(x.rows_read),
                group(x.rows_kept),
                group(x.rows_dropped),
                group(x.bad_rows),
                group(x.files),
                group(x.files_skipped)
            );
        }
        let _ = writeln!(
            out,
            "  files            {} ({} verified, {} rejected)",
            group(self.files),
            group(self.files_verified),
            group(self.files_rejected)
        );
        let _ = writeln!(
            out,
            "  rows             {} expected, {} landed",
            group(self.rows_expected),
            group(self.rows_landed)
        );
        let _ = writeln!(
            out,
            "  missing          {}\n  duplicates       {}\n  altered          {}\n  copied rows      {} ({} copies)\n  overlapping rows {}",
            group(self.missing),
            group(self.duplicates),
            group(self.altered),
            group(self.content_duplicates),
            group(self.copies.len() as u64),
            group(self.overlapping_rows)
        );
        let _ = writeln!(
            out,
            "  latency          p50 {} ms, p95 {} ms, p99 {} ms, max {} ms (upload complete to rows committed)",
            self.latency_ms.p50, self.latency_ms.p95, self.latency_ms.p99, self.latency_ms.max
        );
        let _ = writeln!(
            out,
            "  elapsed          {:.1} s (StartRun to complete), {} rows/s",
            self.elapsed_ms as f64 / 1000.0,
            group(self.rows_per_second.round() as u64)
        );
        if let Some((file, trace)) = self.trace_ids.iter().next() {
            let _ = writeln!(
                out,
                "  traces           {} files traced, e.g. {file} → {trace}",
                self.trace_ids.len()
            );
        }
        if let Some(url) = &self.jaeger_trace_url {
            let _ = writeln!(out, "  jaeger           {url}");
        }
        for problem in self.problems() {
            let _ = writeln!(out, "  ✗ {problem}");
        }
        for warning in self.warnings() {
            let _ = writeln!(out, "  ! warning: {warning}");
        }
        out
    }
}

/// Every copy the report's files take part in, as the copy or as its original,
/// once each, in name order.
fn copies(report: &RunReport) -> Vec<FileCopy> {
    let mut copies = std::collections::BTreeSet::new();
    for f in &report.file_reports {
        for original in &f.copy_of {
            copies.insert(FileCopy {
                copy: f.file_name.clone(),
                original: original.clone(),
            });
        }
        for copy in &f.copies {
            copies.insert(FileCopy {
                copy: copy.clone(),
                original: f.file_name.clone(),
            });
        }
    }
    copies.into_iter().collect()
}

/// `1234567` → `1,234,567`.
fn group(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use etl_proto::v1::{FileReport, Latency};

    fn run_report(complete: bool) -> RunReport {
        RunReport {
            run_id: "demo-1".to_owned(),
            files: 2,
            files_verified: if complete { 2 } else { 1 },
            rows_expected: 1500,
            rows_landed: if complete { 1500 } else { 1000 },
            missing: 0,
            duplicates: 0,
            altered: 0,
            latency: Some(Latency {
                p50_ms: 120,
                p95_ms: 340,
                p99_ms: 390,
                max_ms: 400,
            }),
            elapsed_ms: 900,
            complete,
            files_rejected: 0,
            content_duplicates: 0,
            overlapping_rows: 0,
            state: if complete { "PASSED" } else { "RUNNING" }.to_owned(),
            file_reports: vec![
                FileReport {
                    file_name: "demo-1__in__chunk_000001.csv".to_owned(),
                    trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
                    ..FileReport::default()
                },
                FileReport {
                    file_name: "demo-1__in__chunk_000002.csv".to_owned(),
                    trace_id: String::new(),
                    ..FileReport::default()
                },
            ],
        }
    }

    #[test]
    fn report_json_has_the_documented_shape() {
        let report = DemoReport::new(
            &run_report(true),
            "/x/demo-1500-42.csv".to_owned(),
            1500,
            Duration::from_millis(3000),
            None,
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        for key in [
            "run_id",
            "files",
            "rows_expected",
            "rows_landed",
            "missing",
            "duplicates",
            "altered",
            "latency_ms",
            "elapsed_ms",
            "rows_per_second",
            "trace_ids",
        ] {
            assert!(json.get(key).is_some(), "missing {key} in {json}");
        }
        assert_eq!(json["run_id"], "demo-1");
        assert_eq!(json["latency_ms"]["p50"], 120);
        assert_eq!(json["latency_ms"]["p95"], 340);
        assert_eq!(json["latency_ms"]["max"], 400);
        assert_eq!(json["elapsed_ms"], 3000);
        assert_eq!(json["rows_per_second"], 500.0);
        assert_eq!(
            json["trace_ids"]["demo-1__in__chunk_000001.csv"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // Untraced files are not listed with an empty id.
        assert_eq!(json["trace_ids"].as_object().map(|o| o.len()), Some(1));
        assert_eq!(json["passed"], true);
        assert_eq!(json["jaeger_trace_url"], serde_json::Value::Null);

        let mut report = report;
        report.link_jaeger(Some("http://127.0.0.1:16686/"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(
            json["jaeger_trace_url"],
            "http://127.0.0.1:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            report
                .render()
                .contains("jaeger           http://127.0.0.1:16686/trace/4bf92f"),
            "{}",
            report.render()
        );
        report.link_jaeger(None);
        assert_eq!(report.jaeger_trace_url, None);
    }

    #[test]
    fn only_a_complete_exact_run_passes() {
        let ok = DemoReport::new(&run_report(true), String::new(), 1500, Duration::ZERO, None);
        assert!(ok.passed && ok.problems().is_empty());
        assert_eq!(ok.rows_per_second, 0.0);

        let partial = DemoReport::new(
            &run_report(false),
            String::new(),
            1500,
            Duration::ZERO,
            None,
        );
        assert!(!partial.passed);
        assert_eq!(partial.problems().len(), 2, "{:?}", partial.problems());

        for (missing, duplicates, altered, landed) in [
            (1, 0, 0, 1499),
            (0, 1, 0, 1500),
            (0, 0, 1, 1500),
            (0, 0, 0, 1501),
        ] {
            let mut r = run_report(true);
            r.missing = missing;
            r.duplicates = duplicates;
            r.altered = altered;
            r.rows_landed = landed;
            let report = DemoReport::new(&r, String::new(), 1500, Duration::ZERO, None);
            assert!(!report.passed, "{r:?}");
        }
    }

    #[test]
    fn rendering_shows_the_figures_and_the_problems() {
        let mut r = run_report(true);
        r.duplicates = 3;
        let text = DemoReport::new(
            &r,
            "/x/in.csv".to_owned(),
            1500,
            Duration::from_millis(1500),
            Some(ExtractSummary {
                rows_read: 1500,
                rows_kept: 1500,
                files: 2,
                ..ExtractSummary::default()
            }),
        )
        .render();
        assert!(text.contains("run demo-1: FAILED"), "{text}");
        assert!(text.contains("1,500 expected, 1,500 landed"), "{text}");
        assert!(
            text.contains("p50 120 ms, p95 340 ms, p99 390 ms, max 400 ms"),
            "{text}"
        );
        assert!(text.contains("1.5 s"), "{text}");
        assert!(text.contains("1,000 rows/s"), "{text}");
        assert!(text.contains("✗ 3 rows duplicated"), "{text}");
    }

    #[test]
    fn a_copy_fails_the_run_and_is_named() {
        let mut r = run_report(true);
        r.state = "FAILED".to_owned();
        r.content_duplicates = 1000;
        r.file_reports[0].content_duplicates = 1000;
        r.file_reports[0].copies = vec!["copy-of-demo-1__in__chunk_000001.csv".to_owned()];
        let report = DemoReport::new(&r, String::new(), 1500, Duration::ZERO, None);
        assert!(!report.passed);
        assert_eq!(
            report.copies,
            [FileCopy {
                copy: "copy-of-demo-1__in__chunk_000001.csv".to_owned(),
                original: "demo-1__in__chunk_000001.csv".to_owned(),
            }]
        );
        let text = report.render();
        assert!(text.contains("run demo-1: FAILED"), "{text}");
        assert!(text.contains("✗ 1,000 rows are in copied files"), "{text}");
        assert!(
            text.contains(
                "✗ copy-of-demo-1__in__chunk_000001.csv is a copy of demo-1__in__chunk_000001.csv"
            ),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(
            json["copies"][0]["original"],
            "demo-1__in__chunk_000001.csv"
        );
        // The copy's own run names the same pair from its side.
        let mut r = run_report(true);
        r.state = "FAILED".to_owned();
        r.file_reports[1].copy_of = vec!["other-run__in__chunk_000002.csv".to_owned()];
        let report = DemoReport::new(&r, String::new(), 1500, Duration::ZERO, None);
        assert!(!report.passed);
        assert_eq!(report.copies[0].copy, "demo-1__in__chunk_000002.csv");
    }

    #[test]
    fn overlapping_rows_are_a_warning_not_a_failure() {
        let mut r = run_report(true);
        r.overlapping_rows = 1234;
        r.file_reports[0].overlapping_rows = 1234;
        let report = DemoReport::new(&r, String::new(), 1500, Duration::ZERO, None);
        assert!(report.passed, "{:?}", report.problems());
        assert!(report.problems().is_empty());
        let text = report.render();
        assert!(text.contains("run demo-1: PASSED"), "{text}");
        assert!(text.contains("overlapping rows 1,234"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("  ! warning: 1,234 rows also landed under other files")),
            "{text}"
        );
        assert!(!text.contains('✗'), "{text}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(json["overlapping_rows"], 1234);
        assert_eq!(json["passed"], true);
        // A report.json written before these fields still reads.
        let mut old = json.clone();
        let fields = old.as_object_mut().expect("object");
        fields.remove("overlapping_rows");
        fields.remove("copies");
        let read: DemoReport = serde_json::from_value(old).expect("old report.json");
        assert_eq!((read.overlapping_rows, read.copies.len()), (0, 0));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(100_000), "100,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
