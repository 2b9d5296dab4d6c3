//! The sink's Postgres side: table DDL (create and evolve), and writing one
//! batch in one transaction — `COPY` into a temporary table, then one
//! `INSERT … SELECT … ON CONFLICT (key)` (or one `UPDATE … FROM`), the
//! deletes of tombstones, then `pg_notify`.
//!
//! Why a staging table: `COPY` is the fast path into Postgres but cannot
//! resolve conflicts; `INSERT … ON CONFLICT` can, and from a temp table it is
//! one statement per batch instead of one per row. Replaying a file (or a
//! partition) therefore changes nothing.
//!
//! The key is `pk.mode`'s: the lineage columns `(_etl_file, _etl_row)` by
//! default, the Kafka coordinates, fields of the value, or none (then rows are
//! only inserted, and a replay inserts them again, as in Kafka Connect). The
//! lineage columns are written in every mode.

use std::{
    collections::{HashMap, HashSet},
    pin::pin,
    sync::Arc,
};

use bytes::Bytes;
use etl_core::{Field, FieldType, Schema, Value};
use etl_pg::{TableName, lineage, quote_ident};
use futures::SinkExt;
use tokio_postgres::{Client, Transaction, error::SqlState};

use crate::{
    copy::{Wire, copy_data},
    sink::config::{InsertMode, PkMode},
};

const STAGE: &str = "_etl_stage";
/// Bytes of COPY data per message sent to the server.
const COPY_CHUNK: usize = 1 << 20;

/// One row on its way to Postgres.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SinkRow {
    /// Shared with the other rows of its file (see `sink::Last`).
    pub(crate) file: Arc<str>,
    pub(crate) row: i64,
    pub(crate) trace_id: Option<Arc<str>>,
    /// Where the record was in Kafka (the key of `pk.mode=kafka`).
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// Shared by the rows of one file (consecutive records with an equal schema).
    pub(crate) schema: Arc<Schema>,
    /// In `schema` field order.
    pub(crate) values: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "table {table:?} does not exist and auto.create is false (create it, or set auto.create=true)"
    )]
    NoTable { table: String },
    #[error(
        "table {table:?} lacks column {column:?} (or its type {found} cannot hold {wanted}) and auto.evolve is false"
    )]
    NoEvolve {
        table: String,
        column: String,
        found: String,
        wanted: String,
    },
}

/// One record's change to its table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Change {
    Row(SinkRow),
    /// A tombstone (`delete.enabled`, `pk.mode=record_key`): delete this row.
    Delete {
        file: Arc<str>,
        row: i64,
    },
}

impl Change {
    pub(crate) fn file(&self) -> &str {
        match self {
            Change::Row(r) => &r.file,
            Change::Delete { file, .. } => file,
        }
    }
}

/// What a batch write does besides its rows: `insert.mode`, `pk.mode`, DDL.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriteSpec<'a> {
    pub(crate) mode: InsertMode,
    pub(crate) pk: &'a PkMode,
    pub(crate) auto_create: bool,
    pub(crate) auto_evolve: bool,
}

impl WriteError {
    /// The connection is gone: reconnect before retrying.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self, WriteError::Postgres(e) if e.is_closed())
    }
}

/// The columns `pk.mode=kafka` adds, with their types.
fn kafka_fields(pk: &PkMode) -> Vec<Field> {
    let PkMode::Kafka(names) = pk else {
        return Vec::new();
    };
    names
        .iter()
        .zip([FieldType::String, FieldType::Int32, FieldType::Int64])
        .map(|(name, ty)| Field {
            name: name.clone(),
            ty,
            optional: false,
        })
        .collect()
}

/// `CREATE TABLE IF NOT EXISTS` with one column per field (the Kafka
/// coordinates after them for `pk.mode=kafka`), the lineage columns, and the
/// key's primary key.
pub(crate) fn create_table_sql(table: &str, fields: &[&Field], pk: &PkMode) -> String {
    let key = pk.columns();
    let kafka = kafka_fields(pk);
    let mut cols: Vec<String> = fields
        .iter()
        .copied()
        .chain(&kafka)
        .map(|f| {
            let not_null = if key.contains(&f.name.as_str()) {
                " NOT NULL"
            } else {
                ""
            };
            format!("{} {}{not_null}", quote_ident(&f.name), f.ty.pg_type())
        })
        .collect();
    cols.extend(
        lineage::DEFINITIONS
            .iter()
            .map(|(name, def)| format!("{} {def}", quote_ident(name))),
    );
    if !key.is_empty() {
        let key: Vec<String> = key.iter().map(|c| quote_ident(c)).collect();
        cols.push(format!("PRIMARY KEY ({})", key.join(", ")));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n  {}\n)",
        quote_ident(table),
        cols.join(",\n  ")
    )
}

