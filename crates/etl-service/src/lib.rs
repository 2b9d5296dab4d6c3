//! Server plumbing that every file-etl service shares, so each service's `main.rs`
//! stays a few lines and every service behaves the same way at its edges.
//!
//! # Layout
//! - [`shutdown`]: one [`Shutdown`] token passed to every task; SIGTERM/SIGINT trip it.
//! - [`grpc`]: a gRPC server with `grpc.health.v1` and server reflection built in,
//!   bound to a caller-provided listener (port 0 in tests), and a health probe client.
//! - [`backoff`]: the one retry loop used to wait for dependencies (Kafka, Postgres,
//!   SFTP, peer services), so start order never matters.

pub mod backoff;
pub mod grpc;
pub mod shutdown;

pub use backoff::{Backoff, retry};
pub use grpc::{Health, bind, healthcheck_command, probe_health, serve_grpc, serve_until_shutdown};
pub use shutdown::Shutdown;
