//! The verifier's durable state, in its own schema `etl_verifier` of the sink's
//! database, so a verifier killed at any moment loses nothing and two verifiers
//! on one database agree.
//!
//! | table | one row per | written by |
//! |---|---|---|
//! | `runs` | run: expected file count (CompleteRun), `finished_at`, `state` | RegisterFile, CompleteRun, the end of a run |
//! | `files` | registered file: its manifest (with `digest_sum`, its multiset fingerprint) and its latest check | RegisterFile (in one transaction with its digests), each check that changes something |
//! | `file_digests` | registered file: its row digests in row order, one array | RegisterFile |
//! | `rejections` | file the gateway reported in `error/`, with the reason | the gateway watch, registered or not yet |
//! | `column_lists` | column list of a verified file, numbered | marking a file verified |
//! | `digest_runs` | (digest, column list, run) of a verified file's row | marking a file verified |
//! | `twinned_rows` | row of a registered file whose content also landed under a registered file of another run, the later of the two verified | marking a file verified (its rows, and the earlier files' rows it twins first) |
//! | `twinned_counts` | file with twinned rows: how many | with `twinned_rows` |
//! | `content_matches` | row of a registered file whose content also landed under a file nobody registered, or under its copy or original: the twin by name | the content-duplicate checks |
//! | `copies` | file that holds exactly the rows of a registered file of another run, and that file | the content-duplicate checks |
//! | `unregistered_files` | file nobody registered whose rows were compared: how many rows the latest comparison saw | the check of an unregistered file |
//!
//! The database is the truth: every write is an upsert keyed by file name (or
//! by file and row, or file, row and twin file), and a verified file is never
//! written back to unverified. Several verifiers may share one database; what
//! keeps them from counting twice or disagreeing is here, in SQL:
//! - the run's row orders what happens to a run: registration and completion
//!   take it exclusively, storing a check shares it, and the end of a run takes
//!   it exclusively and decides PASSED or FAILED from the stored files, never
//!   from one verifier's memory; a check of a file already verified or of a
//!   finished run is not stored. Whichever verifier ends a run, both report the
//!   same end.
//! - twinned rows, content matches and copies are written under the row lock
//!   of the run of the file they count against, and marking a file verified is
//!   one transaction with the lookup of its twins in other runs, under an
//!   advisory lock: of two twins proven at the same moment by two verifiers,
//!   the second sees the first, and finds it a copy if it holds the same rows
//!   (`twinned_counts` is written only under that lock). The
//!   comparison of a file nobody registered takes the same lock and is stored
//!   only if it saw at least as many rows as the one stored before, so of two
//!   verifiers reading a copy while it lands, the fuller reading wins.
//!
//! The in-memory [`crate::registry`] is a cache of the unfinished runs.
//!
//! Digests are `u64` stored in `bigint` columns bit for bit (`as i64`): only
//! equality matters, and a file's wrapping sum of them (`digest_sum`) has the
//! same bits either way.

use std::collections::{BTreeSet, HashMap, HashSet};

use etl_proto::v1::{FileManifest, RunReport};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};
use tokio_postgres::{
    Client, GenericClient, Row, Statement, Transaction, error::SqlState, types::ToSql,
};

use crate::{
    Error, duplicates,
    manifest::{Content, Manifest},
    report::{self, ContentFacts},
    verify::FileCheck,
};

/// The schema, created at startup (`IF NOT EXISTS`, under an advisory lock so
/// two verifiers starting together do not race on the catalog).
const SCHEMA_SQL: &str = r#"
SELECT pg_advisory_xact_lock(hashtext('etl_verifier schema'));
CREATE SCHEMA IF NOT EXISTS etl_verifier;
CREATE TABLE IF NOT EXISTS etl_verifier.runs (
    run_id text PRIMARY KEY,
    -- Set by CompleteRun.
    expected_files bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set once every file is verified or rejected; the run then leaves memory.
    finished_at timestamptz,
    -- RUNNING, PASSED or FAILED (a copy found later turns PASSED into FAILED).
    state text NOT NULL DEFAULT 'RUNNING'
);
CREATE INDEX IF NOT EXISTS runs_unfinished ON etl_verifier.runs (run_id) WHERE finished_at IS NULL;
CREATE TABLE IF NOT EXISTS etl_verifier.files (
    file_name text PRIMARY KEY,
    run_id text NOT NULL REFERENCES etl_verifier.runs (run_id),
    row_count bigint NOT NULL,
    columns text[] NOT NULL,
    checksum bigint NOT NULL,
    uploaded_at_unix_ms bigint NOT NULL,
    trace_id text NOT NULL,
    traceparent text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    -- The latest check (NULL checked_at: not checked yet).
    checked_at timestamptz,
    rows_landed bigint NOT NULL DEFAULT 0,
    missing bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    altered bigint NOT NULL DEFAULT 0,
    verified boolean NOT NULL DEFAULT false,
    -- When the rows' last transaction committed (see the crate docs on latency).
    committed_at_unix_ms bigint
);
CREATE INDEX IF NOT EXISTS files_run ON etl_verifier.files (run_id);
-- A registered file's row digests, in row order: one array per file, found
-- by digest through a GIN index. (It was a row per digest, with a b-tree on
-- the digest and one on file and row: three entries per row, which made
-- registering the verifier's largest cost in Postgres.)
CREATE TABLE IF NOT EXISTS etl_verifier.file_digests (
    file_name text PRIMARY KEY REFERENCES etl_verifier.files (file_name),
    digests bigint[] NOT NULL
);
CREATE INDEX IF NOT EXISTS file_digests_digests ON etl_verifier.file_digests USING gin (digests);
CREATE TABLE IF NOT EXISTS etl_verifier.rejections (
    file_name text PRIMARY KEY,
    reason text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
-- A row of a registered file whose content also landed under twin_file, a file
-- nobody registered when they were compared, or a copy or original of the file.
CREATE TABLE IF NOT EXISTS etl_verifier.content_matches (
    file_name text NOT NULL REFERENCES etl_verifier.files (file_name),
    row_no bigint NOT NULL,
    twin_file text NOT NULL,
    PRIMARY KEY (file_name, row_no, twin_file)
);
CREATE INDEX IF NOT EXISTS content_matches_twin ON etl_verifier.content_matches (twin_file);
-- copy_file holds the same multiset of rows as original_file, a registered file of
-- another run that landed before it; copy_file may be a file nobody registered.
CREATE TABLE IF NOT EXISTS etl_verifier.copies (
    copy_file text NOT NULL,
    original_file text NOT NULL REFERENCES etl_verifier.files (file_name),
    PRIMARY KEY (copy_file, original_file)
);
CREATE INDEX IF NOT EXISTS copies_original ON etl_verifier.copies (original_file);
-- A file nobody registered, as last compared: the stored comparison is the one
-- that saw the most rows.
CREATE TABLE IF NOT EXISTS etl_verifier.unregistered_files (
    file_name text PRIMARY KEY,
    rows_seen bigint NOT NULL,
    compared_at timestamptz NOT NULL DEFAULT now()
);
-- The file's multiset fingerprint: the wrapping sum of its row digests (with
-- row_count), so a copy's candidates are found by index and only they compared.
-- (Looked up first: ALTER TABLE would lock the table even when it has the column.)
DO $add_column$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'etl_verifier.files'::regclass
                   AND attname = 'digest_sum' AND NOT attisdropped) THEN
        ALTER TABLE etl_verifier.files ADD COLUMN IF NOT EXISTS digest_sum bigint;
    END IF;
