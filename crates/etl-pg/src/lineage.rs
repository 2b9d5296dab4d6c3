//! The lineage columns: what the sink adds to every row it writes, after the
//! file's own columns, and what the verifier reads a file's rows back by.
//!
//! | column | type | value |
//! |---|---|---|
//! | `_etl_file` | `text NOT NULL` | the chunk file's name (the Kafka key before its last `:`) |
//! | `_etl_row` | `bigint NOT NULL` | the 1-based data row of the file (the key after it) |
//! | `_etl_trace_id` | `text` | the row's trace, so a row leads to its trace |
//! | `_etl_loaded_at` | `timestamptz NOT NULL DEFAULT now()` | the start of the writing transaction |
//!
//! `(_etl_file, _etl_row)` is the primary key under `pk.mode=record_key`, which
//! makes a replay change nothing.
//!
//! Why here and not in `etl-core`: these are names and types of Postgres
//! columns, and only Postgres clients use them (the sink, the verifier, an
//! operator's `psql`). `etl-core` holds what travels *before* Postgres — the
//! chunk format, the Kafka key `{file}:{row}`, the digests — and stays free of
//! SQL; the columns sit here beside the SQL that reads and writes them.

/// The chunk file a row came from.
pub const FILE: &str = "_etl_file";
/// The row's 1-based number in its file.
pub const ROW: &str = "_etl_row";
/// The W3C trace id of the row's file, or NULL when it had none.
pub const TRACE_ID: &str = "_etl_trace_id";
/// `now()` of the transaction that wrote the row: a lower bound of its commit.
pub const LOADED_AT: &str = "_etl_loaded_at";

/// Every lineage column, in table order (after the data columns).
pub const ALL: [&str; 4] = [FILE, ROW, TRACE_ID, LOADED_AT];

/// The lineage key: one row per (file, row).
pub const KEY: [&str; 2] = [FILE, ROW];

/// The lineage columns the sink sends with each row; [`LOADED_AT`] is filled by
/// its default.
pub const SENT: [&str; 3] = [FILE, ROW, TRACE_ID];

/// Each lineage column with its type and constraints, as `CREATE TABLE` gives
/// them. The verifier relies on these types: it reads [`ROW`] as `bigint` and
/// [`LOADED_AT`] as `timestamptz`.
pub const DEFINITIONS: [(&str, &str); 4] = [
    (FILE, "text NOT NULL"),
    (ROW, "bigint NOT NULL"),
    (TRACE_ID, "text"),
    (LOADED_AT, "timestamptz NOT NULL DEFAULT now()"),
];

/// Whether `name` is a lineage column (a data column of that name is ours to
/// fill, never the file's).
pub fn is_lineage(name: &str) -> bool {
    ALL.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_cover_every_column_in_order() {
        let names: Vec<&str> = DEFINITIONS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ALL);
        assert!(KEY.iter().chain(&SENT).all(|c| is_lineage(c)));
        assert!(!is_lineage("body"));
    }
}
