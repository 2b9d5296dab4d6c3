//! A run's report: per-file counts summed, latency percentiles over verified
//! files, the run's throughput window and its state. Pure: built from the
//! files' current facts every time one changes, whether those facts are held in
//! memory (a run in progress) or read back from the store (a finished run).

use etl_proto::v1::{FileReport, Latency, RunReport};

use crate::verify::FileCheck;

/// [`RunReport::state`] until the run is complete.
pub(crate) const RUNNING: &str = "RUNNING";
/// Complete, and every row of every file landed once and unaltered.
pub(crate) const PASSED: &str = "PASSED";
/// Complete, with a rejected file, rows missing, altered or duplicated, or a
/// copied file (see [`ContentFacts`]).
pub(crate) const FAILED: &str = "FAILED";

/// What the content-duplicate checks ([`crate::duplicates`]) found for one file.
///
/// A *copy* is a file whose landed rows are the same multiset of contents as
/// another landed file's, the two not of one run: a landed file uploaded again
/// under a new name, or a rerun of the same chunk under a new run id. Either
/// side of a copy fails its run. Rows whose content also landed under a file
/// that is not a copy of this one (nor copied by it) are *overlapping*: the
/// same review in two inputs, or a bigger input starting with a smaller one's
/// rows (the generator draws the same stream for the same seed). They are
/// reported, and do not fail the run. Within one run, the same line twice is
/// neither: the manifests expect both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ContentFacts {
    /// Rows whose content also landed under a copy of the file, or under the
    /// file it is a copy of.
    pub(crate) copied_rows: u64,
    /// Rows whose content also landed under another file, not counted above.
    pub(crate) overlapping_rows: u64,
    /// The files this one is a copy of (byte order).
    pub(crate) copy_of: Vec<String>,
    /// The files that are copies of this one (byte order).
    pub(crate) copies: Vec<String>,
}

impl ContentFacts {
    /// No row of the file landed anywhere else.
    pub(crate) const NONE: ContentFacts = ContentFacts {
        copied_rows: 0,
        overlapping_rows: 0,
        copy_of: Vec::new(),
        copies: Vec::new(),
    };

    /// A copy, or the original of one: the run fails.
    pub(crate) fn copied(&self) -> bool {
        self.copied_rows > 0 || !self.copy_of.is_empty() || !self.copies.is_empty()
    }
}

/// What the report needs to know about one file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FileFacts<'a> {
    pub(crate) file_name: &'a str,
    pub(crate) row_count: u64,
    pub(crate) trace_id: &'a str,
    pub(crate) uploaded_at_unix_ms: i64,
    /// The latest check; `None`: not checked yet.
    pub(crate) check: Option<&'a FileCheck>,
    /// When the file's last rows committed, known once it is verified.
    pub(crate) committed_at_unix_ms: Option<i64>,
    /// Why the connector rejected the file, if it did.
    pub(crate) rejected: Option<&'a str>,
    pub(crate) content: &'a ContentFacts,
}

impl FileFacts<'_> {
    fn verified(&self) -> bool {
        self.check.is_some_and(FileCheck::verified)
    }

    /// A rejection counts only for a file whose rows did not all land: a file
    /// already verified keeps its proof.
    fn rejected(&self) -> bool {
        self.rejected.is_some() && !self.verified()
    }

    /// Verified or rejected: nothing more will happen to it.
    pub(crate) fn done(&self) -> bool {
        self.verified() || self.rejected()
    }
}

/// Upload complete to rows committed, never negative (the clocks of two hosts
/// may disagree slightly).
pub(crate) fn latency_ms(uploaded_at_unix_ms: i64, committed_at_unix_ms: i64) -> u64 {
    u64::try_from(committed_at_unix_ms.saturating_sub(uploaded_at_unix_ms)).unwrap_or(0)
}

