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
//! - `kafka_connect`: Kafka Connect's options end to end (update mode, every
//!   pk.mode, tombstones, topics.regex, retries that stop a task, FAIL on error),
//!   two sinks on one topic, Python booleans, value.schema, and the original
//!   project's connector JSON.
//! - `binary`: the `connect-manager` executable.
//! - `cluster`: distributed mode, three workers sharing tasks through Kafka.
//! - `security`: the API token on REST and gRPC, no password in any response,
//!   `${env:…}` / `${file:…}` references.

mod binary;
mod cluster;
mod connect_api;
mod faults;
mod helpers;
mod kafka_connect;
mod offset_gaps;
mod pipeline;
mod rest;
mod security;
mod sftp_trust;
