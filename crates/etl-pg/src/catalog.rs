//! What a table looks like now, from `information_schema.columns`: the sink
//! reads it to create and evolve its tables, the verifier to know which
//! columns it can select and how to decode them.

use std::collections::HashMap;

use tokio_postgres::GenericClient;

use crate::ident::TableName;

/// Column name → `information_schema` `data_type` (`bigint`, `text`,
/// `timestamp with time zone`, …) of `table`; empty when the table does not
/// exist (or the role cannot see it). Works on a client or inside a transaction
/// (where it sees the transaction's own DDL).
pub async fn table_columns<C>(
    client: &C,
    table: &TableName,
) -> Result<HashMap<String, String>, tokio_postgres::Error>
where
    C: GenericClient + Sync,
{
    let rows = client
        .query(
            // The casts make the parameters text whatever the catalog's own
            // types (`name`, `sql_identifier`) are.
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema::text = coalesce($1::text, current_schema()::text) \
               AND table_name::text = $2::text",
            &[&table.schema, &table.name],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Whether `table` has a unique index that rejects a duplicate of exactly
/// `columns` (in any order) at once: not partial, not on expressions, not
/// deferred, INCLUDE columns aside. Then a plain `COPY` of a row whose key is
/// already there fails on the spot (`unique_violation`) rather than adding it
/// twice, which is what lets a writer try the plain `COPY` before an upsert.
/// `false` for no columns or no such table.
pub async fn has_unique_index<C>(
    client: &C,
    table: &TableName,
    columns: &[&str],
) -> Result<bool, tokio_postgres::Error>
where
    C: GenericClient + Sync,
{
    if columns.is_empty() {
        return Ok(false);
    }
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i \
               JOIN pg_class c ON c.oid = i.indrelid \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               WHERE n.nspname::text = coalesce($1::text, current_schema()::text) \
                 AND c.relname::text = $2::text \
                 AND i.indisunique AND i.indimmediate AND i.indisvalid \
                 AND i.indpred IS NULL AND i.indexprs IS NULL \
                 AND i.indnkeyatts = cardinality($3::text[]) \
                 AND (SELECT array_agg(a.attname::text) FROM pg_attribute a \
                      WHERE a.attrelid = i.indrelid \
                        AND a.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1])) \
                     @> $3::text[])",
            &[&table.schema, &table.name, &columns],
        )
        .await?;
    row.try_get(0)
}