/// `ALTER TABLE … ALTER COLUMN … TYPE` from `from` to the wider `to`, keeping
/// every value's text: a timestamp widened to text reads as the RFC 3339 form
/// the file had (what `Value::canonical_text` renders), not Postgres' own.
pub(crate) fn widen_column_sql(
    table: &str,
    column: &str,
    from: FieldType,
    to: FieldType,
) -> String {
    let c = quote_ident(column);
    let using = match (from, to) {
        (FieldType::Timestamp, FieldType::String) => {
            let fmt = |frac: &str| {
                format!("to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS{frac}\"Z\"')")
            };
            format!(
                "CASE WHEN date_part('microseconds', {c})::bigint % 1000000 = 0 THEN {} \
                 WHEN date_part('microseconds', {c})::bigint % 1000 = 0 THEN {} ELSE {} END",
                fmt(""),
                fmt(".MS"),
                fmt(".US")
            )
        }
        (_, to) => format!("{c}::{}", to.pg_type()),
    };
    format!(
        "ALTER TABLE {} ALTER COLUMN {c} TYPE {} USING {using}",
        quote_ident(table),
        to.pg_type()
    )
}

/// The key of a row (or a tombstone) within a batch. Record keys and Kafka
/// coordinates keep their parts (the file and topic are the rows' shared
/// `Arc`s): no text is made per row for them.
#[derive(PartialEq, Eq, Hash)]
enum RowKey {
    Record(Arc<str>, i64),
    Kafka(Arc<str>, i32, i64),
    Values(Vec<String>),
}

/// The key of a row under `pk`; None when rows have no key.
fn row_key(pk: &PkMode, r: &SinkRow) -> Option<RowKey> {
    match pk {
        PkMode::None => None,
        PkMode::RecordKey => Some(RowKey::Record(r.file.clone(), r.row)),
        PkMode::Kafka(_) => Some(RowKey::Kafka(r.topic.clone(), r.partition, r.offset)),
        PkMode::RecordValue(fields) => Some(RowKey::Values(
            fields
                .iter()
                .map(|f| {
                    r.schema
                        .fields
                        .iter()
                        .position(|g| &g.name == f)
                        .and_then(|i| r.values.get(i))
                        .map(Value::canonical_text)
                        .unwrap_or_default()
                })
                .collect(),
        )),
    }
}

/// Keeps the last change per key, in order of last appearance, split into rows
/// to write and rows to delete: within one `INSERT … ON CONFLICT` a key may
/// appear only once ("cannot affect row a second time"), and the last record
/// of a key is the newest (a row after a tombstone brings it back; a
/// tombstone after a row removes it). Without a key (`pk.mode=none`) every
/// row is kept.
pub(crate) fn dedup_last(
    changes: Vec<Change>,
    pk: &PkMode,
) -> (Vec<SinkRow>, Vec<(Arc<str>, i64)>) {
    let mut seen = HashSet::with_capacity(changes.len());
    let mut rows = Vec::with_capacity(changes.len());
    let mut deletes = Vec::new();
    for c in changes.into_iter().rev() {
        match c {
            Change::Row(r) => {
                if row_key(pk, &r).is_none_or(|k| seen.insert(k)) {
                    rows.push(r);
                }
            }
            Change::Delete { file, row } => {
                if seen.insert(RowKey::Record(file.clone(), row)) {
                    deletes.push((file, row));
                }
            }
        }
    }
    rows.reverse();
    deletes.reverse();
    (rows, deletes)
}

/// The data columns of a batch: every field of every schema, first-seen order,
/// with the lineage names left out (they are ours).
pub(crate) fn batch_fields(rows: &[SinkRow]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    let mut last: Option<&Arc<Schema>> = None;
    for r in rows {
        if last.is_some_and(|l| Arc::ptr_eq(l, &r.schema)) {
            continue;
        }
        last = Some(&r.schema);
        for f in &r.schema.fields {
            if lineage::is_lineage(&f.name) {
                continue;
            }
            match out.iter_mut().find(|o| o.name == f.name) {
                Some(o) => o.ty = o.ty.widen(f.ty),
                None => out.push(f.clone()),
            }
        }
    }
    out
}

