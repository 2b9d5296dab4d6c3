//! Integration tests: a real Postgres (testkit, one database per test), the
//! verifier in-process on port 0 (or as a child process, to kill it with
//! SIGKILL), and a gRPC client talking to it over the wire.

mod duplicates;
mod durable;
mod helpers;
mod latency;
mod rejected;
mod side_by_side;
mod verify;

/// Tests return errors instead of unwrapping, so a failure says what went wrong.
type TestResult = Result<(), Box<dyn std::error::Error>>;
