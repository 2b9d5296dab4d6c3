//! Content duplicates: rows whose content (every data column) landed under two
//! file names. The lineage key `(_etl_file, _etl_row)` cannot see them; the
//! row digests can. Two kinds, told apart per pair of files
//! ([`crate::report::ContentFacts`]):
//! - a **copy**: a file whose landed rows are the same multiset of contents as
//!   another landed file's, the two not of one run (a landed file uploaded
//!   again under a new name, a rerun of a chunk under a new run id). Both
//!   sides' runs fail, and the report names the copy and its original.
//! - **overlapping rows**: rows that also landed under a file that is not a
//!   copy (a bigger input with the same start as a smaller one, the same review
//!   in two datasets). Reported, not a failure.
//!
//! Multisets, not sets: a file holding one line twice is copied only by a file
//! holding it twice too. Landed rows, not inputs: a registered file's rows are
//! its manifest's (the rows the extractor kept, which are the rows that landed
//! once it is verified), a file nobody registered has the rows Postgres holds.
//!
//! The row digests of every registered file are kept in the store, indexed by
//! digest, and what a check costs grows with the file's own rows, not with how
//! many files hold the same content (a small sentence pool puts one review in
//! every file):
//! - [`twinning`]: a registered file is being recorded verified
//!   (`Store::record_check`), in the transaction that marks it verified, under
//!   an advisory lock, so of two twins the second to be verified finds the
//!   first, even when two verifiers prove them at the same moment. For each of
//!   its digests the store keeps the runs whose verified files hold it
//!   (`digest_runs`, a few entries read per digest): its rows whose digest
//!   another run holds are twinned; where exactly one other run held the
//!   digest, that run's verified rows with it had no twin yet and are twinned
//!   now (once per digest: from then on every verified row with it has one).
//!   Its copies are found by fingerprint ([`digest_sum`] and the row count,
//!   indexed), each candidate confirmed by comparing its digests
//!   ([`same_multiset`]). Within one run the same line may appear twice in the
//!   input, and the manifests expect both, so that is not a duplicate.
//! - [`unknown_file`]: the sink NOTIFYs a file nobody registered. Its rows are
//!   read back, digested over the column list of the registered files, and
//!   looked up; each registered file whose rows match counts them, and is its
//!   original if the unknown file holds exactly its rows. Every later NOTIFY
//!   reads the file again, and the store keeps the reading that saw the most
//!   rows (rows only ever land), so two verifiers reading at different moments
//!   agree, and a copy still landing is told apart once it is all there. These
//!   matches name the unknown file (it may be registered later in the run of a
//!   file it matched, and then they no longer count), so they are stored per
//!   row and registered file that match.
//!
//! What is stored is each twinned row once (`twinned_rows`, counted per file as
//! rows are added), each row matched with a file nobody registered or with a
//! copy or original, by name (`content_matches`), and each copy (copy,
//! original); a file counts its rows that have a twin anywhere, so checking
//! again, two verifiers checking, or a row with twins in two files never
//! counts twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio_postgres::Client;

use crate::{
    Error,
    registry::Registry,
    store::{DigestMatch, UnregisteredMatch},
    verify::Verifier,
};

/// The stored rows of one file that matched.
#[derive(Debug, Default)]
struct Matched {
    /// Rows of the whole file.
    row_count: u64,
    /// Matched row number → its digest.
    rows: BTreeMap<i64, u64>,
}

impl Matched {
    /// Whether the file's rows are exactly `digests`, as a multiset. The
    /// lookup asked for every digest of `digests`, so a file with as many rows
    /// whose matched rows have the same digest counts has no other row.
    fn holds_exactly(&self, digests: &HashMap<u64, u64>, rows: u64) -> bool {
        self.row_count == rows
            && self.rows.len() as u64 == rows
            && counts(self.rows.values().copied()) == *digests
    }
}