END
$add_column$;
CREATE INDEX IF NOT EXISTS files_fingerprint ON etl_verifier.files (digest_sum, row_count);
-- Each column list of a verified file, numbered: the short key of digest_runs.
CREATE TABLE IF NOT EXISTS etl_verifier.column_lists (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    columns text[] NOT NULL UNIQUE
);
-- A run with a verified file holding a row of this digest over these columns.
CREATE TABLE IF NOT EXISTS etl_verifier.digest_runs (
    digest bigint NOT NULL,
    columns_id bigint NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (digest, columns_id, run_id)
);
-- A row of a registered file whose content also landed under a registered file of
-- another run, found when the later of the two was verified (the twin is not
-- named: only content_matches, with a file nobody registered or a copy, is).
CREATE TABLE IF NOT EXISTS etl_verifier.twinned_rows (
    file_name text NOT NULL,
    row_no bigint NOT NULL,
    PRIMARY KEY (file_name, row_no)
);
-- How many rows of twinned_rows each file has, kept as they are added.
CREATE TABLE IF NOT EXISTS etl_verifier.twinned_counts (
    file_name text PRIMARY KEY REFERENCES etl_verifier.files (file_name),
    rows_twinned bigint NOT NULL
);
-- Files registered by a verifier before the tables above (digest_sum NULL):
-- their fingerprints, the digest_runs of the verified ones, and their matches
-- with registered files of other runs that are no copy partners moved to
-- twinned_rows (only a twin nobody registered yet needs its name: its matches
-- with its own run's files are dropped when it is registered). Once.
DO $upgrade$
BEGIN
    IF EXISTS (SELECT 1 FROM etl_verifier.files WHERE digest_sum IS NULL) THEN
        INSERT INTO etl_verifier.column_lists (columns)
            SELECT DISTINCT columns FROM etl_verifier.files
            WHERE verified AND digest_sum IS NULL
            ON CONFLICT (columns) DO NOTHING;
        INSERT INTO etl_verifier.digest_runs (digest, columns_id, run_id)
            SELECT DISTINCT d.digest, l.id, f.run_id
            FROM etl_verifier.files f
            JOIN etl_verifier.column_lists l ON l.columns = f.columns
            JOIN etl_verifier.row_digests d ON d.file_name = f.file_name
            WHERE f.verified AND f.digest_sum IS NULL
            ON CONFLICT DO NOTHING;
        WITH moved AS (
            DELETE FROM etl_verifier.content_matches c
            USING etl_verifier.files f, etl_verifier.files t
            WHERE f.file_name = c.file_name AND t.file_name = c.twin_file
              AND t.run_id <> f.run_id
              AND NOT EXISTS (SELECT 1 FROM etl_verifier.copies p
                  WHERE (p.copy_file = c.file_name AND p.original_file = c.twin_file)
                     OR (p.copy_file = c.twin_file AND p.original_file = c.file_name))
            RETURNING c.file_name, c.row_no)
        INSERT INTO etl_verifier.twinned_rows (file_name, row_no)
            SELECT DISTINCT file_name, row_no FROM moved
            ON CONFLICT DO NOTHING;
        INSERT INTO etl_verifier.twinned_counts (file_name, rows_twinned)
            SELECT file_name, count(*) FROM etl_verifier.twinned_rows GROUP BY file_name
            ON CONFLICT (file_name) DO UPDATE SET rows_twinned = EXCLUDED.rows_twinned;
        -- The sum of the signed digests modulo 2^64, as a signed bigint: the
        -- same bits as the wrapping sum of the u64 digests.
        UPDATE etl_verifier.files f SET digest_sum = (
            SELECT (CASE WHEN w >= 9223372036854775808 THEN w - 18446744073709551616 ELSE w END)::bigint
            FROM (SELECT mod(mod(coalesce(sum(d.digest::numeric), 0), 18446744073709551616)
                             + 18446744073709551616, 18446744073709551616) AS w
                  FROM etl_verifier.row_digests d WHERE d.file_name = f.file_name) s)
        WHERE f.digest_sum IS NULL;
    END IF;
END
$upgrade$;
-- A store with a row per digest (row_digests, above): its digests as arrays.
DO $arrays$
BEGIN
    IF to_regclass('etl_verifier.row_digests') IS NOT NULL THEN
        INSERT INTO etl_verifier.file_digests (file_name, digests)
            SELECT file_name, array_agg(digest ORDER BY row_no)
            FROM etl_verifier.row_digests GROUP BY file_name
            ON CONFLICT (file_name) DO NOTHING;
        DROP TABLE etl_verifier.row_digests;
    END IF;
END
$arrays$;
"#;

/// Taken by the transaction that marks a file verified, around the lookup of
/// its twins: of two files with the same rows in two runs, proven at the same
/// moment (by two verifiers), the second to commit must see the first verified.
/// The comparison of a file nobody registered takes it too, so the only
/// transactions that lock the rows of several runs take them one at a time.
const VERIFIED_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(hashtext('etl_verifier verified'))";

/// What storing a check did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CheckStored {
    /// The file is verified now, by this check; `twins` is what the lookup of
    /// its rows among the verified files of other runs found and stored.
    Verified { twins: Twins },
    /// Stored: the first stored check of this file with altered or duplicate rows.
    FirstProblem,
    /// Stored: progress (rows still missing), or a problem already stored.
    Progress,
    /// Not stored: the file is verified or its run finished already (by another
    /// verifier, or before a restart). This verifier's copy of the run is behind.
    Settled,
}

/// What marking a file verified found among the verified files of other runs
/// (see [`crate::duplicates`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Twins {
    /// Rows of the verified file whose content a verified file of another run holds.
    pub(crate) rows: u64,
    /// The files it holds exactly the rows of: it is their copy.
    pub(crate) originals: Vec<String>,
    /// Files of other runs with rows that had no twin before this one, and how
    /// many (byte order).
    pub(crate) earlier: Vec<(String, u64)>,
    /// Files it was found a copy of while nobody had registered it, and is not.
    pub(crate) no_longer_copied: Vec<String>,
}

impl Twins {
    /// Whether the content facts of any file changed.
    pub(crate) fn any(&self) -> bool {
        self.rows > 0
            || !self.originals.is_empty()
            || !self.earlier.is_empty()
            || !self.no_longer_copied.is_empty()
    }

    /// The registered files whose content facts this changed, `file` (the one
    /// verified) first.
    pub(crate) fn changed(&self, file: &str) -> Vec<String> {
        let mut changed = vec![file.to_string()];
        let others = self
            .originals
            .iter()
            .chain(&self.no_longer_copied)
            .chain(self.earlier.iter().map(|(f, _)| f));
        for other in others {
            if !changed.contains(other) {
                changed.push(other.clone());
            }
        }
        changed
    }
}

/// Rows of a registered file that a file nobody registered also holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnregisteredMatch {
    pub(crate) registered: String,
    /// Row numbers of the registered file.
    pub(crate) rows: Vec<i64>,
    /// The unregistered file holds exactly the registered file's rows.
    pub(crate) copy: bool,
}

/// What [`Store::record_unregistered`] stored.
#[derive(Debug, Default)]
pub(crate) struct UnregisteredStored {
    /// This comparison saw at least as many rows as any stored before, so its
    /// copies replaced theirs.
    pub(crate) newest: bool,
    /// Registered files whose content facts may have changed.
    pub(crate) changed: BTreeSet<String>,
}

/// A run's end, as [`Store::finish`] found or made it.
#[derive(Debug)]
pub(crate) struct Ended {
    /// Its report, from the stored files.
    pub(crate) report: RunReport,
    /// Ended by this call (not by another verifier before).
    pub(crate) now: bool,
}

/// What a registration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Registration {
    /// Stored now. `rejected`: the gateway reported the file in `error/` before
    /// it was registered. `unmatched`: files of the same run whose content
    /// duplicates were counted against this file while it was unknown (they
    /// no longer count: a run may hold the same line twice).
    New {
        rejected: Option<String>,
        unmatched: Vec<String>,
    },
    /// The same file with the same content was registered before: nothing changed.
    Unchanged,
}

