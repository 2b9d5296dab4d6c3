//! Integration tests of etl-stack's server starters and of testkit's shared servers:
//! real servers, real clients. Server logs land in
//! `target/testkit-logs/<binary>/<test name>/`.

mod broker;
mod orphans;
mod postgres;

/// Tests return errors instead of unwrapping, so a failure prints the server's log tail.
type TestResult = Result<(), Box<dyn std::error::Error>>;