/// How many times each digest occurs.
fn counts(digests: impl IntoIterator<Item = u64>) -> HashMap<u64, u64> {
    let mut counts = HashMap::new();
    for d in digests {
        *counts.entry(d).or_default() += 1;
    }
    counts
}

/// The matched rows per file, by name.
fn by_file(matches: Vec<DigestMatch>) -> BTreeMap<String, Matched> {
    let mut files: BTreeMap<String, Matched> = BTreeMap::new();
    for m in matches {
        let file = files.entry(m.file_name).or_default();
        file.row_count = m.row_count;
        file.rows.insert(m.row_no, m.digest);
    }
    files
}

/// Compares the rows of `file`, which no one registered, with the registered
/// files' rows, and stores what matched (see [`crate::store::Store::record_unregistered`]).
/// Returns how many registered rows it duplicates.
pub(crate) async fn unknown_file(
    registry: &Registry,
    client: &Client,
    verifier: &mut Verifier,
    file: &str,
) -> Result<u64, Error> {
    let store = registry.store();
    let mut found = 0;
    let mut rows_seen: Option<u64> = None;
    let mut pairs = Vec::new();
    for columns in store.column_lists().await? {
        let rows = verifier.read_rows(client, file, &columns).await?;
        // Every reading covers all the file's rows (a digest is `None` where the
        // table lacks a column); rows only land, so the smallest one is safe.
        let seen = rows.len() as u64;
        rows_seen = Some(rows_seen.map_or(seen, |s| s.min(seen)));
        let landed: Vec<u64> = rows.iter().filter_map(|r| r.digest).collect();
        if landed.is_empty() {
            continue;
        }
        // A row the columns cannot digest makes the file unlike any registered one.
        let exact = (landed.len() as u64 == seen).then(|| counts(landed.iter().copied()));
        let digests: Vec<u64> = landed
            .into_iter()
            .collect::<HashSet<u64>>()
            .into_iter()
            .collect();
        let matches = store.match_digests(&columns, &digests).await?;
        for (registered, matched) in by_file(matches) {
            let copy = exact
                .as_ref()
                .is_some_and(|exact| matched.holds_exactly(exact, seen));
            found += matched.rows.len() as u64;
            pairs.push(UnregisteredMatch {
                registered,
                rows: matched.rows.into_keys().collect(),
                copy,
            });
        }
    }
    let Some(rows_seen) = rows_seen else {
        return Ok(0);
    };
    let stored = store.record_unregistered(file, rows_seen, &pairs).await?;
    // An older reading than the one stored changed nothing worth a log line.
    let news: &[UnregisteredMatch] = if stored.newest { &pairs } else { &[] };
    for pair in news {
        if pair.copy {
            tracing::warn!(
                file = %pair.registered,
                copy = %file,
                rows = pair.rows.len(),
                "a registered file landed again under another file name (a copy)"
            );
        } else {
            tracing::info!(
                file = %pair.registered,
                other = %file,
                rows = pair.rows.len(),
                "rows of a registered file also landed under a file nobody registered (overlapping rows, not a copy)"
            );
        }
    }
    let changed: Vec<String> = stored.changed.into_iter().collect();
    registry.refresh_content(&changed).await?;
    Ok(found)
}

/// How many runs [`twinning`] needs to know of per digest: enough to tell "none
/// but the file's own", "exactly one other" and "more".
pub(crate) const RUNS_LOOKED_UP: usize = 2;

/// What a file's verification twins.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Twinning {
    /// Its rows (numbered from 1) whose content a verified file of another
    /// run holds, ascending.
    pub(crate) rows: Vec<i64>,
    /// Its digests that exactly one run held so far, another than its own, with
    /// that run: that run's verified rows with the digest had no twin, and
    /// get this file's now (ascending).
    pub(crate) first_twins: Vec<(u64, String)>,
}