/// What the sink knows of one column of a table.
#[derive(Clone, Copy, Debug)]
struct Column {
    /// The field type it holds (None: a type we do not map, left alone).
    ty: Option<FieldType>,
    /// Its binary `COPY` format, when the sink writes that type's.
    wire: Option<Wire>,
}

impl Column {
    /// By its `information_schema` data type, or the type the sink gave it.
    fn of(pg_type: &str) -> Self {
        Column {
            ty: FieldType::from_pg_type(pg_type),
            wire: Wire::of(pg_type),
        }
    }
}

/// Per table: column name → what the sink knows of it.
#[derive(Default)]
pub(crate) struct TableCache {
    tables: HashMap<String, HashMap<String, Column>>,
    /// Per table: whether an immediate unique index covers exactly the key
    /// columns, so a direct `COPY` of a row already there fails instead of
    /// adding it twice.
    unique_key: HashMap<String, bool>,
    /// Batches left to stage before a direct `COPY` is tried again: a batch
    /// that met rows already there (a replay, an update) makes the next ones
    /// likely to as well, and each such try costs a wasted `COPY`.
    staged_only: u32,
}

impl TableCache {
    /// Forget everything: after a failed transaction, DDL may have been rolled back.
    pub(crate) fn clear(&mut self) {
        self.tables.clear();
        self.unique_key.clear();
    }
}

/// The columns of `table` (in the current schema: the sink's table names are
/// never schema-qualified).
async fn load_columns(
    tx: &Transaction<'_>,
    table: &str,
) -> Result<HashMap<String, Column>, tokio_postgres::Error> {
    let columns = etl_pg::table_columns(tx, &TableName::unqualified(table)).await?;
    Ok(columns
        .into_iter()
        .map(|(name, ty)| (name, Column::of(&ty)))
        .collect())
}

/// Makes `table` able to hold `fields`: creates it (auto.create), adds missing
/// columns and widens conflicting ones (auto.evolve).
pub(crate) async fn ensure_table(
    tx: &Transaction<'_>,
    cache: &mut TableCache,
    table: &str,
    fields: &[Field],
    spec: WriteSpec<'_>,
) -> Result<(), WriteError> {
    let auto_evolve = spec.auto_evolve;
    if !cache.tables.contains_key(table) {
        let mut cols = load_columns(tx, table).await?;
        if cols.is_empty() {
            if !spec.auto_create {
                return Err(WriteError::NoTable {
                    table: table.into(),
                });
            }
            // Several tasks (a sink's, or several workers') may create the
            // table at once, and concurrent CREATE TABLE IF NOT EXISTS collide
            // in pg_type: one at a time, then look again.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&format!("file-etl create {table}")],
            )
            .await?;
            cols = load_columns(tx, table).await?;
            if cols.is_empty() {
                let refs: Vec<&Field> = fields.iter().collect();
                tx.batch_execute(&create_table_sql(table, &refs, spec.pk))
                    .await?;
                tracing::info!(table, columns = fields.len(), "created table");
                cols = load_columns(tx, table).await?;
            }
        }
        cache.tables.insert(table.to_string(), cols);
    }
    let Some(cols) = cache.tables.get_mut(table) else {
        return Ok(());
    };
    for f in fields.iter().chain(&kafka_fields(spec.pk)) {
        match cols.get(&f.name).map(|c| c.ty) {
            // A type we do not map: Postgres converts the text or says why not.
            Some(None) => {}
            Some(Some(have)) => {
                let want = have.widen(f.ty);
                if want.pg_type() == have.pg_type() {
                    continue;
                }
                if !auto_evolve {
                    return Err(WriteError::NoEvolve {
                        table: table.into(),
                        column: f.name.clone(),
                        found: have.pg_type().into(),
                        wanted: f.ty.pg_type().into(),
                    });
                }
                tx.batch_execute(&widen_column_sql(table, &f.name, have, want))
                    .await?;
                tracing::info!(table, column = %f.name, from = have.pg_type(), to = want.pg_type(), "widened column");
                cols.insert(f.name.clone(), Column::of(want.pg_type()));
            }
            None => {
                if !auto_evolve {
                    return Err(WriteError::NoEvolve {
                        table: table.into(),
                        column: f.name.clone(),
                        found: "(missing)".into(),
                        wanted: f.ty.pg_type().into(),
                    });
                }
                tx.batch_execute(&format!(
                    "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
                    quote_ident(table),
                    quote_ident(&f.name),
                    f.ty.pg_type()
                ))
                .await?;
                tracing::info!(table, column = %f.name, ty = f.ty.pg_type(), "added column");
                cols.insert(f.name.clone(), Column::of(f.ty.pg_type()));
            }
        }
    }
    Ok(())
}

