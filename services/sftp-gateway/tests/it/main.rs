//! Integration tests, one binary: real servers on loopback, no mocks.
//!
//! - `contract`: what every SFTP server must do for `etl-sftp`, run against
//!   our gateway (`client_gateway`) and OpenSSH's sshd (`client_sshd`).
//! - `events`: FileReady over gRPC `WatchFiles` and in process; `AnnounceUpload`.
//! - `client_security`: `etl-sftp`'s host key checks and passphrase keys.
//! - `openssh_client`: OpenSSH's `sftp` client against the gateway.
//! - `security`: the gateway's defences: attempt cap, failed-login
//!   penalties, connection caps, grace and idle timeouts, size limit and
//!   quota, permissions, argon2 users file, symlinks swapped in under a client.
//! - `trace`: the trace context kept with each file (restarts, renames, the
//!   `traceparent@file-etl` extension), REJECTED events, `include_existing`.
//! - `shared_roots`: users sharing one root: notices, announcements, trace
//!   contexts and the quota follow the tree, not the login; bad root names.
//! - `binary`: the `sftp-gateway` executable (help, healthcheck, SIGTERM).

mod binary;
mod client_gateway;
mod client_security;
mod client_sshd;
mod contract;
mod events;
mod helpers;
mod openssh_client;
mod security;
mod shared_roots;
mod trace;
