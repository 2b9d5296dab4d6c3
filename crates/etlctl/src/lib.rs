//! `etlctl`: the operator CLI of file-etl and the supervisor of its local stack.
//!
//! `etlctl up` starts `etlctl supervise` in the background; the supervisor runs a
//! private Postgres cluster, a Kafka broker and the four services as child processes,
//! writes where they listen to `.etl/stack.json`, runs the embedded trace collector
//! (OTLP + Jaeger UI), restarts what crashes and stops it
//! all on SIGTERM (`etlctl down`). Every other command reads `stack.json` to find the
//! stack: `status` probes it, `connectors` configures connect-manager, `demo` runs the
//! whole pipeline and reports what the verifier proved.
//!
//! # Layout
//! - [`cli`]: the commands and flags (clap, env twins).
//! - [`stack`]: the stack directory and its secrets, the [`stack::StackPlan`] (ports,
//!   endpoints), each service's environment, and the `stack.json` model.
//! - [`supervise`]: the supervisor: Postgres and the broker (started by `etl-stack`),
//!   the services, restarts, ordered stop.
//! - [`up`]: `up` (start the supervisor detached, wait for health) and `down`.
//! - [`status`]: health probes and the status table.
//! - [`workers`]: connect-manager's workers and the connector tasks each runs (from a
//!   worker's REST API), for `status`.
//! - [`connectors`]: connector files with placeholders → `CreateConnector`.
//! - [`generate`]: the demo's input, from `etl-datagen` (the extractor's generator).
//! - [`demo`]: the end-to-end run: StartRun, WatchRun, WatchReport.
//! - [`report`]: the demo report: pass/fail decision, text and `report.json`.
//! - [`endpoints`]: the services' URLs, local (`stack.json`) or external (flags).
//! - [`trace`]: `etlctl trace`: a file's trace from Jaeger, as a waterfall.
//! - [`process`]: signalling and watching processes by pid.

pub mod cli;
pub mod connectors;
pub mod demo;
pub mod endpoints;
pub mod generate;
pub mod process;
pub mod report;
pub mod stack;
pub mod status;
pub mod supervise;
pub mod trace;
pub mod up;
pub mod workers;