/// The columns staged and written besides the lineage: the data fields, then
/// the Kafka coordinates for `pk.mode=kafka`.
fn written_columns(fields: &[Field], pk: &PkMode) -> Vec<String> {
    fields
        .iter()
        .map(|f| f.name.clone())
        .chain(kafka_fields(pk).into_iter().map(|f| f.name))
        .collect()
}

/// The statement that moves the staged rows into `table`:
/// - insert: `INSERT … ON CONFLICT (key) DO NOTHING` (a plain `INSERT` without a key);
/// - upsert: `INSERT … ON CONFLICT (key) DO UPDATE`, rewriting a row only when a
///   value (or, when they are not the key, its lineage file and row) differs, so
///   a replay leaves even `_etl_loaded_at` and `_etl_trace_id` as the first load
///   set them;
/// - update: `UPDATE … FROM` the staged rows matched on the key, under the same
///   condition; a staged row that matches none is not inserted.
pub(crate) fn insert_sql(table: &str, fields: &[Field], mode: InsertMode, pk: &PkMode) -> String {
    let key: Vec<String> = pk.columns().into_iter().map(quote_ident).collect();
    let written = written_columns(fields, pk);
    let mut all: Vec<String> = written.iter().map(|c| quote_ident(c)).collect();
    all.extend(lineage::SENT.map(quote_ident));
    let cols = all.join(", ");
    let t = quote_ident(table);
    let trace = quote_ident(lineage::TRACE_ID);
    // What tells a new version of a row from a replay: every column but the key,
    // the trace id and the load time.
    let compared: Vec<String> = written
        .iter()
        .map(String::as_str)
        .chain(lineage::KEY)
        .map(quote_ident)
        .filter(|c| !key.contains(c))
        .collect();
    // `SET` and `WHERE` reading the new row under the name `new`.
    let set_from = |new: &str| {
        compared
            .iter()
            .map(|c| format!("{c} = {new}.{c}"))
            .chain([
                format!("{trace} = {new}.{trace}"),
                format!("{} = now()", quote_ident(lineage::LOADED_AT)),
            ])
            .collect::<Vec<_>>()
            .join(", ")
    };
    let differs_from = |new: &str| {
        let old: Vec<String> = compared.iter().map(|c| format!("{t}.{c}")).collect();
        let new: Vec<String> = compared.iter().map(|c| format!("{new}.{c}")).collect();
        format!(
            "ROW({}) IS DISTINCT FROM ROW({})",
            old.join(", "),
            new.join(", ")
        )
    };
    if mode == InsertMode::Update {
        let mut condition: Vec<String> = key.iter().map(|c| format!("{t}.{c} = s.{c}")).collect();
        if !compared.is_empty() {
            condition.push(differs_from("s"));
        }
        return format!(
            "UPDATE {t} SET {} FROM {STAGE} AS s WHERE {}",
            set_from("s"),
            condition.join(" AND ")
        );
    }
    let key = key.join(", ");
    let conflict = match mode {
        _ if key.is_empty() => String::new(),
        InsertMode::Upsert if !compared.is_empty() => format!(
            " ON CONFLICT ({key}) DO UPDATE SET {} WHERE {}",
            set_from("EXCLUDED"),
            differs_from("EXCLUDED")
        ),
        _ => format!(" ON CONFLICT ({key}) DO NOTHING"),
    };
    format!("INSERT INTO {t} ({cols}) SELECT {cols} FROM {STAGE}{conflict}")
}

/// Deletes the rows of tombstones (`pk.mode=record_key`), by `(_etl_file, _etl_row)`.
pub(crate) fn delete_sql(table: &str) -> String {
    format!(
        "DELETE FROM {} AS t USING unnest($1::text[], $2::bigint[]) AS d(f, r) \
         WHERE t.{} = d.f AND t.{} = d.r",
        quote_ident(table),
        quote_ident(lineage::FILE),
        quote_ident(lineage::ROW)
    )
}

/// What one batch wrote.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Rows inserted, changed or deleted (a replay of unchanged rows writes 0;
    /// in update mode, a row with no match writes nothing).
    pub(crate) changed: u64,
    /// Rows staged (after de-duplication).
    pub(crate) staged: u64,
}

