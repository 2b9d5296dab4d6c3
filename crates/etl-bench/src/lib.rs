//! etl-bench: measures file-etl on the local stack the way a user runs it —
//! the release `etlctl` starts a private stack (own directory, own ports), the
//! demo pushes 100,000 rows through it — and sets every figure beside a floor
//! measured in the same run, on the same broker, storage, Postgres and machine.
//! One table on stdout, the same figures in `bench.json`; the goals are
//! evaluated and reported, never asserted (tests check behaviour, benchmarks
//! measure).
//!
//! # Layout, in the order a run goes
//! - [`run`]: the command line ([`run::Config`]) and the sequence per storage:
//!   first `up` (cold), `up` again (timed), warm-up (connectors applied, one
//!   file through), burst, floors, steady, samples, `down` — a stack is
//!   stopped whatever happens; then the scale-out series: the burst (and a
//!   short steady phase) on a fresh stack per connect-manager worker count
//!   (`etlctl up --workers N`).
//! - [`stack`]: drives `etlctl up`/`demo`/`down` on a private [`stack::Ports`]
//!   block; reads `stack.json` (endpoints, pids) and `report.json`.
//! - [`burst`]: the demo end to end, and each stage's window on the StartRun
//!   timeline: the extractor's report, the spans in the stack's Jaeger,
//!   Postgres' commit timestamps, the records' CreateTime.
//! - [`floors`]: the same records produced and consumed raw with rdkafka, the
//!   same rows in one binary `COPY`, the extractor alone on the same input.
//! - [`steady`]: 100-row chunk files at 10 files/s over SFTP; latency from the
//!   upload's close to the commit of the file's rows.
//! - [`resources`]: peak RSS (VmHWM) and CPU (utime + stime) from `/proc`.
//! - [`report`]: `bench.json`, the table, the goals, the scale-out rows.
//! - [`error`]: the crate's [`Error`].

pub mod burst;
pub mod error;
pub mod floors;
pub mod report;
pub mod resources;
pub mod run;
pub mod stack;
pub mod steady;

pub use error::{Error, Result};
pub use run::{Config, run};