/// A run as stored.
#[derive(Debug)]
pub(crate) struct StoredRun {
    pub(crate) run_id: String,
    pub(crate) expected_files: Option<u64>,
    pub(crate) finished: bool,
    /// Ordered by file name (byte order, as the in-memory runs are).
    pub(crate) files: Vec<StoredFile>,
}

impl StoredRun {
    /// The run's report, from its stored files.
    pub(crate) fn report(&self) -> RunReport {
        report::build(
            &self.run_id,
            self.expected_files,
            self.files.iter().map(StoredFile::facts),
        )
    }
}

/// A registered file as stored.
#[derive(Debug)]
pub(crate) struct StoredFile {
    /// `row_digests` is empty unless they were asked for.
    pub(crate) manifest: FileManifest,
    pub(crate) check: Option<FileCheck>,
    pub(crate) committed_at_unix_ms: Option<i64>,
    pub(crate) rejected: Option<String>,
    pub(crate) content: ContentFacts,
}

impl StoredFile {
    pub(crate) fn facts(&self) -> report::FileFacts<'_> {
        report::FileFacts {
            file_name: &self.manifest.file_name,
            row_count: self.manifest.row_count,
            trace_id: &self.manifest.trace_id,
            uploaded_at_unix_ms: self.manifest.uploaded_at_unix_ms,
            check: self.check.as_ref(),
            committed_at_unix_ms: self.committed_at_unix_ms,
            rejected: self.rejected.as_deref(),
            content: &self.content,
        }
    }
}

/// An unfinished run, as much as [`crate::registry`] needs to see whether its
/// copy is behind.
#[derive(Debug)]
pub(crate) struct RunSummary {
    pub(crate) run_id: String,
    pub(crate) expected_files: Option<u64>,
    pub(crate) files: u64,
}

/// A stored row whose digest was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestMatch {
    pub(crate) file_name: String,
    pub(crate) row_no: i64,
    pub(crate) digest: u64,
    /// Rows of the whole file `file_name`.
    pub(crate) row_count: u64,
}

/// One connection for the verifier's own writes, opened on first use and again
/// after it breaks. Writes are short (a registration is a handful of statements,
/// each prepared once), so one connection serializes them without becoming the
/// bottleneck: a second one, tried, did not shorten a 100k burst.
pub(crate) struct Store {
    db: tokio_postgres::Config,
    server: String,
    client: Mutex<Option<Conn>>,
}

/// A connection of the store and the statements prepared on it.
struct Conn {
    client: Client,
    prepared: Prepared,
}

impl Conn {
    fn db(&self) -> Db<'_, Client> {
        Db::new(&self.client, &self.prepared)
    }
}

/// Statements prepared on one connection, by their text. A statement sent as
/// text costs a round trip to prepare it and Postgres a parse and an analysis
/// every time; checking one file sends about twenty, so a verifier running
/// behind the sink spent a good part of each check waiting for those round
/// trips. Prepared once per connection, each is a single round trip after.
#[derive(Default)]
struct Prepared(std::sync::Mutex<HashMap<String, Statement>>);

impl Prepared {
    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A client or transaction with its connection's prepared statements: the
/// calls of tokio-postgres the store makes, by statement text.
struct Db<'a, C> {
    client: &'a C,
    prepared: &'a Prepared,
}

/// `Db::$call(sql, params)`: tokio-postgres' `$call` with `sql` prepared once.
macro_rules! prepared_call {
    ($($call:ident -> $out:ty;)*) => {$(
        async fn $call(
            &self,
            sql: &str,
            params: &[&(dyn ToSql + Sync)],
        ) -> Result<$out, tokio_postgres::Error> {
            let statement = self.statement(sql).await?;
            self.client.$call(&statement, params).await
        }
    )*};
}