/// Writes `rows` and deletes `deletes` (already de-duplicated, one table) in
/// one transaction and sends one `NOTIFY etl_rows, '<file>'` per file written;
/// returns once committed.
pub(crate) async fn write_batch(
    client: &mut Client,
    cache: &mut TableCache,
    table: &str,
    rows: &[SinkRow],
    deletes: &[(Arc<str>, i64)],
    spec: WriteSpec<'_>,
) -> Result<Written, WriteError> {
    let tx = client.transaction().await?;
    let mut written = Written::default();
    if !rows.is_empty() {
        let fields = batch_fields(rows);
        ensure_table(&tx, cache, table, &fields, spec).await?;
        written = stage_and_write(&tx, cache, table, rows, &fields, spec).await?;
    }
    if !deletes.is_empty() {
        // Deleting from a table that does not exist deletes nothing: no DDL for it.
        let exists =
            cache.tables.contains_key(table) || !load_columns(&tx, table).await?.is_empty();
        if exists {
            let (files, numbers): (Vec<&str>, Vec<i64>) =
                deletes.iter().map(|(f, r)| (&**f, *r)).unzip();
            written.changed += tx.execute(&delete_sql(table), &[&files, &numbers]).await?;
        }
    }
    let mut files: Vec<&str> = rows.iter().map(|r| &*r.file).collect();
    files.dedup();
    let mut notified = HashSet::new();
    for f in files {
        if notified.insert(f) {
            etl_pg::notify::notify(&tx, f).await?;
        }
    }
    tx.commit().await?;
    Ok(written)
}

/// Batches staged after a direct `COPY` met a row already in the table.
const STAGED_AFTER_CONFLICT: u32 = 16;

/// Writes the batch into `table`. The rows of a batch are new almost always
/// (a replay follows only a crash or a moved partition), and for new rows an
/// upsert is a plain insert: so they are first copied straight into `table`,
/// inside a savepoint. A row already there fails that `COPY` on the key
/// (`unique_violation`); the savepoint is rolled back and the batch takes the
/// general path: `COPY` into a staging table, then one upsert statement. The
/// direct path halves Postgres' work per row (one copy and one index probe
/// instead of two copies, a scan and a conflict check).
async fn stage_and_write(
    tx: &Transaction<'_>,
    cache: &mut TableCache,
    table: &str,
    rows: &[SinkRow],
    fields: &[Field],
    spec: WriteSpec<'_>,
) -> Result<Written, WriteError> {
    let mut names = written_columns(fields, spec.pk);
    names.extend(lineage::SENT.map(String::from));
    let known = cache.tables.get(table);
    let wires: Option<Vec<Wire>> = names
        .iter()
        .map(|n| known.and_then(|cols| cols.get(n)).and_then(|c| c.wire))
        .collect();
    let cols: Vec<String> = names.iter().map(|c| quote_ident(c)).collect();
    let cols = cols.join(", ");
    let (data, binary) = copy_data(rows, fields, spec.pk, wires.as_deref());
    let data = CopyData {
        bytes: Bytes::from(data),
        binary,
    };
    let keyed = !spec.pk.columns().is_empty();
    let direct = match spec.mode {
        // Without a key nothing conflicts: the insert is the copy.
        InsertMode::Insert | InsertMode::Upsert if !keyed => true,
        InsertMode::Insert | InsertMode::Upsert => {
            cache.staged_only == 0 && has_unique_key(tx, cache, table, spec.pk).await?
        }
        InsertMode::Update => false,
    };
    cache.staged_only = cache.staged_only.saturating_sub(1);
    if direct {
        if !keyed {
            let n = copy_in(tx, &quote_ident(table), &cols, &data).await?;
            return Ok(Written {
                changed: n,
                staged: n,
            });
        }
        tx.batch_execute("SAVEPOINT etl_direct").await?;
        match copy_in(tx, &quote_ident(table), &cols, &data).await {
            Ok(n) => {
                tx.batch_execute("RELEASE SAVEPOINT etl_direct").await?;
                return Ok(Written {
                    changed: n,
                    staged: n,
                });
            }
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT etl_direct").await?;
                cache.staged_only = STAGED_AFTER_CONFLICT;
            }
            Err(e) => return Err(e.into()),
        }
    }
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS SELECT {cols} FROM {} WITH NO DATA",
        quote_ident(table)
    ))
    .await?;
    let staged = copy_in(tx, STAGE, &cols, &data).await?;
    let changed = tx
        .execute(&insert_sql(table, fields, spec.mode, spec.pk), &[])
        .await?;
    Ok(Written { changed, staged })
}

