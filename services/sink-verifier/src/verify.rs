//! One file against Postgres: read its rows back, digest them the way the extractor
//! digested the file, and count what landed, what is missing, what changed and
//! what arrived twice.
//!
//! The digest comparison works because type inference is lossless (see
//! `etl_core::infer`): a typed value rendered with [`Value::canonical_text`] is
//! exactly the field as written, and NULL renders as the empty field it came from.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use etl_core::{Value, digest::row_digest};
use etl_pg::{
    TableName,
    lineage::{FILE as FILE_COLUMN, LOADED_AT as LOADED_AT_COLUMN, ROW as ROW_COLUMN},
    quote_ident,
};
use opentelemetry::{
    Context,
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};
use tokio_postgres::{Client, Row, Statement, error::SqlState, types::Type};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{Error, manifest::Manifest};

/// The outcome of checking one file once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FileCheck {
    pub(crate) rows_expected: u64,
    /// Distinct row numbers in `1..=rows_expected` present in the table.
    pub(crate) rows_landed: u64,
    /// Expected row numbers absent from the table.
    pub(crate) missing: u64,
    /// Present rows whose digest differs (or whose columns the table lacks).
    pub(crate) altered: u64,
    /// Extra rows: a row number seen k > 1 times counts k − 1, and every row
    /// numbered outside `1..=rows_expected` counts one.
    pub(crate) duplicates: u64,
    /// The latest `_etl_loaded_at` among the file's rows, if any landed. That is
    /// `now()` of the writing transaction, i.e. its *start*: only a lower bound
    /// of the commit, used when nothing better is known.
    pub(crate) last_loaded_at_unix_ms: Option<i64>,
    /// The latest commit time of the transactions that wrote the file's rows
    /// (`pg_xact_commit_timestamp(xmin)`), when Postgres tracks commit
    /// timestamps and knows it for every row.
    pub(crate) last_commit_unix_ms: Option<i64>,
    /// The lowest altered row number, so a log line can point at it.
    pub(crate) first_altered_row: Option<u64>,
}

impl FileCheck {
    /// Every row landed, once, unaltered.
    pub(crate) fn verified(&self) -> bool {
        self.rows_landed == self.rows_expected && self.altered == 0 && self.duplicates == 0
    }

    /// Something a later sink write will not fix on its own.
    pub(crate) fn has_problem(&self) -> bool {
        self.altered > 0 || self.duplicates > 0
    }

    /// One word for logs and span attributes.
    pub(crate) fn result(&self) -> &'static str {
        if self.verified() {
            "verified"
        } else if self.altered > 0 {
            "altered"
        } else if self.duplicates > 0 {
            "duplicates"
        } else {
            "missing"
        }
    }
}

/// One row of the file as read back from the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LandedRow {
    pub(crate) row: i64,
    /// `None` when the table lacks one of the manifest's columns: the row cannot
    /// be what was written.
    pub(crate) digest: Option<u64>,
    pub(crate) loaded_at_unix_ms: i64,
    /// Commit time of the row's writing transaction, when Postgres tracks it.
    pub(crate) committed_at_unix_ms: Option<i64>,
}

/// Compares the rows read back with the manifest. Pure, so every counting rule
/// is tested without a database.
pub(crate) fn assess(manifest: &Manifest, rows: impl IntoIterator<Item = LandedRow>) -> FileCheck {
    let expected = manifest.row_count;
    let mut seen = vec![0u32; manifest.row_digests.len()];
    let mut altered_rows = vec![false; manifest.row_digests.len()];
    let mut check = FileCheck {
        rows_expected: expected,
        ..FileCheck::default()
    };
    // The file's commit time is known only if every row's is.
    let mut commit_known = true;
    for r in rows {
        check.last_loaded_at_unix_ms = Some(
            check
                .last_loaded_at_unix_ms
                .map_or(r.loaded_at_unix_ms, |m| m.max(r.loaded_at_unix_ms)),
        );
        match r.committed_at_unix_ms {
            Some(c) if commit_known => {
                check.last_commit_unix_ms = Some(check.last_commit_unix_ms.map_or(c, |m| m.max(c)));
            }
            _ => commit_known = false,
        }
        let index = usize::try_from(r.row)
            .ok()
            .and_then(|row| row.checked_sub(1))
            .filter(|&i| i < seen.len());
        let Some(i) = index else {
            check.duplicates += 1;
            continue;
        };
        seen[i] += 1;
        if seen[i] == 1 {
            check.rows_landed += 1;
        } else {
            check.duplicates += 1;
        }
        if r.digest != Some(manifest.row_digests[i]) {
            altered_rows[i] = true;
        }
    }
    if !commit_known {
        check.last_commit_unix_ms = None;
    }
    check.missing = expected - check.rows_landed;
    check.altered = altered_rows.iter().filter(|&&a| a).count() as u64;
    check.first_altered_row = altered_rows.iter().position(|&a| a).map(|i| i as u64 + 1);
    check
}

