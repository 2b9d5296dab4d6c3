//! The records of the config and status topics, in Kafka Connect's key and
//! value shapes, so an operator who knows Kafka Connect's topics can read ours
//! (`kafka-console-consumer --property print.key=true`) and tell what happened.
//!
//! Config topic (one partition: its order is the order of the changes):
//! - `connector-<name>` → `{"properties": {…}}`; a tombstone deletes it.
//! - `target-state-<name>` → `{"state": …, "state.v2": …}`: STARTED, PAUSED,
//!   STOPPED (`state` says PAUSED for STOPPED, as Kafka Connect writes it for
//!   older readers).
//! - `restart-connector-<name>` → `{"include-tasks": …, "only-failed": …}`.
//! - `etl-restart-task-<name>-<id>` → `{}`: one task's restart (Kafka Connect
//!   forwards that request to the task's worker instead; a record reaches it
//!   wherever it runs).
//!
//! Status topic: `status-task-<name>-<id>` → Kafka Connect's `{"state",
//! "trace", "worker_id", "generation"}`, plus `etl.worker` (the worker's
//! stable id, to tell a dead worker's last word from a live one's) and
//! `etl.metrics` (the task's counters, so every worker shows the same numbers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::registry::TargetState;

/// One change read from the config topic.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ConfigRecord {
    /// `None`: deleted.
    Connector {
        name: String,
        config: Option<BTreeMap<String, String>>,
    },
    /// `None`: forgotten with the connector.
    Target {
        name: String,
        target: Option<TargetState>,
    },
    Restart {
        name: String,
        include_tasks: bool,
        only_failed: bool,
    },
    RestartTask {
        name: String,
        task: u32,
    },
}

impl ConfigRecord {
    /// The record's key and value (None: a tombstone).
    pub(crate) fn encode(&self) -> (String, Option<Vec<u8>>) {
        let value = |v: Json| Some(v.to_string().into_bytes());
        match self {
            ConfigRecord::Connector { name, config } => (
                format!("connector-{name}"),
                config
                    .as_ref()
                    .and_then(|c| value(json!({ "properties": c }))),
            ),
            ConfigRecord::Target { name, target } => (
                format!("target-state-{name}"),
                target.and_then(|t| {
                    let v2 = target_name(t);
                    let v1 = if t == TargetState::Stopped {
                        "PAUSED"
                    } else {
                        v2
                    };
                    value(json!({ "state": v1, "state.v2": v2 }))
                }),
            ),
            ConfigRecord::Restart {
                name,
                include_tasks,
                only_failed,
            } => (
                format!("restart-connector-{name}"),
                value(json!({ "include-tasks": include_tasks, "only-failed": only_failed })),
            ),
            ConfigRecord::RestartTask { name, task } => {
                (format!("etl-restart-task-{name}-{task}"), value(json!({})))
            }
        }
    }

    /// A record read back; None for keys this version does not act on (Kafka
    /// Connect's `task-…` and `commit-…` records, say), which are skipped.
    pub(crate) fn decode(key: &str, value: Option<&[u8]>) -> Result<Option<Self>, String> {
        let json = match value {
            Some(v) => Some(
                serde_json::from_slice::<Json>(v)
                    .map_err(|e| format!("record {key:?} is not JSON: {e}"))?,
            ),
            None => None,
        };
        if let Some(name) = key.strip_prefix("connector-") {
            let config = match json {
                None => None,
                Some(v) => {
                    let props = v.get("properties").cloned().unwrap_or(Json::Null);
                    Some(
                        serde_json::from_value::<BTreeMap<String, String>>(props).map_err(|e| {
                            format!("record {key:?}: properties are not a string map: {e}")
                        })?,
                    )
                }
            };
            return Ok(Some(ConfigRecord::Connector {
                name: name.to_string(),
                config,
            }));
        }
        if let Some(name) = key.strip_prefix("target-state-") {
            let target = match json {
                None => None,
                Some(v) => {
                    let s = v
                        .get("state.v2")
                        .or_else(|| v.get("state"))
                        .and_then(Json::as_str)
                        .unwrap_or_default();
                    Some(
                        target_of(s)
                            .ok_or_else(|| format!("record {key:?}: unknown state {s:?}"))?,
                    )
                }
            };
            return Ok(Some(ConfigRecord::Target {
                name: name.to_string(),
                target,
            }));
        }
        if let Some(name) = key.strip_prefix("restart-connector-") {
            let Some(v) = json else { return Ok(None) };
            let flag = |k: &str| v.get(k).and_then(Json::as_bool).unwrap_or(false);
            return Ok(Some(ConfigRecord::Restart {
                name: name.to_string(),
                include_tasks: flag("include-tasks"),
                only_failed: flag("only-failed"),
            }));
        }
        if let Some(rest) = key.strip_prefix("etl-restart-task-") {
            if json.is_none() {
                return Ok(None);
            }
            let (name, task) = rest
                .rsplit_once('-')
                .and_then(|(n, t)| Some((n, t.parse::<u32>().ok()?)))
                .ok_or_else(|| format!("record {key:?}: no task id"))?;
            return Ok(Some(ConfigRecord::RestartTask {
                name: name.to_string(),
                task,
            }));
        }
        Ok(None)
    }
}