/// Whether a direct `COPY` into `table` is safe for `pk`: a row already there
/// must fail it (the tables the sink creates have the key as primary key; a
/// table made by hand may not, and then only the upsert's `ON CONFLICT` says so).
async fn has_unique_key(
    tx: &Transaction<'_>,
    cache: &mut TableCache,
    table: &str,
    pk: &PkMode,
) -> Result<bool, tokio_postgres::Error> {
    if let Some(&known) = cache.unique_key.get(table) {
        return Ok(known);
    }
    let found = etl_pg::has_unique_index(tx, &TableName::unqualified(table), &pk.columns()).await?;
    cache.unique_key.insert(table.to_string(), found);
    Ok(found)
}

/// One batch's `COPY` data (see [`crate::copy`]).
struct CopyData {
    bytes: Bytes,
    binary: bool,
}

/// `COPY` of `data` into `columns` of `table` (quoted).
async fn copy_in(
    tx: &Transaction<'_>,
    table: &str,
    columns: &str,
    data: &CopyData,
) -> Result<u64, tokio_postgres::Error> {
    let format = if data.binary { " (FORMAT binary)" } else { "" };
    let sink = tx
        .copy_in::<_, Bytes>(&format!("COPY {table} ({columns}) FROM STDIN{format}"))
        .await?;
    let data = &data.bytes;
    let mut sink = pin!(sink);
    let mut at = 0;
    while at < data.len() {
        let end = (at + COPY_CHUNK).min(data.len());
        sink.feed(data.slice(at..end)).await?;
        at = end;
    }
    sink.as_mut().finish().await
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::copy::copy_text;

    /// A schema of optional fields, as the sink's tests (here and in `copy`) use.
    pub(crate) fn schema(fields: &[(&str, FieldType)]) -> Arc<Schema> {
        Arc::new(Schema {
            name: "review".into(),
            fields: fields
                .iter()
                .map(|(n, t)| Field {
                    name: n.to_string(),
                    ty: *t,
                    optional: true,
                })
                .collect(),
        })
    }

    fn row(file: &str, n: i64, schema: &Arc<Schema>, values: Vec<Value>) -> SinkRow {
        SinkRow {
            file: file.into(),
            row: n,
            trace_id: None,
            topic: "t".into(),
            partition: 1,
            offset: n + 100,
            schema: schema.clone(),
            values,
        }
    }

    #[test]
    fn create_table_has_lineage_and_key() {
        let s = schema(&[("body", FieldType::String), ("n", FieldType::Int64)]);
        let refs: Vec<&Field> = s.fields.iter().collect();
        let sql = create_table_sql("review", &refs, &PkMode::RecordKey);
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS \"review\" (\n  \"body\" text,\n  \"n\" bigint,\n  \
             \"_etl_file\" text NOT NULL,\n  \"_etl_row\" bigint NOT NULL,\n  \"_etl_trace_id\" text,\n  \
             \"_etl_loaded_at\" timestamptz NOT NULL DEFAULT now(),\n  \
             PRIMARY KEY (\"_etl_file\", \"_etl_row\")\n)"
        );
    }

    #[test]
    fn create_table_for_each_pk_mode() {
        let s = schema(&[("id", FieldType::Int64), ("body", FieldType::String)]);
        let refs: Vec<&Field> = s.fields.iter().collect();
        let none = create_table_sql("t", &refs, &PkMode::None);
        assert!(!none.contains("PRIMARY KEY"), "{none}");
        assert!(none.contains("\"_etl_file\" text NOT NULL"), "{none}");
        let kafka = create_table_sql(
            "t",
            &refs,
            &PkMode::Kafka(crate::sink::config::KAFKA_PK.map(String::from)),
        );
        assert!(
            kafka.contains(
                "\"body\" text,\n  \"__connect_topic\" text NOT NULL,\n  \
                 \"__connect_partition\" bigint NOT NULL,\n  \"__connect_offset\" bigint NOT NULL,\n  \"_etl_file\""
            ),
            "{kafka}"
        );
        assert!(
            kafka.ends_with(
                "PRIMARY KEY (\"__connect_topic\", \"__connect_partition\", \"__connect_offset\")\n)"
            ),
            "{kafka}"
        );
        let value = create_table_sql("t", &refs, &PkMode::RecordValue(vec!["id".into()]));
        assert!(
            value.contains("\"id\" bigint NOT NULL,\n  \"body\" text,"),
            "{value}"
        );
        assert!(value.ends_with("PRIMARY KEY (\"id\")\n)"), "{value}");
    }

    #[test]
    fn widening_sql() {
        assert_eq!(
            widen_column_sql("t", "n", FieldType::Int64, FieldType::Double),
            "ALTER TABLE \"t\" ALTER COLUMN \"n\" TYPE double precision USING \"n\"::double precision"
        );
        let ts = widen_column_sql("t", "at", FieldType::Timestamp, FieldType::String);
        assert!(ts.starts_with("ALTER TABLE \"t\" ALTER COLUMN \"at\" TYPE text USING CASE"));
    }

    #[test]
    fn insert_modes() {
        let s = schema(&[("a", FieldType::String)]);
        let up = insert_sql("review", &s.fields, InsertMode::Upsert, &PkMode::RecordKey);
        assert!(
            up.contains(
                "ON CONFLICT (\"_etl_file\", \"_etl_row\") DO UPDATE SET \"a\" = EXCLUDED.\"a\""
            ),
            "{up}"
        );
        assert!(
            up.contains("WHERE ROW(\"review\".\"a\") IS DISTINCT FROM ROW(EXCLUDED.\"a\")"),
            "{up}"
        );
        let ins = insert_sql("review", &s.fields, InsertMode::Insert, &PkMode::RecordKey);
        assert!(
            ins.ends_with("ON CONFLICT (\"_etl_file\", \"_etl_row\") DO NOTHING"),
            "{ins}"
        );
        let plain = insert_sql("review", &s.fields, InsertMode::Insert, &PkMode::None);
        assert_eq!(
            plain,
            "INSERT INTO \"review\" (\"a\", \"_etl_file\", \"_etl_row\", \"_etl_trace_id\") \
             SELECT \"a\", \"_etl_file\", \"_etl_row\", \"_etl_trace_id\" FROM _etl_stage"
        );
    }

    #[test]
    fn update_mode_changes_only_matching_rows() {
        let s = schema(&[("a", FieldType::String)]);
        let up = insert_sql("review", &s.fields, InsertMode::Update, &PkMode::RecordKey);
        assert_eq!(
            up,
            "UPDATE \"review\" SET \"a\" = s.\"a\", \"_etl_trace_id\" = s.\"_etl_trace_id\", \
             \"_etl_loaded_at\" = now() FROM _etl_stage AS s \
             WHERE \"review\".\"_etl_file\" = s.\"_etl_file\" AND \"review\".\"_etl_row\" = s.\"_etl_row\" \
             AND ROW(\"review\".\"a\") IS DISTINCT FROM ROW(s.\"a\")"
        );
    }

    #[test]
    fn keys_other_than_lineage_move_the_lineage_with_the_row() {
        let s = schema(&[("id", FieldType::Int64), ("a", FieldType::String)]);
        let pk = PkMode::RecordValue(vec!["id".into()]);
        let up = insert_sql("t", &s.fields, InsertMode::Upsert, &pk);
        assert!(
            up.contains(
                "ON CONFLICT (\"id\") DO UPDATE SET \"a\" = EXCLUDED.\"a\", \
                 \"_etl_file\" = EXCLUDED.\"_etl_file\", \"_etl_row\" = EXCLUDED.\"_etl_row\""
            ),
            "{up}"
        );
        assert!(
            !up.contains("\"id\" = EXCLUDED"),
            "the key is not set: {up}"
        );
        let kafka = PkMode::Kafka(crate::sink::config::KAFKA_PK.map(String::from));
        let ins = insert_sql("t", &s.fields, InsertMode::Insert, &kafka);
        assert!(
            ins.starts_with(
                "INSERT INTO \"t\" (\"id\", \"a\", \"__connect_topic\", \"__connect_partition\", \"__connect_offset\", \"_etl_file\""
            ),
            "{ins}"
        );
        assert!(
            ins.ends_with(
                "ON CONFLICT (\"__connect_topic\", \"__connect_partition\", \"__connect_offset\") DO NOTHING"
            ),
            "{ins}"
        );
        let rows = vec![row(
            "f",
            1,
            &s,
            vec![Value::Int(7), Value::Text("x".into())],
        )];
        let text = String::from_utf8(copy_text(&rows, &s.fields, &kafka)).expect("utf8");
        assert_eq!(text, "7\tx\tt\t1\t101\tf\t1\t\\N\n");
    }

    #[test]
    fn dedup_keeps_the_last_of_each_key() {
        let s = schema(&[("a", FieldType::String)]);
        let rows = vec![
            Change::Row(row("f", 1, &s, vec![Value::Text("old".into())])),
            Change::Row(row("f", 2, &s, vec![Value::Text("x".into())])),
            Change::Row(row("g", 1, &s, vec![Value::Text("y".into())])),
            Change::Row(row("f", 1, &s, vec![Value::Text("new".into())])),
        ];
        let (out, deletes) = dedup_last(rows.clone(), &PkMode::RecordKey);
        let keys: Vec<(&str, i64)> = out.iter().map(|r| (&*r.file, r.row)).collect();
        assert_eq!(keys, vec![("f", 2), ("g", 1), ("f", 1)]);
        assert_eq!(out[2].values, vec![Value::Text("new".into())]);
        assert!(deletes.is_empty());
        // Without a key every row is inserted; the Kafka key is unique per record.
        assert_eq!(dedup_last(rows.clone(), &PkMode::None).0.len(), 4);
        // Each record its own offset: a key of its own.
        let rows: Vec<Change> = rows
            .into_iter()
            .zip(0..)
            .map(|(c, offset)| match c {
                Change::Row(r) => Change::Row(SinkRow { offset, ..r }),
                other => other,
            })
            .collect();
        let kafka = PkMode::Kafka(crate::sink::config::KAFKA_PK.map(String::from));
        assert_eq!(dedup_last(rows, &kafka).0.len(), 4);
    }

    #[test]
    fn dedup_by_value_fields_and_tombstones() {
        let s = schema(&[("id", FieldType::Int64), ("a", FieldType::String)]);
        let pk = PkMode::RecordValue(vec!["id".into()]);
        let (out, _) = dedup_last(
            vec![
                Change::Row(row(
                    "f",
                    1,
                    &s,
                    vec![Value::Int(1), Value::Text("a".into())],
                )),
                Change::Row(row(
                    "f",
                    2,
                    &s,
                    vec![Value::Int(2), Value::Text("b".into())],
                )),
                Change::Row(row(
                    "g",
                    1,
                    &s,
                    vec![Value::Int(1), Value::Text("c".into())],
                )),
            ],
            &pk,
        );
        let got: Vec<(&str, i64)> = out.iter().map(|r| (&*r.file, r.row)).collect();
        assert_eq!(got, vec![("f", 2), ("g", 1)]);

        // The last change of a key wins: a tombstone after a row deletes it, a row
        // after a tombstone brings it back.
        let a = schema(&[("a", FieldType::String)]);
        let (rows, deletes) = dedup_last(
            vec![
                Change::Row(row("f", 1, &a, vec![Value::Text("x".into())])),
                Change::Delete {
                    file: "f".into(),
                    row: 1,
                },
                Change::Delete {
                    file: "f".into(),
                    row: 2,
                },
                Change::Row(row("f", 2, &a, vec![Value::Text("y".into())])),
            ],
            &PkMode::RecordKey,
        );
        assert_eq!(deletes, vec![(Arc::from("f"), 1)]);
        let got: Vec<i64> = rows.iter().map(|r| r.row).collect();
        assert_eq!(got, vec![2]);
    }

    #[test]
    fn batch_fields_union_and_widen() {
        let a = schema(&[("x", FieldType::Int64), ("_etl_row", FieldType::Int64)]);
        let b = schema(&[("x", FieldType::Double), ("y", FieldType::Boolean)]);
        let rows = vec![
            row("f", 1, &a, vec![Value::Int(1), Value::Int(9)]),
            row("g", 1, &b, vec![Value::Double(0.5), Value::Bool(true)]),
        ];
        let f = batch_fields(&rows);
        let got: Vec<(&str, FieldType)> = f.iter().map(|f| (f.name.as_str(), f.ty)).collect();
        assert_eq!(
            got,
            vec![("x", FieldType::Double), ("y", FieldType::Boolean)]
        );
        let text = String::from_utf8(copy_text(&rows, &f, &PkMode::RecordKey)).expect("utf8");
        assert_eq!(text, "1\t\\N\tf\t1\t\\N\n0.5\ttrue\tg\t1\t\\N\n");
    }
}