/// The report of `run_id` from its files' facts. `expected_files` is what
/// CompleteRun said, if it was called.
pub(crate) fn build<'a>(
    run_id: &str,
    expected_files: Option<u64>,
    files: impl IntoIterator<Item = FileFacts<'a>>,
) -> RunReport {
    let mut report = RunReport {
        run_id: run_id.to_string(),
        ..RunReport::default()
    };
    let mut latencies = Vec::new();
    let mut first_upload: Option<i64> = None;
    let mut last_commit: Option<i64> = None;
    let mut registered = 0u64;
    let mut done = 0u64;
    let mut copied = false;
    for f in files {
        registered += 1;
        if f.done() {
            done += 1;
        }
        copied |= f.content.copied();
        let file = file_report(&f);
        first_upload =
            Some(first_upload.map_or(f.uploaded_at_unix_ms, |t| t.min(f.uploaded_at_unix_ms)));
        if file.verified {
            report.files_verified += 1;
            if let Some(t) = f.committed_at_unix_ms {
                latencies.push(file.latency_ms);
                last_commit = Some(last_commit.map_or(t, |l| l.max(t)));
            }
        }
        if file.rejected {
            report.files_rejected += 1;
        }
        report.rows_expected += file.rows_expected;
        report.rows_landed += file.rows_landed;
        report.missing += file.missing;
        report.duplicates += file.duplicates;
        report.altered += file.altered;
        report.content_duplicates += file.content_duplicates;
        report.overlapping_rows += file.overlapping_rows;
        report.file_reports.push(file);
    }
    report.files = registered.max(expected_files.unwrap_or(0));
    latencies.sort_unstable();
    report.latency = Some(Latency {
        p50_ms: percentile(&latencies, 50),
        p95_ms: percentile(&latencies, 95),
        p99_ms: percentile(&latencies, 99),
        max_ms: latencies.last().copied().unwrap_or(0),
    });
    report.elapsed_ms = match (first_upload, last_commit) {
        (Some(start), Some(end)) => latency_ms(start, end),
        _ => 0,
    };
    report.complete = expected_files == Some(registered) && done == registered;
    report.state = if !report.complete {
        RUNNING
    } else if report.missing == 0
        && report.duplicates == 0
        && report.altered == 0
        && report.files_rejected == 0
        && !copied
    {
        PASSED
    } else {
        FAILED
    }
    .to_string();
    report
}

fn file_report(f: &FileFacts<'_>) -> FileReport {
    let mut file = FileReport {
        file_name: f.file_name.to_string(),
        rows_expected: f.row_count,
        trace_id: f.trace_id.to_string(),
        rejected: f.rejected(),
        reject_reason: if f.rejected() {
            f.rejected.unwrap_or_default().to_string()
        } else {
            String::new()
        },
        content_duplicates: f.content.copied_rows,
        overlapping_rows: f.content.overlapping_rows,
        copy_of: f.content.copy_of.clone(),
        copies: f.content.copies.clone(),
        ..FileReport::default()
    };
    match f.check {
        Some(c) => {
            file.rows_landed = c.rows_landed;
            file.missing = c.missing;
            file.duplicates = c.duplicates;
            file.altered = c.altered;
            file.verified = c.verified();
            if file.verified {
                file.latency_ms = f
                    .committed_at_unix_ms
                    .map_or(0, |t| latency_ms(f.uploaded_at_unix_ms, t));
            }
        }
        // Not looked at yet: as far as we know, nothing landed.
        None => file.missing = f.row_count,
    }
    file
}

