//! The sink's Postgres side: table DDL (create and evolve), and writing one
//! batch in one transaction — `COPY` into a temporary table, then one
//! `INSERT … SELECT … ON CONFLICT (_etl_file, _etl_row)`, then `pg_notify`.
//!
//! Why a staging table: `COPY` is the fast path into Postgres but cannot
//! resolve conflicts; `INSERT … ON CONFLICT` can, and from a temp table it is
//! one statement per batch instead of one per row. Replaying a file (or a
//! partition) therefore changes nothing.

use std::{
    collections::{HashMap, HashSet},
    pin::pin,
    sync::Arc,
};

use bytes::Bytes;
use etl_core::{Field, FieldType, Schema, Value};
use futures::SinkExt;
use tokio_postgres::{Client, Transaction};

use crate::sink::config::InsertMode;

/// The lineage columns every sink table has, after the data columns.
pub(crate) const LINEAGE: [&str; 4] = ["_etl_file", "_etl_row", "_etl_trace_id", "_etl_loaded_at"];
/// The channel the verifier listens on; the payload is the file name.
pub(crate) const NOTIFY_CHANNEL: &str = "etl_rows";
const STAGE: &str = "_etl_stage";
/// Bytes of COPY data per message sent to the server.
const COPY_CHUNK: usize = 1 << 20;

/// One row on its way to Postgres.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SinkRow {
    pub(crate) file: String,
    pub(crate) row: i64,
    pub(crate) trace_id: Option<String>,
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

impl WriteError {
    /// The connection is gone: reconnect before retrying.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self, WriteError::Postgres(e) if e.is_closed())
    }
}

/// `"name"`, with embedded quotes doubled: any text is a safe identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `CREATE TABLE IF NOT EXISTS` with one column per field and the lineage columns.
pub(crate) fn create_table_sql(table: &str, fields: &[&Field]) -> String {
    let mut cols: Vec<String> = fields
        .iter()
        .map(|f| format!("{} {}", quote_ident(&f.name), f.ty.pg_type()))
        .collect();
    cols.extend([
        "\"_etl_file\" text NOT NULL".to_string(),
        "\"_etl_row\" bigint NOT NULL".to_string(),
        "\"_etl_trace_id\" text".to_string(),
        "\"_etl_loaded_at\" timestamptz NOT NULL DEFAULT now()".to_string(),
        "PRIMARY KEY (\"_etl_file\", \"_etl_row\")".to_string(),
    ]);
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

/// Keeps the last row per `(file, row)`, in order of last appearance: within
/// one `INSERT … ON CONFLICT` a key may appear only once ("cannot affect row a
/// second time"), and the last record of a key is the newest.
pub(crate) fn dedup_last(rows: Vec<SinkRow>) -> Vec<SinkRow> {
    let mut seen = HashSet::with_capacity(rows.len());
    let mut out: Vec<SinkRow> = rows
        .into_iter()
        .rev()
        .filter(|r| seen.insert((r.file.clone(), r.row)))
        .collect();
    out.reverse();
    out
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
            if LINEAGE.contains(&f.name.as_str()) {
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

/// Appends `s` in COPY text format: backslash, tab, newline and carriage return
/// escaped. NUL cannot be stored in Postgres text at all and is dropped.
pub(crate) fn push_copy_text(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => {}
            _ => out.push(b),
        }
    }
}

fn push_copy_value(out: &mut Vec<u8>, v: Option<&Value>) {
    match v {
        None | Some(Value::Null) => out.extend_from_slice(b"\\N"),
        Some(Value::Text(s)) => push_copy_text(out, s),
        // Lossless text; Postgres parses it into the column's type (which
        // auto.evolve made wide enough).
        Some(v) => push_copy_text(out, &v.canonical_text()),
    }
}

/// Per table: column name → type (None: a type we do not map, left alone).
#[derive(Default)]
pub(crate) struct TableCache {
    tables: HashMap<String, HashMap<String, Option<FieldType>>>,
}

impl TableCache {
    /// Forget everything: after a failed transaction, DDL may have been rolled back.
    pub(crate) fn clear(&mut self) {
        self.tables.clear();
    }
}

async fn load_columns(
    tx: &Transaction<'_>,
    table: &str,
) -> Result<HashMap<String, Option<FieldType>>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
            &[&table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            let ty: String = r.get(1);
            (name, FieldType::from_pg_type(&ty))
        })
        .collect())
}

