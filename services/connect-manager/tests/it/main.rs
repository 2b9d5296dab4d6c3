//! Integration tests, one binary: real Postgres, real tansu, our sftp-gateway
//! and connect-manager in-process on port 0; no mocks.
//!
//! - `pipeline`: a file through source and sink (values, types, lineage),
//!   replay, rejected files, restart safety.
//! - `rest`: the Kafka-Connect-compatible REST API; gRPC errors.
//! - `connect_api`: every Kafka Connect endpoint and status code over HTTP:
//!   truthful states, pause/resume/stop/restart, offsets, validate; the same
//!   operations over gRPC.
//! - `faults`: undecodable records (FAILED, dead letter queue), files that do not
//!   fit the pinned schema or hold no data.
//! - `binary`: the `connect-manager` executable.

mod binary;
mod connect_api;
mod faults;
mod helpers;
mod pipeline;
mod rest;
