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
