//! Content duplicates: rows whose content (every data column) landed under two
//! file names — a landed file uploaded again under a new name, or a rerun under
//! a new run id. The lineage key `(_etl_file, _etl_row)` cannot see them.
//!
//! The row digests of every registered file are kept in the store, indexed by
//! digest, so the happy path pays one indexed lookup per verified file:
//! - [`unknown_file`]: the sink NOTIFYs a file nobody registered. Its rows are
//!   read back, digested over the column list of the registered files, and
//!   looked up; each registered file whose rows match counts them.
//! - [`verified_file`]: a registered file is about to be recorded verified.
//!   Its digests are looked up among the verified files of *other* runs; both
//!   sides count the match. (Files are checked one at a time, so of two twins
//!   the second to be verified finds the first.) Within one run the same line may appear twice in the input, and the
//!   manifests expect both, so that is not a duplicate.
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

/// Looks up the rows of `manifest`'s file, whose rows all landed, among the
/// verified files of other runs.
pub(crate) async fn verified_file(registry: &Registry, manifest: &Manifest) -> Result<(), Error> {
    let store = registry.store();
    let digests: HashSet<u64> = manifest.row_digests.iter().copied().collect();
    if digests.is_empty() {
        return Ok(());
    }
    let digests: Vec<u64> = digests.into_iter().collect();
    let matches = store
        .match_digests(
            &manifest.columns,
            &digests,
            MatchScope::VerifiedOutsideRun(&manifest.run_id),
        )
        .await?;
    for (other, (other_rows, other_digests)) in by_file(matches) {
        let ours: Vec<i64> = (1..)
            .zip(&manifest.row_digests)
            .filter(|(_, d)| other_digests.contains(d))
            .map(|(row, _)| row)
            .collect();
        let total = store
            .record_match(&manifest.file_name, &other, &ours)
            .await?;
        registry.set_content_duplicates(&manifest.file_name, total);
        let theirs: Vec<i64> = other_rows.into_iter().collect();
        let total = store
            .record_match(&other, &manifest.file_name, &theirs)
            .await?;
        registry.set_content_duplicates(&other, total);
        tracing::warn!(
            file = %manifest.file_name,
            run = %manifest.run_id,
            other = %other,
            rows = ours.len(),
            "rows of this file also landed under a file of another run"
        );
    }
    Ok(())
}
