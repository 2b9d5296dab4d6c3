//! Integration tests, one binary: real Postgres, real tansu, our sftp-gateway
//! and connect-manager in-process on port 0; no mocks.
//!
//! - `pipeline`: a file through source and sink (values, types, lineage),
//!   replay, rejected files, restart safety.
//! - `rest`: the Kafka-Connect-compatible REST API; gRPC errors.
//! - `binary`: the `connect-manager` executable.

mod binary;
mod helpers;
mod pipeline;
mod rest;