/// What verifying a file of run `run` with `row_digests` twins, given `runs`:
/// for each of its digests, up to [`RUNS_LOOKED_UP`] of the runs whose verified
/// files hold it (none: not in the map). A digest held by two runs or more
/// has twinned every verified row holding it already.
pub(crate) fn twinning(
    run: &str,
    row_digests: &[u64],
    runs: &HashMap<u64, Vec<String>>,
) -> Twinning {
    let held_elsewhere = |d: &u64| {
        runs.get(d)
            .is_some_and(|runs| runs.iter().any(|r| r != run))
    };
    let rows = (1..)
        .zip(row_digests)
        .filter(|(_, d)| held_elsewhere(d))
        .map(|(row, _)| row)
        .collect();
    let mut first_twins: Vec<(u64, String)> = runs
        .iter()
        .filter_map(|(d, runs)| match runs.as_slice() {
            [only] if only != run => Some((*d, only.clone())),
            _ => None,
        })
        .collect();
    first_twins.sort_unstable();
    Twinning { rows, first_twins }
}

/// The rows a file's [`Twinning::first_twins`] twin in the files of the runs
/// that held those digests alone: for each `candidates` entry (file name, its
/// run, its row digests in row order), its rows (numbered from 1) whose digest
/// is a first twin of that run. Returned as parallel lists (file, row), in
/// the candidates' order.
///
/// Done here rather than by unnesting every candidate's digests in SQL: the
/// planner joined each (digest, run) pair with every candidate before it
/// unnested, unnesting a 930-row array per pair, and a second demo run whose
/// reviews overlapped the first's (a sentence pool shares rows between every
/// file) spent 43 s there, 0.43 s per file, under the verified lock.
pub(crate) fn first_twin_rows(
    first_twins: &[(u64, String)],
    candidates: &[(String, String, Vec<u64>)],
) -> (Vec<String>, Vec<i64>) {
    let mut wanted: HashMap<&str, HashSet<u64>> = HashMap::new();
    for (digest, run) in first_twins {
        wanted.entry(run.as_str()).or_default().insert(*digest);
    }
    let (mut files, mut rows) = (Vec::new(), Vec::new());
    for (file, run, digests) in candidates {
        let Some(wanted) = wanted.get(run.as_str()) else {
            continue;
        };
        for (row, digest) in (1..).zip(digests) {
            if wanted.contains(digest) {
                files.push(file.clone());
                rows.push(row);
            }
        }
    }
    (files, rows)
}

/// A file's multiset fingerprint: the wrapping sum of its row digests, the
/// same for any order of the same rows. Equal sums (with equal row counts)
/// only make two files candidates; [`same_multiset`] decides.
pub(crate) fn digest_sum(row_digests: &[u64]) -> u64 {
    row_digests.iter().fold(0, |sum, d| sum.wrapping_add(*d))
}

