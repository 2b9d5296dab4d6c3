//! Server plumbing that every file-etl service shares, so each service's `main.rs`
//! stays a few lines and every service behaves the same way at its edges.
//!
//! # Layout
//! - [`shutdown`]: one [`Shutdown`] token passed to every task; SIGTERM/SIGINT trip it.
//! - [`grpc`]: a gRPC server with `grpc.health.v1` and server reflection built in,
//!   bound to a caller-provided listener (port 0 in tests), and a health probe client.
//! - [`backoff`]: the one retry loop used to wait for dependencies (Kafka, Postgres,
//!   SFTP, peer services), so start order never matters.
//! - [`security`]: the flags every service shares (`--api-token`,
//!   `--api-token-file`, `--tls-cert`, `--tls-key`, `--tls-ca` and their `ETL_*`
//!   twins), read at start into a [`ServerSecurity`] and a [`ClientAuth`].
//! - [`auth`]: the control-plane token and the one tower layer that checks it,
//!   for gRPC (UNAUTHENTICATED; health and reflection open) and REST (401).
//! - [`client`]: [`ClientAuth`]: channels whose calls carry the token, TLS for
//!   `https://` URLs; every caller of a service uses it.
//! - [`tls`]: certificate, key and CA files; a TLS listener for HTTP.
//! - [`http`]: serve an HTTP router (REST) with the same token and TLS.
//! - [`process`]: [`serve_main`], the body of every service's `main` once its
//!   flags are parsed (telemetry, signals, exit code).

pub mod auth;
pub mod backoff;
pub mod client;
pub mod grpc;
pub mod http;
pub mod process;
pub mod security;
pub mod shutdown;
pub mod tls;

pub use backoff::{Backoff, Retry, is_transient, retry};
pub use client::{AuthChannel, ClientAuth};
pub use grpc::{
    Health, bind, healthcheck_command, probe_health, probe_health_with, serve_grpc,
    serve_until_shutdown,
};
pub use process::serve_main;
pub use security::{ApiSecurity, ClientSecurity, ServerSecurity};
pub use shutdown::Shutdown;