impl<'a, C: GenericClient + Sync> Db<'a, C> {
    fn new(client: &'a C, prepared: &'a Prepared) -> Self {
        Self { client, prepared }
    }

    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let cached = self.prepared.cache().get(sql).cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        self.prepared
            .cache()
            .insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    prepared_call! {
        query -> Vec<Row>;
        query_one -> Row;
        query_opt -> Option<Row>;
        execute -> u64;
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl Store {
    pub(crate) fn new(db: tokio_postgres::Config, server: &str) -> Self {
        Self {
            db,
            server: server.to_string(),
            client: Mutex::new(None),
        }
    }

    fn pg(&self, what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
        let what = what.into();
        move |source| Error::Postgres {
            server: self.server.clone(),
            what,
            source,
        }
    }

    /// The connection, (re)connected and the schema ensured when needed.
    async fn client(&self) -> Result<MappedMutexGuard<'_, Conn>, Error> {
        let mut guard = self.client.lock().await;
        let client = match guard.take().filter(|c| !c.client.is_closed()) {
            Some(open) => open,
            None => Conn {
                client: self.connect().await?,
                prepared: Prepared::default(),
            },
        };
        Ok(MutexGuard::map(guard, |slot| slot.insert(client)))
    }

    async fn connect(&self) -> Result<Client, Error> {
        let (mut client, _driver) = etl_pg::connect(&self.db, "verifier state")
            .await
            .map_err(self.pg("connecting (verifier state)"))?;
        let tx = client
            .transaction()
            .await
            .map_err(self.pg("creating schema etl_verifier"))?;
        tx.batch_execute(SCHEMA_SQL)
            .await
            .map_err(self.pg("creating schema etl_verifier"))?;
        tx.commit()
            .await
            .map_err(self.pg("creating schema etl_verifier"))?;
        Ok(client)
    }

    /// Stores `m` with its row digests in one transaction, or finds it already
    /// stored. Refuses a different manifest under the same name, and a new file
    /// for a run that was completed with all its files registered.
    pub(crate) async fn register(&self, m: &Manifest) -> Result<Registration, Error> {
        let mut conn = self.client().await?;
        match register_tx(&mut conn, m, &self.server).await {
            // Another verifier stored the same name between our look and our
            // insert: look again, now it is there.
            Err(Error::Postgres { source, .. })
                if source.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
            {
                register_tx(&mut conn, m, &self.server).await
            }
            other => other,
        }
    }

    /// Records that `run_id` has `files` files in total.
    pub(crate) async fn complete(&self, run_id: &str, files: u64) -> Result<(), Error> {
        let mut conn = self.client().await?;
        let Conn { client, prepared } = &mut *conn;
        let pg = || self.pg(format!("completing run {run_id:?}"));
        let txn = client.transaction().await.map_err(pg())?;
        let tx = Db::new(&txn, prepared);
        let expected = lock_run(&tx, run_id).await.map_err(pg())?;
        let registered = files_of_run(&tx, run_id).await.map_err(pg())?;
        if registered > files {
            return Err(Error::RunState {
                run_id: run_id.to_string(),
                reason: format!("{registered} files are registered, but CompleteRun says {files}"),
            });
        }
        if let Some(before) = expected
            && before != files
        {
            return Err(Error::RunState {
                run_id: run_id.to_string(),
                reason: format!("already completed with {before} files, now {files}"),
            });
        }
        tx.execute(
            "UPDATE etl_verifier.runs SET expected_files = $2 WHERE run_id = $1",
            &[&run_id, &to_i64(files)],
        )
        .await
        .map_err(pg())?;
        txn.commit().await.map_err(pg())
    }

    /// Stores a check of `m`'s file, unless the file is verified or its run
    /// finished already (by us earlier, or by another verifier). A verified
    /// check also records the file's twins among the verified files of other
    /// runs, in the same transaction. The run's row is locked while the check
    /// is stored (shared; exclusively for a verified check), so the run cannot
    /// end half-way through it.
    pub(crate) async fn record_check(
        &self,
        m: &Manifest,
        check: &FileCheck,
        committed_at_unix_ms: Option<i64>,
    ) -> Result<CheckStored, Error> {
        let file = m.file_name.as_str();
        let mut conn = self.client().await?;
        let Conn { client, prepared } = &mut *conn;
        let pg = || self.pg(format!("storing the check of file {file:?}"));
        let txn = client.transaction().await.map_err(pg())?;
        let tx = Db::new(&txn, prepared);
        let verified = check.verified();
        if verified {
            tx.execute(VERIFIED_LOCK_SQL, &[]).await.map_err(pg())?;
        }
        // A verified file may add content matches against its own run, which
        // takes the run's row exclusively (`insert_matches`): take it so at
        // once, since two checks upgrading a shared lock would deadlock.
        let run_lock = if verified { "NO KEY UPDATE" } else { "SHARE" };
        let Some(stored) = tx
            .query_opt(
                &format!(
                    "SELECT f.verified OR r.finished_at IS NOT NULL, \
                            f.duplicates > 0 OR f.altered > 0 \
                     FROM etl_verifier.files f JOIN etl_verifier.runs r USING (run_id) \
                     WHERE f.file_name = $1 FOR NO KEY UPDATE OF f FOR {run_lock} OF r"
                ),
                &[&file],
            )
            .await
            .map_err(pg())?
        else {
            return Ok(CheckStored::Settled);
        };
        let settled: bool = stored.try_get(0).map_err(pg())?;
        let had_problem: bool = stored.try_get(1).map_err(pg())?;
        if settled {
            // Dropping `tx` rolls it back.
            return Ok(CheckStored::Settled);
        }
        let twins = if verified {
            record_twins(&tx, m).await.map_err(pg())?
        } else {
            Twins::default()
        };
        tx.execute(
            "UPDATE etl_verifier.files SET checked_at = now(), rows_landed = $2, missing = $3, \
             duplicates = $4, altered = $5, verified = $6, committed_at_unix_ms = $7 \
             WHERE file_name = $1",
            &[
                &file,
                &to_i64(check.rows_landed),
                &to_i64(check.missing),
                &to_i64(check.duplicates),
                &to_i64(check.altered),
                &verified,
                &committed_at_unix_ms.filter(|_| verified),
            ],
        )
        .await
        .map_err(pg())?;
        txn.commit().await.map_err(pg())?;
        Ok(if verified {
            CheckStored::Verified { twins }
        } else if check.has_problem() && !had_problem {
            CheckStored::FirstProblem
        } else {
            CheckStored::Progress
        })
    }

    /// Ends `run_id` if its stored files make it complete, with the state they
    /// give, and returns its report as stored; `None` while it is not
    /// complete. A run another verifier ended keeps that end, and its stored
    /// report is returned. The run's row is held exclusively, so no check or
    /// content match is half-stored while the state is decided.
    pub(crate) async fn finish(&self, run_id: &str) -> Result<Option<Ended>, Error> {
        let mut conn = self.client().await?;
        let Conn { client, prepared } = &mut *conn;
        let pg = || self.pg(format!("finishing run {run_id:?}"));
        let txn = client.transaction().await.map_err(pg())?;
        let tx = Db::new(&txn, prepared);
        let Some(run) = tx
            .query_opt(
                "SELECT expected_files, finished_at IS NOT NULL FROM etl_verifier.runs \
                 WHERE run_id = $1 FOR UPDATE",
                &[&run_id],
            )
            .await
            .map_err(pg())?
        else {
            return Ok(None);
        };
        let expected_files = run.try_get::<_, Option<i64>>(0).map_err(pg())?.map(to_u64);
        let finished: bool = run.try_get(1).map_err(pg())?;
        // A statement after the lock: it sees every check that shared the row.
        // Counted first: the whole report is read only for a run that ends, not
        // after every file (which made a run of n files read n² rows).
        if !finished {
            let counts = tx
                .query_one(
                    "SELECT count(*), count(*) FILTER (WHERE f.verified OR j.file_name IS NOT NULL) \
                     FROM etl_verifier.files f LEFT JOIN etl_verifier.rejections j USING (file_name) \
                     WHERE f.run_id = $1",
                    &[&run_id],
                )
                .await
                .map_err(pg())?;
            let registered = to_u64(counts.try_get(0).map_err(pg())?);
            let done = to_u64(counts.try_get(1).map_err(pg())?);
            if expected_files != Some(registered) || done != registered {
                return Ok(None);
            }
        }
        let run = StoredRun {
            run_id: run_id.to_string(),
            expected_files,
            finished,
            files: stored_files(&tx, run_id).await.map_err(pg())?,
        };
        let report = run.report();
        if finished {
            return Ok(Some(Ended { report, now: false }));
        }
        if !report.complete {
            return Ok(None);
        }
        tx.execute(
            "UPDATE etl_verifier.runs SET finished_at = now(), state = $2 WHERE run_id = $1",
            &[&run_id, &report.state],
        )
        .await
        .map_err(pg())?;
        txn.commit().await.map_err(pg())?;
        Ok(Some(Ended { report, now: true }))
    }

    /// The report of `run_id` as stored, whichever verifier holds the run;
    /// `None` for a run nobody registered a file of.
    pub(crate) async fn report(&self, run_id: &str) -> Result<Option<RunReport>, Error> {
        Ok(self.load_run(run_id, None).await?.map(|run| run.report()))
    }

    /// Stores that `file` was moved to `error/` and why, registered or not.
    pub(crate) async fn reject(&self, file: &str, reason: &str) -> Result<(), Error> {
        let conn = self.client().await?;
        let client = conn.db();
        client
            .execute(
                "INSERT INTO etl_verifier.rejections (file_name, reason) VALUES ($1, $2) \
                 ON CONFLICT (file_name) DO UPDATE SET reason = EXCLUDED.reason \
                 WHERE etl_verifier.rejections.reason IS DISTINCT FROM EXCLUDED.reason",
                &[&file, &reason],
            )
            .await
            .map_err(self.pg(format!("storing the rejection of file {file:?}")))?;
        Ok(())
    }

    /// The runs not finished yet, with their file counts.
    pub(crate) async fn unfinished_runs(&self) -> Result<Vec<RunSummary>, Error> {
        let conn = self.client().await?;
        let client = conn.db();
        let rows = client
            .query(
                "SELECT r.run_id, r.expected_files, count(f.file_name) \
                 FROM etl_verifier.runs r LEFT JOIN etl_verifier.files f USING (run_id) \
                 WHERE r.finished_at IS NULL GROUP BY r.run_id, r.expected_files",
                &[],
            )
            .await
            .map_err(self.pg("listing unfinished runs"))?;
        rows.iter()
            .map(|r| {
                Ok(RunSummary {
                    run_id: r.try_get(0)?,
                    expected_files: r.try_get::<_, Option<i64>>(1)?.map(to_u64),
                    files: to_u64(r.try_get(2)?),
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(self.pg("listing unfinished runs"))
    }

    /// The run `file` is registered in and whether that run is finished.
    pub(crate) async fn run_of_file(&self, file: &str) -> Result<Option<(String, bool)>, Error> {
        let conn = self.client().await?;
        let client = conn.db();
        let row = client
            .query_opt(
                "SELECT f.run_id, r.finished_at IS NOT NULL FROM etl_verifier.files f \
                 JOIN etl_verifier.runs r USING (run_id) WHERE f.file_name = $1",
                &[&file],
            )
            .await
            .map_err(self.pg(format!("looking up file {file:?}")))?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .transpose()
            .map_err(self.pg(format!("looking up file {file:?}")))
    }

    /// Reads run `run_id` back, with the row digests of every file not in
    /// `without_digests` (`None`: of no file, for a report only).
    pub(crate) async fn load_run(
        &self,
        run_id: &str,
        without_digests: Option<&HashSet<String>>,
    ) -> Result<Option<StoredRun>, Error> {
        let mut conn = self.client().await?;
        let Conn { client, prepared } = &mut *conn;
        let pg = || self.pg(format!("reading run {run_id:?}"));
        // One snapshot for the run and its files: a report is of one moment.
        let txn = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg())?;
        let tx = Db::new(&txn, prepared);
        let Some(run) = tx
            .query_opt(
                "SELECT expected_files, finished_at IS NOT NULL FROM etl_verifier.runs \
                 WHERE run_id = $1",
                &[&run_id],
            )
            .await
            .map_err(pg())?
        else {
            return Ok(None);
        };
        let mut files = stored_files(&tx, run_id).await.map_err(pg())?;
        let finished: bool = run.try_get(1).map_err(pg())?;
        if let Some(skip) = without_digests.filter(|_| !finished) {
            let wanted: Vec<&str> = files
                .iter()
                .map(|f| f.manifest.file_name.as_str())
                .filter(|f| !skip.contains(*f))
                .collect();
            if !wanted.is_empty() {
                let digests = tx
                    .query(
                        "SELECT file_name, digests FROM etl_verifier.file_digests \
                         WHERE file_name = ANY($1)",
                        &[&wanted],
                    )
                    .await
                    .map_err(pg())?;
                let mut by_file = std::collections::HashMap::with_capacity(digests.len());
                for r in &digests {
                    let name: String = r.try_get(0).map_err(pg())?;
                    let d: Vec<i64> = r.try_get(1).map_err(pg())?;
                    by_file.insert(name, d);
                }
                for f in &mut files {
                    if let Some(d) = by_file.remove(&f.manifest.file_name) {
                        f.manifest.row_digests = d.into_iter().map(|d| d as u64).collect();
                    }
                }
            }
        }
        let expected_files = run.try_get::<_, Option<i64>>(0).map_err(pg())?.map(to_u64);
        txn.commit().await.map_err(pg())?;
        Ok(Some(StoredRun {
            run_id: run_id.to_string(),
            expected_files,
            finished,
            files,
        }))
    }

    /// The distinct column lists of the registered files: an unregistered file's
    /// rows are digested over each to compare them with registered rows.
    pub(crate) async fn column_lists(&self) -> Result<Vec<Vec<String>>, Error> {
        let conn = self.client().await?;
        let client = conn.db();
        let rows = client
            .query("SELECT DISTINCT columns FROM etl_verifier.files", &[])
            .await
            .map_err(self.pg("listing registered column lists"))?;
        rows.iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(self.pg("listing registered column lists"))
    }

    /// Stored rows of the registered files (of every run, verified or not)
    /// with exactly `columns` whose digest is one of `digests`: what a file
    /// nobody registered shares with them.
    pub(crate) async fn match_digests(
        &self,
        columns: &[String],
        digests: &[u64],
    ) -> Result<Vec<DigestMatch>, Error> {
        let conn = self.client().await?;
        let client = conn.db();
        let digests: Vec<i64> = digests.iter().map(|&d| d as i64).collect();
        let rows = client
            .query(
                "SELECT f.file_name, g.n, g.digest, f.row_count \
                 FROM etl_verifier.file_digests d \
                 JOIN etl_verifier.files f USING (file_name) \
                 CROSS JOIN LATERAL unnest(d.digests) WITH ORDINALITY AS g(digest, n) \
                 WHERE d.digests && $1 AND f.columns = $2 AND g.digest = ANY($1)",
                &[&digests, &columns],
            )
            .await
            .map_err(self.pg("looking up row digests"))?;
        rows.iter()
            .map(|r| {
                Ok(DigestMatch {
                    file_name: r.try_get(0)?,
                    row_no: r.try_get(1)?,
                    digest: r.try_get::<_, i64>(2)? as u64,
                    row_count: to_u64(r.try_get(3)?),
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(self.pg("looking up row digests"))
    }

    /// Stores what a comparison of `file`, which nobody had registered when its
    /// `rows_seen` rows were read, found: for each registered file, its rows
    /// that `file` also holds, and whether `file` holds exactly its rows (a
    /// copy). Matches are facts that stay; the copies of `file` are replaced by
    /// these, unless a comparison that saw more rows was stored before (two
    /// verifiers reading a file while it lands), or `file` has been registered
    /// since (its verification decides then). Matches against files of the
    /// run `file` has been registered in since are not stored: within a run
    /// the same line twice is not a duplicate (this and the registration are
    /// ordered by the run's row lock, whichever comes first). A finished run
    /// whose files gained or lost a copy gets its state again.
    pub(crate) async fn record_unregistered(
        &self,
        file: &str,
        rows_seen: u64,
        matches: &[UnregisteredMatch],
    ) -> Result<UnregisteredStored, Error> {
        let mut conn = self.client().await?;
        let Conn { client, prepared } = &mut *conn;
        let pg = || self.pg(format!("storing content duplicates of file {file:?}"));
        let txn = client.transaction().await.map_err(pg())?;
        let tx = Db::new(&txn, prepared);
        tx.execute(VERIFIED_LOCK_SQL, &[]).await.map_err(pg())?;
        let mut stored = UnregisteredStored::default();
        // Several runs' rows are locked here: the advisory lock above keeps
        // every transaction that does so (this, a verified check) one at a time.
        let mut matches: Vec<&UnregisteredMatch> = matches.iter().collect();
        matches.sort_by(|a, b| a.registered.cmp(&b.registered));
        let mut originals = Vec::new();
        for m in &matches {
            let run = lock_run_of(&tx, &m.registered).await.map_err(pg())?;
            // Read after the lock: a registration of `file` in this run has
            // committed by now, or waits for this transaction and then drops
            // what it stores against its own run.
            if run.is_some() && run == run_of(&tx, file).await.map_err(pg())? {
                continue;
            }
            insert_matches(&tx, &m.registered, file, &m.rows)
                .await
                .map_err(pg())?;
            stored.changed.insert(m.registered.clone());
            if m.copy {
                originals.push(m.registered.clone());
            }
        }
        if run_of(&tx, file).await.map_err(pg())?.is_none() {
            stored.newest = tx
                .query_opt(
                    "INSERT INTO etl_verifier.unregistered_files (file_name, rows_seen) \
                     VALUES ($1, $2) ON CONFLICT (file_name) DO UPDATE \
                     SET rows_seen = EXCLUDED.rows_seen, compared_at = now() \
                     WHERE etl_verifier.unregistered_files.rows_seen <= EXCLUDED.rows_seen \
                     RETURNING 1",
                    &[&file, &to_i64(rows_seen)],
                )
                .await
                .map_err(pg())?
                .is_some();
            if stored.newest {
                let changed = set_copies(&tx, file, &originals).await.map_err(pg())?;
                stored.changed.extend(changed);
            }
        }
        txn.commit().await.map_err(pg())?;
        Ok(stored)
    }

    /// What the content-duplicate checks found for each of the registered
    /// `files` (a file not registered is left out).
    pub(crate) async fn content_facts(
        &self,
        files: &[String],
    ) -> Result<Vec<(String, ContentFacts)>, Error> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.client().await?;
        let client = conn.db();
        let pg = || match files {
            [file] => self.pg(format!("reading content duplicates of file {file:?}")),
            _ => self.pg(format!(
                "reading content duplicates of {} files",
                files.len()
            )),
        };
        let rows = client
            .query(
                &format!(
                    "SELECT f.file_name, {CONTENT_FACTS_SQL} \
                     FROM etl_verifier.files f WHERE f.file_name = ANY($1)"
                ),
                &[&files],
            )
            .await
            .map_err(pg())?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, content_facts(r, 1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(pg())
    }
}

/// The columns of [`ContentFacts`] for the file `f.file_name`, in the order
/// [`content_facts`] reads them: rows with a twin anywhere (its count of
/// `twinned_rows`, plus the rows only `content_matches` names: one index probe
/// for a file without any), rows with a twin in a copy or original, the files
/// it copies and the files that copy it (byte order). Indexed lookups of the
/// file's own entries only: no scan grows with other files.
const CONTENT_FACTS_SQL: &str = "\
    coalesce((SELECT t.rows_twinned FROM etl_verifier.twinned_counts t \
              WHERE t.file_name = f.file_name), 0) \
    + (SELECT count(DISTINCT c.row_no) FROM etl_verifier.content_matches c \
       WHERE c.file_name = f.file_name AND NOT EXISTS ( \
           SELECT 1 FROM etl_verifier.twinned_rows t \
           WHERE t.file_name = c.file_name AND t.row_no = c.row_no)), \
    (SELECT count(DISTINCT c.row_no) FROM etl_verifier.content_matches c \
     WHERE c.file_name = f.file_name AND c.twin_file IN ( \
         SELECT p.original_file FROM etl_verifier.copies p WHERE p.copy_file = f.file_name \
         UNION ALL \
         SELECT p.copy_file FROM etl_verifier.copies p WHERE p.original_file = f.file_name)), \
    ARRAY(SELECT p.original_file FROM etl_verifier.copies p \
          WHERE p.copy_file = f.file_name ORDER BY p.original_file COLLATE \"C\"), \
    ARRAY(SELECT p.copy_file FROM etl_verifier.copies p \
          WHERE p.original_file = f.file_name ORDER BY p.copy_file COLLATE \"C\")";

/// Reads the columns of [`CONTENT_FACTS_SQL`], starting at `at`.
fn content_facts(
    row: &tokio_postgres::Row,
    at: usize,
) -> Result<ContentFacts, tokio_postgres::Error> {
    let twinned = to_u64(row.try_get(at)?);
    let copied_rows = to_u64(row.try_get(at + 1)?);
    Ok(ContentFacts {
        copied_rows,
        overlapping_rows: twinned.saturating_sub(copied_rows),
        copy_of: row.try_get(at + 2)?,
        copies: row.try_get(at + 3)?,
    })
}

/// Inserts the run if new and locks its row, so registrations and completion of
/// one run are serialized even across verifiers. Returns its expected files.
async fn lock_run(
    tx: &Db<'_, Transaction<'_>>,
    run_id: &str,
) -> Result<Option<u64>, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO etl_verifier.runs (run_id) VALUES ($1) ON CONFLICT (run_id) DO NOTHING",
        &[&run_id],
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT expected_files FROM etl_verifier.runs WHERE run_id = $1 FOR UPDATE",
            &[&run_id],
        )
        .await?;
    Ok(row.try_get::<_, Option<i64>>(0)?.map(to_u64))
}

/// The run `file` is registered in, `None` for a file nobody registered.
async fn run_of(
    tx: &Db<'_, Transaction<'_>>,
    file: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    tx.query_opt(
        "SELECT run_id FROM etl_verifier.files WHERE file_name = $1",
        &[&file],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()
}

/// Locks the row of the run `file` is registered in, for a write to the
/// results of its files: it waits for a registration or the run's end, and
/// they wait for it. Returns the run, `None` for a file nobody registered.
async fn lock_run_of(
    tx: &Db<'_, Transaction<'_>>,
    file: &str,
) -> Result<Option<String>, tokio_postgres::Error> {
    tx.query_opt(
        "SELECT run_id FROM etl_verifier.runs WHERE run_id = \
           (SELECT run_id FROM etl_verifier.files WHERE file_name = $1) FOR NO KEY UPDATE",
        &[&file],
    )
    .await?
    .map(|r| r.try_get(0))
    .transpose()
}

/// Stores rows `rows` of `file` as twins of `twin`, under the row lock of
/// `file`'s run. Rows that landed twice do not change a run's state on their
/// own: a copy does ([`set_copies`]).
async fn insert_matches(
    tx: &Db<'_, Transaction<'_>>,
    file: &str,
    twin: &str,
    rows: &[i64],
) -> Result<(), tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    lock_run_of(tx, file).await?;
    tx.execute(
        "INSERT INTO etl_verifier.content_matches (file_name, row_no, twin_file) \
         SELECT $1, r, $2 FROM unnest($3::bigint[]) AS r ON CONFLICT DO NOTHING",
        &[&file, &twin, &rows],
    )
    .await?;
    Ok(())
}

/// Makes `originals` the files `copy` is a copy of, in place of those stored
/// before, and gives the finished runs of the originals added or dropped their
/// state again from their stored files. Returns those originals.
async fn set_copies(
    tx: &Db<'_, Transaction<'_>>,
    copy: &str,
    originals: &[String],
) -> Result<BTreeSet<String>, tokio_postgres::Error> {
    let before: BTreeSet<String> = tx
        .query(
            "SELECT original_file FROM etl_verifier.copies WHERE copy_file = $1",
            &[&copy],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let after: BTreeSet<String> = originals.iter().cloned().collect();
    let changed: BTreeSet<String> = before.symmetric_difference(&after).cloned().collect();
    if changed.is_empty() {
        return Ok(changed);
    }
    let gone: Vec<&String> = before.difference(&after).collect();
    let new: Vec<&String> = after.difference(&before).collect();
    // Every run is locked before its files' copies change (the caller holds
    // the advisory lock that serializes transactions locking several runs).
    for original in &changed {
        lock_run_of(tx, original).await?;
    }
    tx.execute(
        "DELETE FROM etl_verifier.copies WHERE copy_file = $1 AND original_file = ANY($2)",
        &[&copy, &gone],
    )
    .await?;
    tx.execute(
        "INSERT INTO etl_verifier.copies (copy_file, original_file) \
         SELECT $1, o FROM unnest($2::text[]) AS o ON CONFLICT DO NOTHING",
        &[&copy, &new],
    )
    .await?;
    for original in &changed {
        restate_run_of(tx, original).await?;
    }
    Ok(changed)
}

/// Decides the state of the finished run holding `file` again from its stored
/// files: a copy found (or dropped) after the run ended changes its verdict.
/// The caller holds the run's row lock.
async fn restate_run_of(
    tx: &Db<'_, Transaction<'_>>,
    file: &str,
) -> Result<(), tokio_postgres::Error> {
    let Some(run) = tx
        .query_opt(
            "SELECT r.run_id, r.expected_files FROM etl_verifier.runs r \
             JOIN etl_verifier.files f USING (run_id) \
             WHERE f.file_name = $1 AND r.finished_at IS NOT NULL",
            &[&file],
        )
        .await?
    else {
        return Ok(());
    };
    let run_id: String = run.try_get(0)?;
    let expected_files = run.try_get::<_, Option<i64>>(1)?.map(to_u64);
    let stored = StoredRun {
        files: stored_files(tx, &run_id).await?,
        run_id,
        expected_files,
        finished: true,
    };
    let report = stored.report();
    tx.execute(
        "UPDATE etl_verifier.runs SET state = $2 WHERE run_id = $1 AND state <> $2",
        &[&stored.run_id, &report.state],
    )
    .await?;
    Ok(())
}

/// Looks up `m`'s rows among the verified files of other runs and stores what
/// they twin: its rows whose content such a file holds, the rows of those
/// files that had no twin in another run before, and `m`'s file as the copy of
/// each whose rows it holds exactly, with their rows matched by name on both
/// sides (see [`crate::duplicates`]). Then records its digests as its run's.
/// Runs under [`VERIFIED_LOCK_SQL`] with `m`'s run locked, so it sees every
/// file verified before it. Each step is an indexed lookup of `m`'s own
/// digests or rows: a digest held by many files costs nothing more, except
/// once, when a second run's file first twins the first run's rows (the
/// files holding them are found by index, their rows by reading their
/// digests).
async fn record_twins(
    tx: &Db<'_, Transaction<'_>>,
    m: &Manifest,
) -> Result<Twins, tokio_postgres::Error> {
    let mut twins = Twins::default();
    if !m.row_digests.is_empty() {
        let columns_id = column_list_id(tx, &m.columns).await?;
        let distinct: HashSet<i64> = m.row_digests.iter().map(|&d| d as i64).collect();
        let distinct: Vec<i64> = distinct.into_iter().collect();
        let mut runs: HashMap<u64, Vec<String>> = HashMap::new();
        for r in tx
            .query(
                &format!(
                    "SELECT u.digest, r.run_id FROM unnest($1::bigint[]) AS u(digest) \
                     CROSS JOIN LATERAL (SELECT run_id FROM etl_verifier.digest_runs \
                         WHERE digest = u.digest AND columns_id = $2 \
                         LIMIT {}) r",
                    duplicates::RUNS_LOOKED_UP
                ),
                &[&distinct, &columns_id],
            )
            .await?
        {
            let digest = r.try_get::<_, i64>(0)? as u64;
            runs.entry(digest).or_default().push(r.try_get(1)?);
        }
        let plan = duplicates::twinning(&m.run_id, &m.row_digests, &runs);
        if !plan.rows.is_empty() {
            add_twinned(
                tx,
                "SELECT $1::text, r FROM unnest($2::bigint[]) AS r",
                &[&m.file_name, &plan.rows],
            )
            .await?;
            twins.rows = plan.rows.len() as u64;
        }
        if !plan.first_twins.is_empty() {
            let digests: Vec<i64> = plan.first_twins.iter().map(|(d, _)| *d as i64).collect();
            let mut locked: Vec<&str> = plan.first_twins.iter().map(|(_, r)| r.as_str()).collect();
            locked.sort_unstable();
            locked.dedup();
            // Every run is locked before its files' results change (the
            // advisory lock serializes the transactions locking several runs).
            tx.execute(
                "SELECT 1 FROM etl_verifier.runs WHERE run_id = ANY($1) \
                 ORDER BY run_id FOR NO KEY UPDATE",
                &[&locked],
            )
            .await?;
            // The files of those runs holding any of the digests (by the GIN
            // index), whose rows with them are found here, not in SQL (see
            // `duplicates::first_twin_rows`).
            let mut candidates = Vec::new();
            for r in tx
                .query(
                    "SELECT f.file_name, f.run_id, d.digests \
                     FROM etl_verifier.file_digests d \
                     JOIN etl_verifier.files f USING (file_name) \
                     WHERE d.digests && $1 AND f.verified AND f.columns = $3 \
                       AND f.run_id = ANY($2)",
                    &[&digests, &locked, &m.columns],
                )
                .await?
            {
                let digests: Vec<i64> = r.try_get(2)?;
                candidates.push((
                    r.try_get::<_, String>(0)?,
                    r.try_get::<_, String>(1)?,
                    digests.into_iter().map(|d| d as u64).collect::<Vec<u64>>(),
                ));
            }
            let (files, rows) = duplicates::first_twin_rows(&plan.first_twins, &candidates);
            if !files.is_empty() {
                twins.earlier = add_twinned(
                    tx,
                    "SELECT * FROM unnest($1::text[], $2::bigint[])",
                    &[&files, &rows],
                )
                .await?;
            }
        }
        twins.originals = originals_of(tx, m).await?;
        // A copy holds as many rows as its original, every one with a twin there.
        let rows: Vec<i64> = (1..=to_i64(m.row_digests.len() as u64)).collect();
        for original in &twins.originals {
            insert_matches(tx, &m.file_name, original, &rows).await?;
            insert_matches(tx, original, &m.file_name, &rows).await?;
        }
        // The lookup above tells, for most digests, whether the run holds
        // them already: fewer runs than asked for is the whole list. Those it
        // lacks go in with a plain insert (the verified lock keeps any other
        // writer out; were one to slip in, the unique violation fails this
        // check, which is tried again), saving the conflict check on each;
        // only a digest with a full list takes it.
        let (mut new, mut unsure) = (Vec::new(), Vec::new());
        for &d in &distinct {
            match runs.get(&(d as u64)) {
                Some(held) if held.contains(&m.run_id) => {}
                Some(held) if held.len() >= duplicates::RUNS_LOOKED_UP => unsure.push(d),
                _ => new.push(d),
            }
        }
        if !new.is_empty() {
            tx.execute(
                "INSERT INTO etl_verifier.digest_runs (digest, columns_id, run_id) \
                 SELECT d, $2, $3 FROM unnest($1::bigint[]) AS d",
                &[&new, &columns_id, &m.run_id],
            )
            .await?;
        }
        if !unsure.is_empty() {
            tx.execute(
                "INSERT INTO etl_verifier.digest_runs (digest, columns_id, run_id) \
                 SELECT d, $2, $3 FROM unnest($1::bigint[]) AS d ON CONFLICT DO NOTHING",
                &[&unsure, &columns_id, &m.run_id],
            )
            .await?;
        }
    }
    // Its verification is the last word on what the file copies: a comparison
    // made while it was a file nobody registered is replaced.
    let changed = set_copies(tx, &m.file_name, &twins.originals).await?;
    twins.no_longer_copied = changed
        .into_iter()
        .filter(|f| !twins.originals.contains(f))
        .collect();
    Ok(twins)
}

/// The number of `columns` in `column_lists`, added if new. Called under
/// [`VERIFIED_LOCK_SQL`], so no other verifier adds it meanwhile.
async fn column_list_id(
    tx: &Db<'_, Transaction<'_>>,
    columns: &[String],
) -> Result<i64, tokio_postgres::Error> {
    let select = "SELECT id FROM etl_verifier.column_lists WHERE columns = $1";
    if let Some(row) = tx.query_opt(select, &[&columns]).await? {
        return row.try_get(0);
    }
    tx.execute(
        "INSERT INTO etl_verifier.column_lists (columns) VALUES ($1) \
         ON CONFLICT (columns) DO NOTHING",
        &[&columns],
    )
    .await?;
    tx.query_one(select, &[&columns]).await?.try_get(0)
}

/// Adds the rows `select` gives (file name, row number) to `twinned_rows`,
/// those not there yet, and counts them in `twinned_counts`. Returns how many
/// were added per file (byte order).
async fn add_twinned(
    tx: &Db<'_, Transaction<'_>>,
    select: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<(String, u64)>, tokio_postgres::Error> {
    let rows = tx
        .query(
            &format!(
                "WITH added AS ( \
                     INSERT INTO etl_verifier.twinned_rows (file_name, row_no) {select} \
                     ON CONFLICT DO NOTHING RETURNING file_name), \
                 per_file AS (SELECT file_name, count(*) AS n FROM added GROUP BY file_name), \
                 counted AS ( \
                     INSERT INTO etl_verifier.twinned_counts (file_name, rows_twinned) \
                     SELECT file_name, n FROM per_file ON CONFLICT (file_name) DO UPDATE \
                     SET rows_twinned = etl_verifier.twinned_counts.rows_twinned \
                                        + EXCLUDED.rows_twinned) \
                 SELECT file_name, n FROM per_file ORDER BY file_name COLLATE \"C\""
            ),
            params,
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, to_u64(r.try_get(1)?))))
        .collect()
}

/// The verified files of other runs with `m`'s columns that hold exactly
/// `m`'s rows (byte order): candidates by fingerprint (row count and digest
/// sum, indexed), each confirmed by comparing its digests.
async fn originals_of(
    tx: &Db<'_, Transaction<'_>>,
    m: &Manifest,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let candidates = tx
        .query(
            "SELECT file_name FROM etl_verifier.files \
             WHERE digest_sum = $1 AND row_count = $2 AND columns = $3 AND verified \
               AND run_id <> $4 ORDER BY file_name COLLATE \"C\"",
            &[
                &(duplicates::digest_sum(&m.row_digests) as i64),
                &to_i64(m.row_digests.len() as u64),
                &m.columns,
                &m.run_id,
            ],
        )
        .await?;
    let mut originals = Vec::new();
    for candidate in candidates {
        let name: String = candidate.try_get(0)?;
        let digests: Vec<i64> = tx
            .query_one(
                "SELECT coalesce((SELECT digests FROM etl_verifier.file_digests \
                 WHERE file_name = $1), '{}')",
                &[&name],
            )
            .await?
            .try_get(0)?;
        let digests: Vec<u64> = digests.into_iter().map(|d| d as u64).collect();
        if duplicates::same_multiset(&digests, &m.row_digests) {
            originals.push(name);
        }
    }
    Ok(originals)
}

/// The registered files of `run_id` with their latest checks, ordered by file
/// name (byte order, as the in-memory runs are); no row digests.
async fn stored_files(
    client: &Db<'_, impl GenericClient + Sync>,
    run_id: &str,
) -> Result<Vec<StoredFile>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT f.file_name, f.row_count, f.columns, f.checksum, f.uploaded_at_unix_ms, \
                        f.trace_id, f.traceparent, f.checked_at IS NOT NULL, f.rows_landed, \
                        f.missing, f.duplicates, f.altered, f.committed_at_unix_ms, j.reason, \
                        {CONTENT_FACTS_SQL} \
                 FROM etl_verifier.files f LEFT JOIN etl_verifier.rejections j USING (file_name) \
                 WHERE f.run_id = $1 ORDER BY f.file_name COLLATE \"C\""
            ),
            &[&run_id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let row_count = to_u64(r.try_get(1)?);
            let manifest = FileManifest {
                run_id: run_id.to_string(),
                file_name: r.try_get(0)?,
                row_count,
                columns: r.try_get(2)?,
                row_digests: Vec::new(),
                checksum: r.try_get::<_, i64>(3)? as u64,
                uploaded_at_unix_ms: r.try_get(4)?,
                trace_id: r.try_get(5)?,
                traceparent: r.try_get(6)?,
            };
            let checked: bool = r.try_get(7)?;
            let check = checked
                .then(|| -> Result<FileCheck, tokio_postgres::Error> {
                    Ok(FileCheck {
                        rows_expected: row_count,
                        rows_landed: to_u64(r.try_get(8)?),
                        missing: to_u64(r.try_get(9)?),
                        duplicates: to_u64(r.try_get(10)?),
                        altered: to_u64(r.try_get(11)?),
                        ..FileCheck::default()
                    })
                })
                .transpose()?;
            Ok(StoredFile {
                manifest,
                check,
                committed_at_unix_ms: r.try_get(12)?,
                rejected: r.try_get(13)?,
                content: content_facts(r, 14)?,
            })
        })
        .collect()
}

async fn files_of_run(
    tx: &Db<'_, Transaction<'_>>,
    run_id: &str,
) -> Result<u64, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "SELECT count(*) FROM etl_verifier.files WHERE run_id = $1",
            &[&run_id],
        )
        .await?;
    Ok(to_u64(row.try_get(0)?))
}

async fn register_tx(conn: &mut Conn, m: &Manifest, server: &str) -> Result<Registration, Error> {
    let pg = |source| Error::Postgres {
        server: server.to_string(),
        what: format!("registering file {:?}", m.file_name),
        source,
    };
    let Conn { client, prepared } = conn;
    let txn = client.transaction().await.map_err(pg)?;
    let tx = Db::new(&txn, prepared);
    let expected = lock_run(&tx, &m.run_id).await.map_err(pg)?;
    let existing = tx
        .query_opt(
            "SELECT run_id, columns, row_count, checksum FROM etl_verifier.files \
             WHERE file_name = $1",
            &[&m.file_name],
        )
        .await
        .map_err(pg)?;
    if let Some(row) = existing {
        let read = || -> Result<Content, tokio_postgres::Error> {
            Ok(Content {
                run_id: row.try_get(0)?,
                columns: row.try_get(1)?,
                row_count: to_u64(row.try_get(2)?),
                checksum: row.try_get::<_, i64>(3)? as u64,
            })
        };
        let stored = read().map_err(pg)?;
        // Dropping `tx` rolls back the run row we may have inserted.
        return match stored.difference(&m.content()) {
            None => Ok(Registration::Unchanged),
            Some(reason) => Err(Error::Conflict {
                file: m.file_name.clone(),
                reason,
            }),
        };
    }
    let registered = files_of_run(&tx, &m.run_id).await.map_err(pg)?;
    if let Some(expected) = expected
        && registered >= expected
    {
        return Err(Error::RunState {
            run_id: m.run_id.clone(),
            reason: format!(
                "the run was completed with {expected} files, all registered; cannot register {:?}",
                m.file_name
            ),
        });
    }
    let digests: Vec<i64> = m.row_digests.iter().map(|&d| d as i64).collect();
    tx.execute(
        "INSERT INTO etl_verifier.files (file_name, run_id, row_count, columns, checksum, \
         uploaded_at_unix_ms, trace_id, traceparent, missing, digest_sum) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $3, $9)",
        &[
            &m.file_name,
            &m.run_id,
            &to_i64(m.row_count),
            &m.columns,
            &(m.checksum as i64),
            &m.uploaded_at_unix_ms,
            &m.trace_id,
            &m.traceparent,
            &(duplicates::digest_sum(&m.row_digests) as i64),
        ],
    )
    .await
    .map_err(pg)?;
    tx.execute(
        "INSERT INTO etl_verifier.file_digests (file_name, digests) VALUES ($1, $2)",
        &[&m.file_name, &digests],
    )
    .await
    .map_err(pg)?;
    // Rows of this file that landed before it was registered were compared as
    // an unknown file's: within its own run they are not duplicates, nor is it
    // a copy of a file of its own run. (The run is locked and not finished: no
    // state to decide again.)
    let mut unmatched = std::collections::BTreeSet::new();
    for sql in [
        "DELETE FROM etl_verifier.content_matches c USING etl_verifier.files f \
         WHERE c.twin_file = $1 AND f.file_name = c.file_name AND f.run_id = $2 \
         RETURNING c.file_name",
        "DELETE FROM etl_verifier.copies c USING etl_verifier.files f \
         WHERE c.copy_file = $1 AND f.file_name = c.original_file AND f.run_id = $2 \
         RETURNING c.original_file",
    ] {
        for r in tx
            .query(sql, &[&m.file_name, &m.run_id])
            .await
            .map_err(pg)?
        {
            unmatched.insert(r.try_get::<_, String>(0).map_err(pg)?);
        }
    }
    let unmatched = unmatched.into_iter().collect();
    tx.execute(
        "DELETE FROM etl_verifier.unregistered_files WHERE file_name = $1",
        &[&m.file_name],
    )
    .await
    .map_err(pg)?;
    let rejected = tx
        .query_opt(
            "SELECT reason FROM etl_verifier.rejections WHERE file_name = $1",
            &[&m.file_name],
        )
        .await
        .map_err(pg)?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(pg)?;
    txn.commit().await.map_err(pg)?;
    Ok(Registration::New {
        rejected,
        unmatched,
    })
}
