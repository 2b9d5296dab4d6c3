//! Distributed mode: several connect-managers started with the same
//! `--group-id` form one cluster, coordinated by Kafka alone, as Kafka
//! Connect's workers are.

use std::collections::BTreeSet;

use tokio::sync::watch;

/// What a task needs to know about the cluster it runs in (None in standalone mode).
#[derive(Clone, Debug)]
#[expect(
    dead_code,
    reason = "read by the source and set by the registry in distributed mode (next commits)"
)]
pub(crate) struct TaskCluster {
    /// This worker's stable id (from its data directory): the same after a
    /// restart, different for every worker. Names the worker's file claims.
    pub(crate) worker: String,
    /// The ids of the workers in the worker group now (Kafka's view of who is
    /// alive), updated on every rebalance. A claim held by a worker not in
    /// this set belongs to a dead worker and may be taken over.
    pub(crate) live: watch::Receiver<BTreeSet<String>>,
    /// Kafka bootstrap servers.
    pub(crate) brokers: String,
    /// Kafka Connect's `offset.storage.topic`: where the source keeps its
    /// offsets (files sent, pinned schema) so every worker sees them.
    pub(crate) offset_topic: String,
}
