//! Integration tests, one binary: real servers on loopback, no mocks.
//!
//! - `contract`: what every SFTP server must do for `etl-sftp`, run against
//!   our gateway (`client_gateway`) and OpenSSH's sshd (`client_sshd`).
//! - `events`: FileReady over gRPC `WatchFiles` and in process; `AnnounceUpload`.
//! - `openssh_client`: OpenSSH's `sftp` client against the gateway.
//! - `binary`: the `sftp-gateway` executable (help, healthcheck, SIGTERM).

mod binary;
mod client_gateway;
mod client_sshd;
mod contract;
mod events;
mod helpers;
mod openssh_client;
