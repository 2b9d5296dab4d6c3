//! The Postgres side of the file-etl contract, in one place for the two parties
//! that meet there: connect-manager's sink writes the table, the sink-verifier
//! reads it back. Whatever both must agree on — column names, the NOTIFY
//! channel, how names are quoted, how a table's columns are read, how a
//! connection is opened and named in messages — is defined here once, so the
//! two cannot drift apart.
//!
//! # Layout
//! In the order a row meets them:
//! - [`connect`]: opening a connection (one place for TLS, when it comes) and
//!   describing a server in logs and errors without its password.
//! - [`lineage`]: the columns the sink adds to every row (`_etl_file`,
//!   `_etl_row`, `_etl_trace_id`, `_etl_loaded_at`), their types and the key.
//! - [`ident`]: quoting identifiers; table names, optionally schema-qualified.
//! - [`catalog`]: a table's columns and their types, from `information_schema`.
//! - [`notify`]: `NOTIFY etl_rows, '<file>'` in the sink's transaction and the
//!   verifier's `LISTEN` connection.
//!
//! What only one side does stays with it: the sink's DDL, staging and upserts
//! (`connect-manager/src/postgres.rs`), the verifier's decoding, digests and
//! commit timestamps (`sink-verifier/src/verify.rs`).

pub mod catalog;
pub mod connect;
pub mod ident;
pub mod lineage;
pub mod notify;

pub use catalog::{has_unique_index, table_columns};
pub use connect::{connect, describe};
pub use ident::{TableName, quote_ident};
