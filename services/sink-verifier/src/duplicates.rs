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
//! digest, so the happy path pays one indexed lookup per verified file:
//! - [`unknown_file`]: the sink NOTIFYs a file nobody registered. Its rows are
//!   read back, digested over the column list of the registered files, and
//!   looked up; each registered file whose rows match counts them, and is its
//!   original if the unknown file holds exactly its rows. Every later NOTIFY
//!   reads the file again, and the store keeps the reading that saw the most
//!   rows (rows only ever land), so two verifiers reading at different moments
//!   agree, and a copy still landing is told apart once it is all there.
//! - [`twin_rows`]: a registered file is being recorded verified
//!   (`Store::record_check`). Its digests are looked up among the verified
//!   files of *other* runs, in the transaction that marks it verified, under an
//!   advisory lock; both sides count the match, and an exact match makes it
//!   the copy of the file verified before it. So of two twins the second to be
//!   verified finds the first, even when two verifiers prove them at the same
//!   moment. Within one run the same line may appear twice in the input, and
//!   the manifests expect both, so that is not a duplicate.
//!
//! What is stored is each matched row (file, row number, other file) and each
//! copy (copy, original); a file counts its rows that have a twin anywhere, so
//! checking again, two verifiers checking, or a row with twins in two files
//! never counts twice.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tokio_postgres::Client;

use crate::{
    Error,
    manifest::Manifest,
    registry::Registry,
    store::{DigestMatch, MatchScope, UnregisteredMatch},
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
        let matches = store
            .match_digests(&columns, &digests, MatchScope::AllFiles)
            .await?;
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
    for registered in stored.changed {
        let facts = store.content_facts(&registered).await?;
        registry.set_content(&registered, facts);
    }
    Ok(found)
}

/// The rows a registered file shares with another run's file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TwinRows {
    pub(crate) other: String,
    /// Row numbers of the registered file whose content the other holds.
    pub(crate) ours: Vec<i64>,
    /// Row numbers of the other file whose content the registered one holds.
    pub(crate) theirs: Vec<i64>,
    /// The two hold the same multiset of rows: the registered file is a copy
    /// of the other.
    pub(crate) copy: bool,
}

/// Pairs `manifest`'s rows with `matches`, the stored rows (of other files)
/// that have one of its digests: one entry per other file, rows ascending.
pub(crate) fn twin_rows(manifest: &Manifest, matches: Vec<DigestMatch>) -> Vec<TwinRows> {
    let ours_counted = counts(manifest.row_digests.iter().copied());
    let rows = manifest.row_digests.len() as u64;
    by_file(matches)
        .into_iter()
        .map(|(other, matched)| {
            let other_digests: BTreeSet<u64> = matched.rows.values().copied().collect();
            let ours = (1..)
                .zip(&manifest.row_digests)
                .filter(|(_, d)| other_digests.contains(d))
                .map(|(row, _)| row)
                .collect();
            let copy = matched.holds_exactly(&ours_counted, rows);
            TwinRows {
                other,
                ours,
                theirs: matched.rows.into_keys().collect(),
                copy,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use etl_core::digest::file_checksum;

    use super::*;

    fn manifest(row_digests: Vec<u64>) -> Manifest {
        Manifest {
            run_id: "r".into(),
            file_name: "f.csv".into(),
            row_count: row_digests.len() as u64,
            columns: vec!["a".into()],
            checksum: file_checksum(&row_digests),
            row_digests,
            uploaded_at_unix_ms: 0,
            trace_id: String::new(),
            traceparent: String::new(),
        }
    }

    fn matched(file: &str, row_count: u64, row_no: i64, digest: u64) -> DigestMatch {
        DigestMatch {
            file_name: file.into(),
            row_no,
            digest,
            row_count,
        }
    }

    #[test]
    fn twins_pair_rows_by_digest_per_other_file() {
        let m = manifest(vec![10, 20, 10, 30]);
        let pairs = twin_rows(
            &m,
            vec![
                matched("g.csv", 9, 7, 10),
                matched("g.csv", 9, 2, 30),
                matched("e.csv", 1, 1, 20),
            ],
        );
        assert_eq!(
            pairs,
            [
                TwinRows {
                    other: "e.csv".into(),
                    ours: vec![2],
                    theirs: vec![1],
                    copy: false,
                },
                TwinRows {
                    other: "g.csv".into(),
                    ours: vec![1, 3, 4],
                    theirs: vec![2, 7],
                    copy: false,
                },
            ]
        );
        assert!(twin_rows(&m, Vec::new()).is_empty());
    }

    #[test]
    fn a_copy_holds_the_same_multiset_of_rows() {
        let m = manifest(vec![10, 20, 10, 30]);
        let file = |name: &str, digests: &[u64]| -> Vec<DigestMatch> {
            (1..)
                .zip(digests)
                .map(|(row, d)| matched(name, digests.len() as u64, row, *d))
                .collect()
        };
        let copy = |matches| {
            twin_rows(&m, matches)
                .into_iter()
                .map(|t| t.copy)
                .collect::<Vec<_>>()
        };
        // The same rows in another order: a copy.
        assert_eq!(copy(file("same.csv", &[30, 10, 20, 10])), [true]);
        // The line held twice only once, the rest the same plus another line
        // the lookup did not ask for: not a copy.
        let mut other = file("other.csv", &[10, 20, 30]);
        other.iter_mut().for_each(|d| d.row_count = 4);
        assert_eq!(copy(other), [false]);
        // A smaller file whose every row this one holds (a smaller demo's
        // file inside a bigger one's): overlap, not a copy.
        assert_eq!(copy(file("small.csv", &[10, 30])), [false]);
        // A bigger file holding all of these rows and more.
        let mut big = file("big.csv", &[10, 20, 10, 30]);
        big.iter_mut().for_each(|d| d.row_count = 930);
        assert_eq!(copy(big), [false]);
        // Same rows, but one of them three times instead of twice.
        assert_eq!(copy(file("thrice.csv", &[10, 10, 10, 20])), [false]);
    }
}