/// The select expression of a column: types we decode natively as themselves,
/// anything else as its text form (best effort: such columns are never inferred).
fn select_expr(column: &str, data_type: &str) -> String {
    const NATIVE: [&str; 11] = [
        "boolean",
        "smallint",
        "integer",
        "bigint",
        "real",
        "double precision",
        "text",
        "character varying",
        "character",
        "timestamp with time zone",
        "timestamp without time zone",
    ];
    if NATIVE.contains(&data_type) {
        quote_ident(column)
    } else {
        format!("{}::text", quote_ident(column))
    }
}

/// The text a `real` (float4) value was written as: the shortest decimal that
/// round-trips as f32, carried as the f64 of that decimal so it renders the same.
pub(crate) fn float4_value(v: f32) -> Value {
    v.to_string()
        .parse::<f64>()
        .map_or(Value::Double(f64::from(v)), Value::Double)
}

/// `timestamp without time zone` is read as UTC, the zone the sink writes in.
pub(crate) fn naive_timestamp_value(t: NaiveDateTime) -> Value {
    Value::Timestamp(t.and_utc())
}

/// Decodes column `idx` of `row` by its Postgres type. NULL is [`Value::Null`].
fn decode(row: &Row, idx: usize, table: &str) -> Result<Value, DecodeError> {
    let ty = row.columns()[idx].type_();
    let v = match *ty {
        Type::BOOL => row.try_get::<_, Option<bool>>(idx)?.map(Value::Bool),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(idx)?
            .map(|v| Value::Int(v.into())),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(idx)?
            .map(|v| Value::Int(v.into())),
        Type::INT8 => row.try_get::<_, Option<i64>>(idx)?.map(Value::Int),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(idx)?.map(float4_value),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(idx)?.map(Value::Double),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(idx)?.map(Value::Text)
        }
        Type::TIMESTAMPTZ => row
            .try_get::<_, Option<DateTime<Utc>>>(idx)?
            .map(Value::Timestamp),
        Type::TIMESTAMP => row
            .try_get::<_, Option<NaiveDateTime>>(idx)?
            .map(naive_timestamp_value),
        _ => {
            return Err(DecodeError::Unsupported(Error::UnsupportedColumn {
                table: table.to_string(),
                column: row.columns()[idx].name().to_string(),
                pg_type: ty.name().to_string(),
            }));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

enum DecodeError {
    Postgres(tokio_postgres::Error),
    Unsupported(Error),
}

impl From<tokio_postgres::Error> for DecodeError {
    fn from(e: tokio_postgres::Error) -> Self {
        DecodeError::Postgres(e)
    }
}

/// Checks files against one table, caching the table's column types from
/// `information_schema` (refreshed when a manifest names a column the cache
/// lacks, or a query says the table changed).
#[derive(Debug)]
pub(crate) struct Verifier {
    table: TableName,
    /// Where errors say they came from (never the password).
    server: String,
    /// Column name → `information_schema` data type; empty when the table does
    /// not exist; `None` until loaded.
    columns: Option<HashMap<String, String>>,
    /// Whether to read each row's `pg_xact_commit_timestamp(xmin)`: only when
    /// the server has `track_commit_timestamp = on`.
    commit_timestamps: bool,
    /// The read-back `SELECT` prepared on the current connection, with its text.
    /// Every check sends it: as text, each would cost a round trip to prepare
    /// it and a parse and plan in Postgres. Dropped on any error (a changed
    /// table makes a prepared statement fail) and on a new connection.
    read_statement: Option<(String, Statement)>,
}

impl Verifier {
    pub(crate) fn new(table: &str, server: &str) -> Self {
        Self {
            table: TableName::parse(table),
            server: server.to_string(),
            columns: None,
            commit_timestamps: false,
            read_statement: None,
        }
    }

    /// Asks the server whether it records commit timestamps (`SHOW
    /// track_commit_timestamp`); reads them with every row when it does.
    /// Called on each new connection, which has none of the last one's
    /// prepared statements.
    pub(crate) async fn detect_commit_timestamps(&mut self, client: &Client) -> bool {
        self.read_statement = None;
        self.commit_timestamps = match client.query_one("SHOW track_commit_timestamp", &[]).await {
            Ok(row) => row.try_get::<_, String>(0).is_ok_and(|v| v == "on"),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read track_commit_timestamp; assuming off");
                false
            }
        };
        self.commit_timestamps
    }

    fn pg_error(&self, what: &str, source: tokio_postgres::Error) -> Error {
        Error::Postgres {
            server: self.server.clone(),
            what: what.to_string(),
            source,
        }
    }

    async fn load_columns(&mut self, client: &Client) -> Result<(), Error> {
        let columns = etl_pg::table_columns(client, &self.table)
            .await
            .map_err(|e| self.pg_error("reading the table's columns", e))?;
        self.columns = Some(columns);
        Ok(())
    }

    /// The cached columns, loaded if needed and refreshed when `needed` names
    /// one the cache does not have (the sink may have added it since).
    async fn columns_for(
        &mut self,
        client: &Client,
        needed: &[String],
    ) -> Result<&HashMap<String, String>, Error> {
        let stale = match &self.columns {
            None => true,
            Some(cols) => cols.is_empty() || needed.iter().any(|c| !cols.contains_key(c)),
        };
        if stale {
            self.load_columns(client).await?;
        }
        Ok(self.columns.get_or_insert_default())
    }

    /// Reads `manifest`'s rows back and compares them. A missing table means no
    /// row landed yet, not an error.
    pub(crate) async fn check(
        &mut self,
        client: &Client,
        manifest: &Manifest,
    ) -> Result<FileCheck, Error> {
        let rows = self
            .read_rows(client, &manifest.file_name, &manifest.columns)
            .await?;
        Ok(assess(manifest, rows))
    }

    /// Every row stored under `_etl_file = file`, each digested over `columns`
    /// (in that order) the way the extractor digests a file's row. A row's
    /// digest is `None` when the table lacks one of `columns`.
    pub(crate) async fn read_rows(
        &mut self,
        client: &Client,
        file: &str,
        columns: &[String],
    ) -> Result<Vec<LandedRow>, Error> {
        match self.read_rows_once(client, file, columns).await {
            Ok(rows) => Ok(rows),
            Err(ReadError::Error(e)) => Err(e),
            // Commit timestamps were switched off since we asked: go without.
            Err(ReadError::NoCommitTimestamps(_)) => {
                tracing::info!(
                    "track_commit_timestamp is off now; latency ends at the rows' NOTIFY from here on"
                );
                self.commit_timestamps = false;
                match self.read_rows_once(client, file, columns).await {
                    Ok(rows) => Ok(rows),
                    Err(ReadError::Error(e)) => Err(e),
                    Err(ReadError::NoCommitTimestamps(source)) => {
                        Err(self.pg_error(&format!("reading the rows of file {file:?}"), source))
                    }
                }
            }
        }
    }

    async fn read_rows_once(
        &mut self,
        client: &Client,
        file: &str,
        columns: &[String],
    ) -> Result<Vec<LandedRow>, ReadError> {
        let table_label = self.table.quoted();
        let commit_timestamps = self.commit_timestamps;
        let known = self.columns_for(client, columns).await?;
        if known.is_empty() {
            return Ok(Vec::new());
        }
        let present: Vec<(String, String)> = columns
            .iter()
            .filter_map(|c| known.get(c).map(|t| (c.clone(), t.clone())))
            .collect();
        let all_present = present.len() == columns.len();
        let mut select = vec![quote_ident(ROW_COLUMN)];
        select.extend(present.iter().map(|(c, t)| select_expr(c, t)));
        select.push(quote_ident(LOADED_AT_COLUMN));
        if commit_timestamps {
            select.push("pg_xact_commit_timestamp(xmin)".to_string());
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = $1",
            select.join(", "),
            table_label,
            quote_ident(FILE_COLUMN)
        );
        let rows = match query_prepared(&mut self.read_statement, client, sql, file).await {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => {
                self.columns = None;
                return Ok(Vec::new());
            }
            Err(e)
                if commit_timestamps
                    && e.code() == Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) =>
            {
                return Err(ReadError::NoCommitTimestamps(e));
            }
            Err(e) => {
                // The table may have changed under the cache (a column widened or
                // dropped): reload it on the next check.
                self.columns = None;
                return Err(self
                    .pg_error(&format!("reading the rows of file {file:?}"), e)
                    .into());
            }
        };
        let loaded_idx = present.len() + 1;
        let mut landed = Vec::with_capacity(rows.len());
        let mut texts = Vec::with_capacity(present.len());
        for row in &rows {
            texts.clear();
            for idx in 1..=present.len() {
                match decode(row, idx, &table_label) {
                    Ok(v) => texts.push(v.canonical_text()),
                    Err(DecodeError::Unsupported(e)) => {
                        self.columns = None;
                        return Err(e.into());
                    }
                    Err(DecodeError::Postgres(e)) => {
                        self.columns = None;
                        return Err(self
                            .pg_error(&format!("decoding a row of file {file:?}"), e)
                            .into());
                    }
                }
            }
            type Read = (i64, DateTime<Utc>, Option<DateTime<Utc>>);
            let read = || -> Result<Read, tokio_postgres::Error> {
                let committed = if commit_timestamps {
                    row.try_get(loaded_idx + 1)?
                } else {
                    None
                };
                Ok((row.try_get(0)?, row.try_get(loaded_idx)?, committed))
            };
            let (row_no, loaded_at, committed_at) = read().map_err(|e| {
                self.pg_error(
                    &format!(
                        "reading {ROW_COLUMN}/{LOADED_AT_COLUMN} of file {file:?} (bigint and timestamptz expected)"
                    ),
                    e,
                )
            })?;
            landed.push(LandedRow {
                row: row_no,
                digest: all_present.then(|| row_digest(&texts)),
                loaded_at_unix_ms: loaded_at.timestamp_millis(),
                committed_at_unix_ms: committed_at.map(|t| t.timestamp_millis()),
            });
        }
        Ok(landed)
    }
}