/// Whether `a` and `b` hold the same digests, each as many times.
pub(crate) fn same_multiset(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && counts(a.iter().copied()) == counts(b.iter().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(file: &str, row_count: u64, row_no: i64, digest: u64) -> DigestMatch {
        DigestMatch {
            file_name: file.into(),
            row_no,
            digest,
            row_count,
        }
    }

    fn runs(entries: &[(u64, &[&str])]) -> HashMap<u64, Vec<String>> {
        entries
            .iter()
            .map(|(d, runs)| (*d, runs.iter().map(|r| r.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_file_twins_rows_held_by_another_run_and_first_twins_a_lone_run() {
        let digests = [10, 20, 10, 30, 40, 50];
        let plan = twinning(
            "r",
            &digests,
            &runs(&[
                // Only its own run: a line twice in one run is no duplicate.
                (20, &["r"]),
                // One other run: twinned, and that run's rows get their first twin.
                (10, &["p"]),
                // Its own run and another: the other's rows have their twin already.
                (30, &["p", "r"]),
                // Two other runs: twinned long ago.
                (40, &["p", "q"]),
            ]),
        );
        assert_eq!(
            plan,
            Twinning {
                rows: vec![1, 3, 4, 5],
                first_twins: vec![(10, "p".to_string())],
            }
        );
        assert_eq!(
            twinning("r", &digests, &HashMap::new()),
            Twinning::default()
        );
    }

    #[test]
    fn first_twins_pick_the_rows_of_their_own_run_in_every_candidate() {
        let first = vec![
            (10, "p".to_string()),
            (20, "p".to_string()),
            (30, "q".to_string()),
        ];
        let candidates = vec![
            // Both of p's digests, one of them twice, and q's, which is not p's.
            ("p1".to_string(), "p".to_string(), vec![10, 5, 30, 10, 20]),
            // A second file of p holding one of them.
            ("p2".to_string(), "p".to_string(), vec![7, 20]),
            // q's digest in q's file; p's digests there were twinned before.
            ("q1".to_string(), "q".to_string(), vec![10, 30]),
            // A run with no first twin.
            ("s1".to_string(), "s".to_string(), vec![10, 20, 30]),
        ];
        let (files, rows) = first_twin_rows(&first, &candidates);
        let pairs: Vec<(&str, i64)> = files.iter().map(String::as_str).zip(rows).collect();
        assert_eq!(
            pairs,
            [("p1", 1), ("p1", 4), ("p1", 5), ("p2", 2), ("q1", 2)]
        );
        assert_eq!(first_twin_rows(&[], &candidates), (vec![], vec![]));
    }

    #[test]
    fn the_fingerprint_ignores_order_and_the_comparison_decides() {
        assert_eq!(digest_sum(&[1, 2, 3]), digest_sum(&[3, 1, 2]));
        assert_eq!(digest_sum(&[u64::MAX, 2]), 1);
        assert_eq!(digest_sum(&[]), 0);
        assert!(same_multiset(&[10, 20, 10], &[10, 10, 20]));
        // Same sum, same length, other rows: candidates, not copies.
        assert_eq!(digest_sum(&[1, 4]), digest_sum(&[2, 3]));
        assert!(!same_multiset(&[1, 4], &[2, 3]));
        assert!(!same_multiset(&[10, 10, 20], &[10, 20, 20]));
        assert!(!same_multiset(&[10, 20], &[10, 20, 20]));
    }

    #[test]
    fn an_unknown_file_copies_a_file_holding_the_same_multiset_of_rows() {
        let ours = [10, 20, 10, 30];
        let exact = counts(ours);
        let file = |name: &str, digests: &[u64]| -> Vec<DigestMatch> {
            (1..)
                .zip(digests)
                .map(|(row, d)| matched(name, digests.len() as u64, row, *d))
                .collect()
        };
        let copy = |matches| {
            by_file(matches)
                .into_values()
                .map(|m| m.holds_exactly(&exact, ours.len() as u64))
                .collect::<Vec<_>>()
        };
        // The same rows in another order: a copy.
        assert_eq!(copy(file("same.csv", &[30, 10, 20, 10])), [true]);
        // The line held twice only once, the rest the same plus another line
        // the lookup did not ask for: not a copy.
        let mut other = file("other.csv", &[10, 20, 30]);
        other.iter_mut().for_each(|d| d.row_count = 4);
        assert_eq!(copy(other), [false]);
        // A smaller file whose every row this one holds: overlap, not a copy.
        assert_eq!(copy(file("small.csv", &[10, 30])), [false]);
        // A bigger file holding all of these rows and more.
        let mut big = file("big.csv", &[10, 20, 10, 30]);
        big.iter_mut().for_each(|d| d.row_count = 930);
        assert_eq!(copy(big), [false]);
        // Same rows, but one of them three times instead of twice.
        assert_eq!(copy(file("thrice.csv", &[10, 10, 10, 20])), [false]);
    }
}