/// Makes `table` able to hold `fields`: creates it (auto.create), adds missing
/// columns and widens conflicting ones (auto.evolve).
pub(crate) async fn ensure_table(
    tx: &Transaction<'_>,
    cache: &mut TableCache,
    table: &str,
    fields: &[Field],
    auto_create: bool,
    auto_evolve: bool,
) -> Result<(), WriteError> {
    if !cache.tables.contains_key(table) {
        let mut cols = load_columns(tx, table).await?;
        if cols.is_empty() {
            if !auto_create {
                return Err(WriteError::NoTable {
                    table: table.into(),
                });
            }
            let refs: Vec<&Field> = fields.iter().collect();
            tx.batch_execute(&create_table_sql(table, &refs)).await?;
            tracing::info!(table, columns = fields.len(), "created table");
            cols = load_columns(tx, table).await?;
        }
        cache.tables.insert(table.to_string(), cols);
    }
    let Some(cols) = cache.tables.get_mut(table) else {
        return Ok(());
    };
    for f in fields {
        match cols.get(&f.name).copied() {
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
                cols.insert(f.name.clone(), Some(want));
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
                cols.insert(f.name.clone(), Some(f.ty));
            }
        }
    }
    Ok(())
}

/// The `INSERT … SELECT … ON CONFLICT` that moves the staged rows into `table`.
/// An upsert rewrites a row only when a value differs, so a replay leaves even
/// `_etl_loaded_at` and `_etl_trace_id` as the first load set them.
pub(crate) fn insert_sql(table: &str, fields: &[Field], mode: InsertMode) -> String {
    let data: Vec<String> = fields.iter().map(|f| quote_ident(&f.name)).collect();
    let mut all = data.clone();
    all.extend(["\"_etl_file\"", "\"_etl_row\"", "\"_etl_trace_id\""].map(String::from));
    let cols = all.join(", ");
    let t = quote_ident(table);
    let conflict = match mode {
        InsertMode::Insert => "DO NOTHING".to_string(),
        InsertMode::Upsert if data.is_empty() => "DO NOTHING".to_string(),
        InsertMode::Upsert => {
            let set: Vec<String> = data
                .iter()
                .map(|c| format!("{c} = EXCLUDED.{c}"))
                .chain([
                    "\"_etl_trace_id\" = EXCLUDED.\"_etl_trace_id\"".to_string(),
                    "\"_etl_loaded_at\" = now()".to_string(),
                ])
                .collect();
            let old: Vec<String> = data.iter().map(|c| format!("{t}.{c}")).collect();
            let new: Vec<String> = data.iter().map(|c| format!("EXCLUDED.{c}")).collect();
            format!(
                "DO UPDATE SET {} WHERE ROW({}) IS DISTINCT FROM ROW({})",
                set.join(", "),
                old.join(", "),
                new.join(", ")
            )
        }
    };
    format!(
        "INSERT INTO {t} ({cols}) SELECT {cols} FROM {STAGE} \
         ON CONFLICT (\"_etl_file\", \"_etl_row\") {conflict}"
    )
}

/// The COPY text of `rows` for the columns `fields` + file, row, trace id.
pub(crate) fn copy_text(rows: &[SinkRow], fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    // Column position of each field, per distinct schema.
    let mut last: Option<(&Arc<Schema>, Vec<Option<usize>>)> = None;
    for r in rows {
        if !last
            .as_ref()
            .is_some_and(|(s, _)| Arc::ptr_eq(s, &r.schema))
        {
            let idx = fields
                .iter()
                .map(|f| r.schema.fields.iter().position(|g| g.name == f.name))
                .collect();
            last = Some((&r.schema, idx));
        }
        let Some((_, idx)) = &last else { continue };
        for i in idx {
            push_copy_value(&mut out, i.and_then(|i| r.values.get(i)));
            out.push(b'\t');
        }
        push_copy_text(&mut out, &r.file);
        out.push(b'\t');
        out.extend_from_slice(r.row.to_string().as_bytes());
        out.push(b'\t');
        match &r.trace_id {
            Some(t) => push_copy_text(&mut out, t),
            None => out.extend_from_slice(b"\\N"),
        }
        out.push(b'\n');
    }
    out
}

/// What one batch wrote.
#[derive(Debug, Default)]
pub(crate) struct Written {
    /// Rows inserted or changed (a replay of unchanged rows writes 0).
    pub(crate) changed: u64,
    /// Rows staged (after de-duplication).
    pub(crate) staged: u64,
}

