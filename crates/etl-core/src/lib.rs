//! The pure logic of file-etl: everything that can be decided without a network or
//! a disk lives here and is tested byte for byte, so the services only do I/O.
//!
//! # Layout
//! In the order a row travels:
//! - [`review`]: the Amazon review input (`label,title,body`), label schemes, and the
//!   output columns of a chunk file.
//! - [`table`]: the delimited chunk format (TSV/CSV with a header): writing with the
//!   quoting rules of the design, reading with errors that name the line.
//! - [`naming`]: chunk file names, hidden temporary names.
//! - [`digest`]: row digests and file checksums, shared by the extractor (who writes a
//!   file) and the verifier (who reads its rows back from Postgres).
//! - [`value`] and [`schema`]: typed values and Kafka Connect schemas.
//! - [`infer`]: lossless column type inference from a file's text.
//! - [`connector_file`]: connector JSON files with `${VAR:-default}` placeholders.
//! - [`config_provider`]: Kafka Connect's `${env:VAR}` and `${file:/path:key}`
//!   references in connector configs, resolved with the reads the caller gives.
//! - [`envelope`]: the Kafka Connect JsonConverter envelope (`schema` + `payload`).
//!
//! Two small helpers every binary needs the same way:
//! - [`net`]: `host:port` addresses (`[::1]:2222`, a default port).
//! - [`time`]: the clock in Unix milliseconds, the unit of every `*_unix_ms` field
//!   (the one read of the clock here; it is still no I/O worth a test server).

pub mod config_provider;
pub mod connector_file;
pub mod digest;
pub mod envelope;
pub mod infer;
pub mod naming;
pub mod net;
pub mod review;
pub mod schema;
pub mod table;
pub mod time;
pub mod value;

pub use schema::{Field, FieldType, Schema};
pub use value::Value;

/// The Kafka record key of a row: `{file}:{row}`, row being the 1-based data line.
pub fn record_key(file: &str, row: u64) -> String {
    format!("{file}:{row}")
}

/// Splits a record key back into file and row. The file name may itself contain
/// ':', so the row is taken after the last one.
pub fn parse_record_key(key: &str) -> Option<(&str, u64)> {
    let (file, row) = key.rsplit_once(':')?;
    Some((file, row.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_key_round_trips_with_colons_in_name() {
        let k = record_key("a:b.csv", 42);
        assert_eq!(k, "a:b.csv:42");
        assert_eq!(parse_record_key(&k), Some(("a:b.csv", 42)));
        assert_eq!(parse_record_key("nocolon"), None);
        assert_eq!(parse_record_key("f:x"), None);
    }
}