/// Runs `sql` with `file` as `$1` through the statement in `cache`, preparing
/// it first when the cache holds another text (or none). A cached statement
/// that fails is prepared again once (a table changed since, e.g. a column
/// widened, fails a statement prepared before: "cached plan must not change
/// result type"); an error then empties the cache.
async fn query_prepared(
    cache: &mut Option<(String, Statement)>,
    client: &Client,
    sql: String,
    file: &str,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    if let Some((text, statement)) = cache.take()
        && text == sql
        && let Ok(rows) = client.query(&statement, &[&file]).await
    {
        *cache = Some((sql, statement));
        return Ok(rows);
    }
    let statement = client.prepare(&sql).await?;
    let rows = client.query(&statement, &[&file]).await?;
    *cache = Some((sql, statement));
    Ok(rows)
}

enum ReadError {
    /// `pg_xact_commit_timestamp` refused: `track_commit_timestamp` is off.
    NoCommitTimestamps(tokio_postgres::Error),
    Error(Error),
}

impl From<Error> for ReadError {
    fn from(e: Error) -> Self {
        ReadError::Error(e)
    }
}

/// Emits the file's `verify file` span, once per outcome worth telling (see
/// [`crate::manifest::Recorded`]), as a child of the file's trace.
///
/// The manifest carries only the trace id, not the id of a span to hang under,
/// so the parent is a remote span context with that trace id and a fresh span
/// id: the span joins the file's trace (its parent shows as not found in the
/// trace viewer, which is harmless).
pub(crate) fn trace_outcome(manifest: &Manifest, check: &FileCheck, latency_ms: u64) {
    let span = tracing::info_span!(
        "verify file",
        otel.name = "verify file",
        otel.status_code = tracing::field::Empty,
        etl.file = %manifest.file_name,
        etl.run = %manifest.run_id,
        etl.rows = manifest.row_count,
        etl.result = check.result(),
        etl.rows_landed = check.rows_landed,
        etl.missing = check.missing,
        etl.altered = check.altered,
        etl.duplicates = check.duplicates,
        etl.latency_ms = latency_ms,
    );
    if !manifest.traceparent.is_empty() {
        etl_telemetry::context::set_parent(&span, &manifest.traceparent);
    } else if let Some(cx) = remote_parent(&manifest.trace_id) {
        // Without the uploader's span id the best parent is the trace itself.
        let _ = span.set_parent(cx);
    }
    let _entered = span.enter();
    if check.verified() {
        span.record("otel.status_code", "OK");
        tracing::info!(file = %manifest.file_name, rows = manifest.row_count, latency_ms, "file verified");
    } else {
        span.record("otel.status_code", "ERROR");
        tracing::warn!(
            file = %manifest.file_name,
            result = check.result(),
            altered = check.altered,
            first_altered_row = check.first_altered_row,
            duplicates = check.duplicates,
            "file rows differ from what was registered"
        );
    }
}