/// Writes `rows` (already de-duplicated, one table) in one transaction and
/// sends one `NOTIFY etl_rows, '<file>'` per file; returns once committed.
pub(crate) async fn write_batch(
    client: &mut Client,
    cache: &mut TableCache,
    table: &str,
    rows: &[SinkRow],
    mode: InsertMode,
    auto_create: bool,
    auto_evolve: bool,
) -> Result<Written, WriteError> {
    let fields = batch_fields(rows);
    let tx = client.transaction().await?;
    ensure_table(&tx, cache, table, &fields, auto_create, auto_evolve).await?;
    let mut stage_cols: Vec<String> = fields.iter().map(|f| quote_ident(&f.name)).collect();
    stage_cols.extend(["\"_etl_file\"", "\"_etl_row\"", "\"_etl_trace_id\""].map(String::from));
    let stage_cols = stage_cols.join(", ");
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {STAGE} ON COMMIT DROP AS SELECT {stage_cols} FROM {} WITH NO DATA",
        quote_ident(table)
    ))
    .await?;
    let data = copy_text(rows, &fields);
    let sink = tx
        .copy_in::<_, Bytes>(&format!("COPY {STAGE} ({stage_cols}) FROM STDIN"))
        .await?;
    let mut sink = pin!(sink);
    let data = Bytes::from(data);
    let mut at = 0;
    while at < data.len() {
        let end = (at + COPY_CHUNK).min(data.len());
        sink.feed(data.slice(at..end)).await?;
        at = end;
    }
    let staged = sink.as_mut().finish().await?;
    let changed = tx.execute(&insert_sql(table, &fields, mode), &[]).await?;
    let mut files: Vec<&str> = rows.iter().map(|r| r.file.as_str()).collect();
    files.dedup();
    let mut notified = HashSet::new();
    for f in files {
        if notified.insert(f) {
            tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &f])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(Written { changed, staged })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &[(&str, FieldType)]) -> Arc<Schema> {
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
            schema: schema.clone(),
            values,
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("review"), "\"review\"");
        assert_eq!(quote_ident("a\"b; drop"), "\"a\"\"b; drop\"");
    }

    #[test]
    fn create_table_has_lineage_and_key() {
        let s = schema(&[("body", FieldType::String), ("n", FieldType::Int64)]);
        let refs: Vec<&Field> = s.fields.iter().collect();
        let sql = create_table_sql("review", &refs);
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS \"review\" (\n  \"body\" text,\n  \"n\" bigint,\n  \
             \"_etl_file\" text NOT NULL,\n  \"_etl_row\" bigint NOT NULL,\n  \"_etl_trace_id\" text,\n  \
             \"_etl_loaded_at\" timestamptz NOT NULL DEFAULT now(),\n  \
             PRIMARY KEY (\"_etl_file\", \"_etl_row\")\n)"
        );
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
        let up = insert_sql("review", &s.fields, InsertMode::Upsert);
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
        let ins = insert_sql("review", &s.fields, InsertMode::Insert);
        assert!(
            ins.ends_with("ON CONFLICT (\"_etl_file\", \"_etl_row\") DO NOTHING"),
            "{ins}"
        );
    }

    #[test]
    fn dedup_keeps_the_last_of_each_key() {
        let s = schema(&[("a", FieldType::String)]);
        let rows = vec![
            row("f", 1, &s, vec![Value::Text("old".into())]),
            row("f", 2, &s, vec![Value::Text("x".into())]),
            row("g", 1, &s, vec![Value::Text("y".into())]),
            row("f", 1, &s, vec![Value::Text("new".into())]),
        ];
        let out = dedup_last(rows);
        let keys: Vec<(&str, i64)> = out.iter().map(|r| (r.file.as_str(), r.row)).collect();
        assert_eq!(keys, vec![("f", 2), ("g", 1), ("f", 1)]);
        assert_eq!(out[2].values, vec![Value::Text("new".into())]);
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
        let text = String::from_utf8(copy_text(&rows, &f)).expect("utf8");
        assert_eq!(text, "1\t\\N\tf\t1\t\\N\n0.5\ttrue\tg\t1\t\\N\n");
    }

    #[test]
    fn copy_text_escapes() {
        let mut out = Vec::new();
        push_copy_text(&mut out, "a\tb\nc\\d\re\0f");
        assert_eq!(out, br"a\tb\nc\\d\ref".to_vec());
    }
}
