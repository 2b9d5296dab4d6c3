//! Content duplicates: rows whose content (every data column) landed under two
//! file names — a landed file uploaded again under a new name, or a rerun under
//! a new run id. The lineage key `(_etl_file, _etl_row)` cannot see them.
//!
//! The row digests of every registered file are kept in the store, indexed by
//! digest, so the happy path pays one indexed lookup per verified file:
//! - [`unknown_file`]: the sink NOTIFYs a file nobody registered. Its rows are
//!   read back, digested over the column list of the registered files, and
//!   looked up; each registered file whose rows match counts them.
//! - [`twin_rows`]: a registered file is being recorded verified
//!   (`Store::record_check`). Its digests are looked up among the verified
//!   files of *other* runs, in the transaction that marks it verified, under an
//!   advisory lock; both sides count the match. So of two twins the second to
//!   be verified finds the first, even when two verifiers prove them at the
//!   same moment. Within one run the same line may appear twice in the input,
//!   and the manifests expect both, so that is not a duplicate.
//!
//! What is stored is each matched row (file, row number, other file), and a
//! file counts its rows that have a twin anywhere, so checking again, two
//! verifiers checking, or a row with twins in two files never counts twice.

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::Client;

use crate::{
    Error,
    manifest::Manifest,
    registry::Registry,
    store::{DigestMatch, MatchScope},
    verify::Verifier,
};

/// Rows per matched file: the distinct row numbers and the digests they had.
fn by_file(matches: Vec<DigestMatch>) -> BTreeMap<String, (HashSet<i64>, HashSet<u64>)> {
    let mut files: BTreeMap<String, (HashSet<i64>, HashSet<u64>)> = BTreeMap::new();
    for m in matches {
        let (rows, digests) = files.entry(m.file_name).or_default();
        rows.insert(m.row_no);
        digests.insert(m.digest);
    }
    files
}

/// Compares the rows of `file`, which no one registered, with the registered
/// files' rows. Returns how many registered rows it duplicates.
pub(crate) async fn unknown_file(
    registry: &Registry,
    client: &Client,
    verifier: &mut Verifier,
    file: &str,
) -> Result<u64, Error> {
    let store = registry.store();
    let mut found = 0;
    for columns in store.column_lists().await? {
        let rows = verifier.read_rows(client, file, &columns).await?;
        let digests: HashSet<u64> = rows.iter().filter_map(|r| r.digest).collect();
        if digests.is_empty() {
            continue;
        }
        let digests: Vec<u64> = digests.into_iter().collect();
        let matches = store
            .match_digests(&columns, &digests, MatchScope::AllFiles)
            .await?;
        for (registered, (rows, _)) in by_file(matches) {
            let n = rows.len() as u64;
            let rows: Vec<i64> = rows.into_iter().collect();
            let total = store.record_match(&registered, file, &rows).await?;
            registry.set_content_duplicates(&registered, total);
            tracing::warn!(
                file = %registered,
                copy = %file,
                rows = n,
                "rows of a registered file landed again under another file name"
            );
            found += n;
        }
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
}

/// Pairs `manifest`'s rows with `matches`, the stored rows (of other files)
/// that have one of its digests: one entry per other file, rows ascending.
pub(crate) fn twin_rows(manifest: &Manifest, matches: Vec<DigestMatch>) -> Vec<TwinRows> {
    by_file(matches)
        .into_iter()
        .map(|(other, (other_rows, other_digests))| {
            let ours = (1..)
                .zip(&manifest.row_digests)
                .filter(|(_, d)| other_digests.contains(d))
                .map(|(row, _)| row)
                .collect();
            let mut theirs: Vec<i64> = other_rows.into_iter().collect();
            theirs.sort_unstable();
            TwinRows {
                other,
                ours,
                theirs,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use etl_core::digest::file_checksum;

    use super::*;

    #[test]
    fn twins_pair_rows_by_digest_per_other_file() {
        let row_digests = vec![10, 20, 10, 30];
        let m = Manifest {
            run_id: "r".into(),
            file_name: "f.csv".into(),
            row_count: 4,
            columns: vec!["a".into()],
            checksum: file_checksum(&row_digests),
            row_digests,
            uploaded_at_unix_ms: 0,
            trace_id: String::new(),
            traceparent: String::new(),
        };
        let matched = |file: &str, row_no, digest| DigestMatch {
            file_name: file.into(),
            row_no,
            digest,
        };
        let pairs = twin_rows(
            &m,
            vec![
                matched("g.csv", 7, 10),
                matched("g.csv", 2, 30),
                matched("e.csv", 1, 20),
            ],
        );
        assert_eq!(
            pairs,
            [
                TwinRows {
                    other: "e.csv".into(),
                    ours: vec![2],
                    theirs: vec![1],
                },
                TwinRows {
                    other: "g.csv".into(),
                    ours: vec![1, 3, 4],
                    theirs: vec![2, 7],
                },
            ]
        );
        assert!(twin_rows(&m, Vec::new()).is_empty());
    }
}