/// The nearest-rank percentile `p` (0–100) of ascending `sorted`: the smallest
/// value with at least p% of the values at or below it. 0 for no values.
pub(crate) fn percentile(sorted: &[u64], p: u32) -> u64 {
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
        assert_eq!(percentile(&hundred, 99), 99);
        let thousand: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&thousand, 99), 990);
    }

    #[test]
    fn latency_is_never_negative() {
        assert_eq!(latency_ms(1_000, 900), 0);
        assert_eq!(latency_ms(1_000, 1_250), 250);
    }

    static NO_MATCHES: ContentFacts = ContentFacts::NONE;

    fn facts<'a>(
        name: &'a str,
        rows: u64,
        uploaded: i64,
        check: Option<&'a FileCheck>,
        committed: Option<i64>,
    ) -> FileFacts<'a> {
        FileFacts {
            file_name: name,
            row_count: rows,
            trace_id: "",
            uploaded_at_unix_ms: uploaded,
            check,
            committed_at_unix_ms: committed,
            rejected: None,
            content: &NO_MATCHES,
        }
    }

    fn verified(rows: u64) -> FileCheck {
        FileCheck {
            rows_expected: rows,
            rows_landed: rows,
            ..FileCheck::default()
        }
    }

    #[test]
    fn aggregates_files_into_the_run() {
        let (ca, cb) = (
            verified(3),
            FileCheck {
                rows_expected: 2,
                rows_landed: 2,
                altered: 1,
                duplicates: 1,
                ..FileCheck::default()
            },
        );
        let r = build(
            "r",
            Some(3),
            [
                facts("a", 3, 1_000, Some(&ca), Some(1_400)),
                facts("b", 2, 1_100, Some(&cb), None),
                facts("c", 4, 1_200, None, None),
            ],
        );
        assert_eq!(r.run_id, "r");
        assert_eq!((r.files, r.files_verified), (3, 1));
        assert_eq!((r.rows_expected, r.rows_landed), (9, 5));
        assert_eq!((r.missing, r.altered, r.duplicates), (4, 1, 1));
        assert_eq!(r.latency.as_ref().map(|l| l.max_ms), Some(400));
        // From the first upload to the last commit of a *verified* file.
        assert_eq!(r.elapsed_ms, 400);
        assert!(!r.complete);
        assert_eq!(r.state, RUNNING);
        assert_eq!(r.file_reports.len(), 3);
        assert!(r.file_reports[0].verified);
        assert_eq!(r.file_reports[0].latency_ms, 400);
        assert_eq!(r.file_reports[1].latency_ms, 0);
        assert_eq!(r.file_reports[2].missing, 4);
    }

    #[test]
    fn complete_needs_completion_and_every_file_verified() {
        let (ca, cb) = (verified(1), verified(1));
        let files = [
            facts("a", 1, 1_000, Some(&ca), Some(1_500)),
            facts("b", 1, 2_000, Some(&cb), Some(2_100)),
        ];
        assert!(!build("r", None, files).complete);
        assert!(!build("r", Some(3), files).complete);
        let r = build("r", Some(2), files);
        assert!(r.complete);
        assert_eq!(r.state, PASSED);
        let l = r.latency.expect("latency");
        assert_eq!(
            (l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms),
            (100, 500, 500, 500)
        );
        assert_eq!(r.elapsed_ms, 1_100);
        assert_eq!(r.files, 2);
    }

    #[test]
    fn an_empty_completed_run_passes() {
        let r = build("r", Some(0), []);
        assert!(r.complete);
        assert_eq!((r.files, r.state.as_str()), (0, PASSED));
        let r = build("r", None, []);
        assert!(!r.complete);
        assert_eq!(r.state, RUNNING);
    }

    #[test]
    fn a_rejected_file_is_done_and_fails_the_run() {
        let ca = verified(2);
        let partial = FileCheck {
            rows_expected: 3,
            rows_landed: 1,
            missing: 2,
            ..FileCheck::default()
        };
        let b = FileFacts {
            rejected: Some("line 2: 7 fields, the header has 6"),
            ..facts("b", 3, 1_000, Some(&partial), None)
        };
        let r = build(
            "r",
            Some(2),
            [facts("a", 2, 1_000, Some(&ca), Some(1_100)), b],
        );
        assert!(r.complete);
        assert_eq!(r.state, FAILED);
        assert_eq!((r.files_verified, r.files_rejected, r.missing), (1, 1, 2));
        assert!(r.file_reports[1].rejected);
        assert_eq!(
            r.file_reports[1].reject_reason,
            "line 2: 7 fields, the header has 6"
        );
        // Rejected before any check: done, all of it missing.
        let c = FileFacts {
            rejected: Some("header only"),
            ..facts("c", 3, 1_000, None, None)
        };
        let r = build("r", Some(1), [c]);
        assert_eq!((r.complete, r.state.as_str(), r.missing), (true, FAILED, 3));
    }

    #[test]
    fn a_verified_file_keeps_its_proof_over_a_rejection() {
        let ca = verified(2);
        let a = FileFacts {
            rejected: Some("late"),
            ..facts("a", 2, 1_000, Some(&ca), Some(1_100))
        };
        let r = build("r", Some(1), [a]);
        assert_eq!((r.files_rejected, r.state.as_str()), (0, PASSED));
        assert!(!r.file_reports[0].rejected);
        assert!(r.file_reports[0].reject_reason.is_empty());
    }

    #[test]
    fn a_copied_file_fails_a_complete_run() {
        let ca = verified(2);
        // The original of a copy someone uploaded under another name.
        let copied = ContentFacts {
            copied_rows: 2,
            copies: vec!["copy of a".into()],
            ..ContentFacts::default()
        };
        let a = FileFacts {
            content: &copied,
            ..facts("a", 2, 1_000, Some(&ca), Some(1_100))
        };
        let r = build("r", Some(1), [a]);
        assert!(r.complete);
        assert_eq!((r.content_duplicates, r.state.as_str()), (2, FAILED));
        assert_eq!(r.file_reports[0].content_duplicates, 2);
        assert_eq!(r.file_reports[0].copies, ["copy of a"]);
        assert!(r.file_reports[0].copy_of.is_empty());
        // Still running: the state waits for completion.
        let r = build("r", Some(2), [a]);
        assert_eq!(r.state, RUNNING);
        // The copy's side, in its own run, fails too.
        let copy = ContentFacts {
            copied_rows: 2,
            copy_of: vec!["a".into()],
            ..ContentFacts::default()
        };
        let b = FileFacts {
            content: &copy,
            ..facts("b", 2, 1_000, Some(&ca), Some(1_100))
        };
        let r = build("rerun", Some(1), [b]);
        assert_eq!((r.content_duplicates, r.state.as_str()), (2, FAILED));
        assert_eq!(r.file_reports[0].copy_of, ["a"]);
    }

    #[test]
    fn overlapping_rows_are_reported_and_do_not_fail_a_run() {
        let (ca, cb) = (verified(930), verified(5));
        // A bigger demo with the same seed: 93 rows of an earlier, smaller run's
        // file are in this one, which is no copy of it.
        let overlap = ContentFacts {
            overlapping_rows: 93,
            ..ContentFacts::default()
        };
        let a = FileFacts {
            content: &overlap,
            ..facts("a", 930, 1_000, Some(&ca), Some(1_100))
        };
        let r = build(
            "r",
            Some(2),
            [a, facts("b", 5, 1_000, Some(&cb), Some(1_200))],
        );
        assert!(r.complete);
        assert_eq!(r.state, PASSED);
        assert_eq!((r.overlapping_rows, r.content_duplicates), (93, 0));
        assert_eq!(r.file_reports[0].overlapping_rows, 93);
        assert_eq!(r.file_reports[1].overlapping_rows, 0);
        // Overlap beside a copy: the copy decides.
        let both = ContentFacts {
            copied_rows: 5,
            overlapping_rows: 1,
            copy_of: vec!["x".into()],
            ..ContentFacts::default()
        };
        let b = FileFacts {
            content: &both,
            ..facts("b", 5, 1_000, Some(&cb), Some(1_200))
        };
        let r = build("r", Some(2), [a, b]);
        assert_eq!(r.state, FAILED);
        assert_eq!((r.overlapping_rows, r.content_duplicates), (94, 5));
    }

    #[test]
    fn a_verified_file_without_a_commit_time_has_no_latency() {
        let ca = verified(1);
        let r = build("r", Some(1), [facts("a", 1, 1_000, Some(&ca), None)]);
        assert_eq!(r.files_verified, 1);
        assert_eq!(r.latency.map(|l| l.max_ms), Some(0));
        assert_eq!(r.elapsed_ms, 0);
    }
}