fn remote_parent(trace_id: &str) -> Option<Context> {
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    if trace_id == TraceId::INVALID {
        return None;
    }
    let mut span_id = SpanId::from_bytes(rand::random());
    while span_id == SpanId::INVALID {
        span_id = SpanId::from_bytes(rand::random());
    }
    let sc = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    Some(Context::new().with_remote_span_context(sc))
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use etl_core::digest::file_checksum;

    use super::*;

    fn manifest(rows: &[&[&str]]) -> Manifest {
        let row_digests: Vec<u64> = rows.iter().map(|r| row_digest(r)).collect();
        Manifest {
            run_id: "r".into(),
            file_name: "f.csv".into(),
            row_count: rows.len() as u64,
            columns: vec!["a".into(), "b".into()],
            checksum: file_checksum(&row_digests),
            row_digests,
            uploaded_at_unix_ms: 1_000,
            trace_id: String::new(),
            traceparent: String::new(),
        }
    }

    fn landed(row: i64, fields: &[&str], at: i64) -> LandedRow {
        LandedRow {
            row,
            digest: Some(row_digest(fields)),
            loaded_at_unix_ms: at,
            committed_at_unix_ms: None,
        }
    }

    fn committed(row: i64, fields: &[&str], at: i64, commit: i64) -> LandedRow {
        LandedRow {
            committed_at_unix_ms: Some(commit),
            ..landed(row, fields, at)
        }
    }

    #[test]
    fn all_rows_unaltered_is_verified() {
        let m = manifest(&[&["x", "1"], &["y", ""]]);
        let c = assess(
            &m,
            [landed(2, &["y", ""], 1_300), landed(1, &["x", "1"], 1_200)],
        );
        assert_eq!(c.rows_landed, 2);
        assert!(c.verified(), "{c:?}");
        assert_eq!(c.result(), "verified");
        assert_eq!(c.last_loaded_at_unix_ms, Some(1_300));
        assert_eq!(c.last_commit_unix_ms, None);
    }

    #[test]
    fn the_commit_time_is_the_latest_and_needs_every_row() {
        let m = manifest(&[&["x", "1"], &["y", ""]]);
        let c = assess(
            &m,
            [
                committed(2, &["y", ""], 1_300, 1_700),
                committed(1, &["x", "1"], 1_200, 1_400),
            ],
        );
        assert_eq!(
            (c.last_loaded_at_unix_ms, c.last_commit_unix_ms),
            (Some(1_300), Some(1_700))
        );
        // A row without a commit time (written before tracking was on): unknown.
        let c = assess(
            &m,
            [
                committed(2, &["y", ""], 1_300, 1_700),
                landed(1, &["x", "1"], 1_200),
            ],
        );
        assert_eq!(c.last_commit_unix_ms, None);
        let c = assess(
            &m,
            [
                landed(1, &["x", "1"], 1_200),
                committed(2, &["y", ""], 1_300, 1_700),
            ],
        );
        assert_eq!(c.last_commit_unix_ms, None);
    }

    #[test]
    fn missing_altered_and_duplicate_rows_are_counted() {
        let m = manifest(&[&["x", "1"], &["y", "2"], &["z", "3"]]);
        let c = assess(
            &m,
            [
                landed(1, &["x", "1"], 1_100),
                landed(1, &["x", "1"], 1_100),
                landed(2, &["y", "20"], 1_100),
                landed(4, &["w", "4"], 1_100),
                landed(0, &["v", "0"], 1_100),
            ],
        );
        assert_eq!(
            (c.rows_landed, c.missing, c.altered, c.duplicates),
            (2, 1, 1, 3)
        );
        assert!(!c.verified());
        assert_eq!(c.result(), "altered");
        assert_eq!(c.first_altered_row, Some(2));
    }

    #[test]
    fn nothing_landed_is_all_missing() {
        let m = manifest(&[&["x", "1"]]);
        let c = assess(&m, []);
        assert_eq!((c.rows_landed, c.missing), (0, 1));
        assert_eq!(c.result(), "missing");
        assert!(!c.has_problem());
        assert_eq!(c.last_loaded_at_unix_ms, None);
    }

    #[test]
    fn a_missing_column_alters_every_present_row() {
        let m = manifest(&[&["x", "1"], &["y", "2"]]);
        let row = |n| LandedRow {
            row: n,
            digest: None,
            loaded_at_unix_ms: 0,
            committed_at_unix_ms: None,
        };
        let c = assess(&m, [row(1), row(2)]);
        assert_eq!((c.rows_landed, c.altered), (2, 2));
    }

    #[test]
    fn empty_file_is_verified_at_once() {
        let m = manifest(&[]);
        assert!(assess(&m, []).verified());
    }

    #[test]
    fn values_render_as_written() {
        assert_eq!(Value::Null.canonical_text(), "");
        assert_eq!(Value::Bool(false).canonical_text(), "false");
        assert_eq!(Value::Int(i64::from(-7i16)).canonical_text(), "-7");
        assert_eq!(Value::Double(2.5).canonical_text(), "2.5");
        // float4 keeps the decimal it was written as, not its f64 widening.
        assert_eq!(float4_value(1.1).canonical_text(), "1.1");
        assert_eq!(
            Value::Double(f64::from(1.1f32)).canonical_text(),
            "1.100000023841858"
        );
        let t = NaiveDate::from_ymd_opt(2024, 1, 2)
            .and_then(|d| d.and_hms_micro_opt(3, 4, 5, 250_000))
            .expect("valid");
        assert_eq!(
            naive_timestamp_value(t).canonical_text(),
            "2024-01-02T03:04:05.250Z"
        );
    }

    #[test]
    fn columns_we_cannot_decode_are_read_as_text() {
        assert_eq!(select_expr("n", "bigint"), "\"n\"");
        assert_eq!(select_expr("we\"ird", "text"), "\"we\"\"ird\"");
        assert_eq!(select_expr("n", "numeric"), "\"n\"::text");
    }

    #[test]
    fn remote_parent_needs_a_valid_trace_id() {
        let cx = remote_parent("4bf92f3577b34da6a3ce929d0e0e4736").expect("valid");
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote());
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
        );
        assert!(remote_parent("").is_none());
        assert!(remote_parent(&"0".repeat(32)).is_none());
    }

    /// Collects exported spans in memory (the SDK's own in-memory exporter needs
    /// its `testing` feature, which would rebuild the SDK for the workspace).
    #[derive(Clone, Debug, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

    impl opentelemetry_sdk::trace::SpanExporter for Captured {
        fn export(
            &self,
            batch: Vec<opentelemetry_sdk::trace::SpanData>,
        ) -> impl std::future::Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send
        {
            if let Ok(mut spans) = self.0.lock() {
                spans.extend(batch);
            }
            std::future::ready(Ok(()))
        }
    }

    #[test]
    fn verify_span_joins_the_file_trace() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;

        let exporter = Captured::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let m = Manifest {
            trace_id: trace_id.into(),
            ..manifest(&[&["x", "1"]])
        };
        let check = assess(&m, [landed(1, &["x", "1"], 1_042)]);
        tracing::subscriber::with_default(subscriber, || trace_outcome(&m, &check, 42));

        let spans = exporter.0.lock().expect("lock").clone();
        assert_eq!(spans.len(), 1);
        let span = &spans[0];
        assert_eq!(span.name, "verify file");
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_hex(trace_id).expect("hex")
        );
        assert!(span.parent_span_is_remote);
        assert_eq!(span.status, opentelemetry::trace::Status::Ok);
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|kv| kv.key.as_str() == k)
                .map(|kv| kv.value.to_string())
        };
        assert_eq!(attr("etl.file").as_deref(), Some("f.csv"));
        assert_eq!(attr("etl.rows").as_deref(), Some("1"));
        assert_eq!(attr("etl.result").as_deref(), Some("verified"));
        assert_eq!(attr("etl.latency_ms").as_deref(), Some("42"));
    }

    #[test]
    fn verify_span_is_a_child_of_the_uploaders_span() {
        use opentelemetry::trace::{SpanId, TracerProvider as _};
        use tracing_subscriber::layer::SubscriberExt as _;

        let exporter = Captured::default();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let m = Manifest {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
            ..manifest(&[&["x", "1"]])
        };
        let check = assess(&m, [landed(1, &["x", "1"], 1_042)]);
        tracing::subscriber::with_default(subscriber, || trace_outcome(&m, &check, 42));
        let spans = exporter.0.lock().expect("lock").clone();
        assert_eq!(spans.len(), 1);
        assert_eq!(
            spans[0].parent_span_id,
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            "the verifier's span hangs under the extractor's chunk span"
        );
    }
}