fn target_name(t: TargetState) -> &'static str {
    match t {
        TargetState::Started => "STARTED",
        TargetState::Paused => "PAUSED",
        TargetState::Stopped => "STOPPED",
    }
}

fn target_of(s: &str) -> Option<TargetState> {
    match s {
        "STARTED" => Some(TargetState::Started),
        "PAUSED" => Some(TargetState::Paused),
        "STOPPED" => Some(TargetState::Stopped),
        _ => None,
    }
}

/// A task's status as its worker last published it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskStatusRecord {
    pub(crate) state: String,
    #[serde(default)]
    pub(crate) trace: Option<String>,
    /// The worker's REST `host:port`, as Kafka Connect names workers.
    pub(crate) worker_id: String,
    #[serde(default)]
    pub(crate) generation: u64,
    /// The worker's stable id (see `TaskCluster::worker`).
    #[serde(rename = "etl.worker", default)]
    pub(crate) worker: String,
    #[serde(rename = "etl.metrics", default)]
    pub(crate) metrics: Metrics,
}

/// A task's counters, as `status::StatusSnapshot` holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Metrics {
    pub(crate) files_finished: u64,
    pub(crate) files_failed: u64,
    pub(crate) records: u64,
    pub(crate) skipped: u64,
    pub(crate) bytes: u64,
    pub(crate) lag: u64,
    pub(crate) stalled: bool,
    pub(crate) halted: bool,
    pub(crate) last_error: String,
}

pub(crate) fn task_status_key(name: &str, task: u32) -> String {
    format!("status-task-{name}-{task}")
}

/// `(connector, task)` of a status key; None for other keys
/// (`status-connector-…`, Kafka Connect's topic statuses).
pub(crate) fn parse_task_status_key(key: &str) -> Option<(String, u32)> {
    let rest = key.strip_prefix("status-task-")?;
    let (name, task) = rest.rsplit_once('-')?;
    Some((name.to_string(), task.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(r: ConfigRecord) {
        let (key, value) = r.encode();
        assert_eq!(
            ConfigRecord::decode(&key, value.as_deref()).expect("decodes"),
            Some(r)
        );
    }

    #[test]
    fn config_records_round_trip_in_kafka_connect_shapes() {
        let config: BTreeMap<String, String> = [("connector.class", "JdbcSinkConnector")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        round_trip(ConfigRecord::Connector {
            name: "pg-sink".into(),
            config: Some(config.clone()),
        });
        round_trip(ConfigRecord::Connector {
            name: "pg-sink".into(),
            config: None,
        });
        for t in [
            TargetState::Started,
            TargetState::Paused,
            TargetState::Stopped,
        ] {
            round_trip(ConfigRecord::Target {
                name: "a-b".into(),
                target: Some(t),
            });
        }
        round_trip(ConfigRecord::Restart {
            name: "x".into(),
            include_tasks: true,
            only_failed: false,
        });
        round_trip(ConfigRecord::RestartTask {
            name: "my-sink".into(),
            task: 12,
        });
        let (key, value) = ConfigRecord::Connector {
            name: "s".into(),
            config: Some(config),
        }
        .encode();
        assert_eq!(key, "connector-s");
        assert_eq!(
            String::from_utf8(value.expect("value")).expect("utf8"),
            r#"{"properties":{"connector.class":"JdbcSinkConnector"}}"#
        );
    }

    #[test]
    fn records_written_by_kafka_connect_are_read() {
        // Kafka Connect 3.5+ writes both; older versions only `state`.
        let r = ConfigRecord::decode(
            "target-state-s",
            Some(br#"{"state":"PAUSED","state.v2":"STOPPED"}"#),
        )
        .expect("decodes");
        assert_eq!(
            r,
            Some(ConfigRecord::Target {
                name: "s".into(),
                target: Some(TargetState::Stopped)
            })
        );
        let r = ConfigRecord::decode("target-state-s", Some(br#"{"state":"PAUSED"}"#))
            .expect("decodes");
        assert!(matches!(
            r,
            Some(ConfigRecord::Target {
                target: Some(TargetState::Paused),
                ..
            })
        ));
        // Task configs and commits are Kafka Connect's own bookkeeping.
        assert_eq!(
            ConfigRecord::decode("task-s-0", Some(b"{}")).expect("skipped"),
            None
        );
        assert_eq!(
            ConfigRecord::decode("commit-s", Some(b"{}")).expect("skipped"),
            None
        );
        assert!(ConfigRecord::decode("connector-s", Some(b"not json")).is_err());
    }

    #[test]
    fn task_status_keys_keep_dashes_in_connector_names() {
        let key = task_status_key("pg-sink-2", 11);
        assert_eq!(key, "status-task-pg-sink-2-11");
        assert_eq!(
            parse_task_status_key(&key),
            Some(("pg-sink-2".to_string(), 11))
        );
        assert_eq!(parse_task_status_key("status-connector-pg"), None);
    }
}
