//! A run's report: per-file counts summed, latency percentiles over verified
//! files, and the run's throughput window. Pure: built from the registry's state
//! every time a check changes it.

use etl_proto::v1::{FileReport, Latency, RunReport};

use crate::{manifest::Manifest, verify::FileCheck};

/// The report of `run_id` from its files and their latest checks (`None`: not
/// checked yet). `expected_files` is what CompleteRun said, if it was called.
pub fn build<'a>(
    run_id: &str,
    expected_files: Option<u64>,
    files: impl IntoIterator<Item = (&'a Manifest, Option<&'a FileCheck>)>,
) -> RunReport {
    let mut report = RunReport {
        run_id: run_id.to_string(),
        ..RunReport::default()
    };
    let mut latencies = Vec::new();
    let mut first_upload: Option<i64> = None;
    let mut last_commit: Option<i64> = None;
    let mut registered = 0u64;
    for (m, check) in files {
        registered += 1;
        let file = file_report(m, check);
        first_upload =
            Some(first_upload.map_or(m.uploaded_at_unix_ms, |t| t.min(m.uploaded_at_unix_ms)));
        if file.verified {
            report.files_verified += 1;
            latencies.push(file.latency_ms);
            if let Some(t) = check.and_then(|c| c.last_loaded_at_unix_ms) {
                last_commit = Some(last_commit.map_or(t, |l| l.max(t)));
            }
        }
        report.rows_expected += file.rows_expected;
        report.rows_landed += file.rows_landed;
        report.missing += file.missing;
        report.duplicates += file.duplicates;
        report.altered += file.altered;
        report.file_reports.push(file);
    }
    report.files = registered.max(expected_files.unwrap_or(0));
    latencies.sort_unstable();
    report.latency = Some(Latency {
        p50_ms: percentile(&latencies, 50),
        p95_ms: percentile(&latencies, 95),
        max_ms: latencies.last().copied().unwrap_or(0),
    });
    report.elapsed_ms = match (first_upload, last_commit) {
        (Some(start), Some(end)) => u64::try_from(end.saturating_sub(start)).unwrap_or(0),
        _ => 0,
    };
    report.complete = expected_files == Some(registered) && report.files_verified == registered;
    report
}

fn file_report(m: &Manifest, check: Option<&FileCheck>) -> FileReport {
    let mut file = FileReport {
        file_name: m.file_name.clone(),
        rows_expected: m.row_count,
        trace_id: m.trace_id.clone(),
        ..FileReport::default()
    };
    match check {
        Some(c) => {
            file.rows_landed = c.rows_landed;
            file.missing = c.missing;
            file.duplicates = c.duplicates;
            file.altered = c.altered;
            file.verified = c.verified();
            file.latency_ms = c.latency_ms(m.uploaded_at_unix_ms);
        }
        // Not looked at yet: as far as we know, nothing landed.
        None => file.missing = m.row_count,
    }
    file
}

/// The nearest-rank percentile `p` (0–100) of ascending `sorted`: the smallest
/// value with at least p% of the values at or below it. 0 for no values.
pub fn percentile(sorted: &[u64], p: u32) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len() as u64;
    let rank = (u64::from(p.min(100)) * n).div_ceil(100).max(1);
    sorted[(rank - 1) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[], 50), 0);
        assert_eq!(percentile(&[7], 50), 7);
        assert_eq!(percentile(&[7], 95), 7);
        let v: Vec<u64> = (1..=10).map(|i| i * 10).collect();
        assert_eq!(percentile(&v, 50), 50);
        assert_eq!(percentile(&v, 95), 100);
        assert_eq!(percentile(&v, 90), 90);
        assert_eq!(percentile(&v, 0), 10);
        assert_eq!(percentile(&v, 100), 100);
        // The classic example: 15, 20, 35, 40, 50.
        let v = [15, 20, 35, 40, 50];
        assert_eq!(percentile(&v, 30), 20);
        assert_eq!(percentile(&v, 40), 20);
        assert_eq!(percentile(&v, 50), 35);
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 95), 95);
    }

    fn manifest(name: &str, rows: u64, uploaded: i64) -> Manifest {
        Manifest {
            run_id: "r".into(),
            file_name: name.into(),
            row_count: rows,
            columns: vec!["a".into()],
            row_digests: vec![0; rows as usize],
            checksum: 0,
            uploaded_at_unix_ms: uploaded,
            trace_id: String::new(),
            traceparent: String::new(),
        }
    }

    fn verified(rows: u64, loaded: i64) -> FileCheck {
        FileCheck {
            rows_expected: rows,
            rows_landed: rows,
            last_loaded_at_unix_ms: Some(loaded),
            ..FileCheck::default()
        }
    }

    #[test]
    fn aggregates_files_into_the_run() {
        let (a, b, c) = (
            manifest("a", 3, 1_000),
            manifest("b", 2, 1_100),
            manifest("c", 4, 1_200),
        );
        let (ca, cb) = (
            verified(3, 1_400),
            FileCheck {
                rows_expected: 2,
                rows_landed: 2,
                altered: 1,
                duplicates: 1,
                last_loaded_at_unix_ms: Some(5_000),
                ..FileCheck::default()
            },
        );
        let r = build("r", Some(3), [(&a, Some(&ca)), (&b, Some(&cb)), (&c, None)]);
        assert_eq!(r.run_id, "r");
        assert_eq!((r.files, r.files_verified), (3, 1));
        assert_eq!((r.rows_expected, r.rows_landed), (9, 5));
        assert_eq!((r.missing, r.altered, r.duplicates), (4, 1, 1));
        assert_eq!(r.latency.as_ref().map(|l| l.max_ms), Some(400));
        // From the first upload to the last commit of a *verified* file.
        assert_eq!(r.elapsed_ms, 400);
        assert!(!r.complete);
        assert_eq!(r.file_reports.len(), 3);
        assert!(r.file_reports[0].verified);
        assert_eq!(r.file_reports[1].latency_ms, 0);
        assert_eq!(r.file_reports[2].missing, 4);
    }

    #[test]
    fn complete_needs_completion_and_every_file_verified() {
        let (a, b) = (manifest("a", 1, 1_000), manifest("b", 1, 2_000));
        let (ca, cb) = (verified(1, 1_500), verified(1, 2_100));
        let files = [(&a, Some(&ca)), (&b, Some(&cb))];
        assert!(!build("r", None, files).complete);
        assert!(!build("r", Some(3), files).complete);
        let r = build("r", Some(2), files);
        assert!(r.complete);
        let l = r.latency.expect("latency");
        assert_eq!((l.p50_ms, l.p95_ms, l.max_ms), (100, 500, 500));
        assert_eq!(r.elapsed_ms, 1_100);
        assert_eq!(r.files, 2);
    }

    #[test]
    fn an_empty_completed_run_is_complete() {
        let r = build("r", Some(0), []);
        assert!(r.complete);
        assert_eq!(r.files, 0);
        assert!(!build("r", None, []).complete);
    }
}
