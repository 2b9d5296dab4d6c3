//! Integration tests, one binary: real servers on loopback, no mocks of our
//! own code — the sftp-gateway runs in-process, the sink-verifier is a small
//! recording gRPC server (its real implementation is tested in its crate).
//!
//! - `extract`: a run end to end (upload, manifests, traces), reruns that
//!   resume without duplicates or gaps, strict mode, shutdown mid-run, local output.
//! - `recovery`: the gateway restarted mid-run, the verifier away (register
//!   before publish, give up at the deadline), stable run ids, stale temporaries.
//! - `binary`: the executable's subcommands and help.
//! - `api`: gRPC `StartRun` + `WatchRun` through the extractor server.
//! - `language`: the language filter's accuracy on generated reviews.
//! - `pinned`: digests of the transform's output (detections, chunk files),
//!   pinned so that making it faster cannot change it.
//! - `security`: the API token on every call (and on the calls the extractor
//!   makes), StartRun confined to the input directories.

mod api;
mod binary;
mod extract;
mod helpers;
mod language;
mod pinned;
mod recovery;
mod security;
