//! connect-manager's workers as `etlctl status` shows them: each worker (one standalone
//! process, or the workers of a distributed cluster, `--workers`) with its addresses,
//! health, pid and restarts, and which connector tasks it runs.
//!
//! Where a task runs is connect-manager's to say, not the supervisor's: in distributed
//! mode Kafka shares the tasks out and moves them when a worker joins or dies. Any live
//! worker answers for the whole cluster on its Kafka-Connect REST API,
//! `GET /connectors?expand=status`, where every task carries the `worker_id` of the
//! worker running it — that worker's REST `host:port`, as in Kafka Connect — so one call
//! to one worker is enough, and the tasks are grouped by matching `worker_id` against
//! our workers' REST addresses. A task no worker runs is UNASSIGNED; one whose worker is
//! none of this stack's (another cluster member, a stale status) is listed with that
//! worker's id.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::stack::{ConnectMode, ServiceInfo, StackInfo};
use crate::status::{Component, Health, host_port};

/// How long one worker's REST API may take to answer (it is on loopback).
const REST_TIMEOUT: Duration = Duration::from_secs(3);

/// One connector task and where connect-manager says it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskPlacement {
    pub connector: String,
    /// `source` or `sink`: the connector's `type` in its status (empty when the
    /// answer has none).
    pub kind: String,
    pub task: u32,
    /// Kafka Connect's task state: RUNNING, UNASSIGNED, PAUSED, FAILED, …
    pub state: String,
    /// The REST `host:port` of the worker running it; empty when none does.
    pub worker_id: String,
    /// What the task has moved (connect-manager's `metrics.tasks[].records`: a
    /// source task's records sent, a sink task's rows written). A sink task that
    /// wrote nothing may not hold a partition yet. None when the worker does not
    /// report it (another Kafka Connect).
    pub records: Option<u64>,
}

impl TaskPlacement {
    /// `postgres-sink/1`, with its state when it is not RUNNING.
    fn label(&self) -> String {
        if self.state == "RUNNING" {
            format!("{}/{}", self.connector, self.task)
        } else {
            format!("{}/{} {}", self.connector, self.task, self.state)
        }
    }

    /// Not running anywhere: UNASSIGNED (whatever worker last reported it), or no
    /// worker named at all.
    fn unassigned(&self) -> bool {
        self.state.eq_ignore_ascii_case("UNASSIGNED") || self.worker_id.trim().is_empty()
    }
}

/// One entry of `GET /connectors?expand=status`: only what placement needs, so that
/// connect-manager may add fields.
#[derive(Deserialize)]
struct Expanded {
    status: Option<ConnectorStatus>,
}

#[derive(Deserialize)]
struct ConnectorStatus {
    #[serde(default)]
    tasks: Vec<TaskStatus>,
    #[serde(default, rename = "type")]
    kind: String,
    /// connect-manager's own counters (Kafka Connect has none here).
    #[serde(default)]
    metrics: Option<ConnectorMetrics>,
}

#[derive(Deserialize)]
struct ConnectorMetrics {
    #[serde(default)]
    tasks: Vec<TaskMetrics>,
}

#[derive(Deserialize)]
struct TaskMetrics {
    id: u32,
    #[serde(default)]
    records: Option<u64>,
}

#[derive(Deserialize)]
struct TaskStatus {
    id: u32,
    #[serde(default)]
    state: String,
    #[serde(default)]
    worker_id: Option<String>,
}

/// The tasks of a `GET /connectors?expand=status` answer, by connector name and task id.
pub fn parse_tasks(body: &[u8]) -> Result<Vec<TaskPlacement>, String> {
    let connectors: BTreeMap<String, Expanded> = serde_json::from_slice(body)
        .map_err(|e| format!("not the answer of GET /connectors?expand=status: {e}"))?;
    let mut tasks: Vec<TaskPlacement> = connectors
        .into_iter()
        .flat_map(|(name, expanded)| {
            let status = expanded.status.unwrap_or(ConnectorStatus {
                tasks: Vec::new(),
                kind: String::new(),
                metrics: None,
            });
            let metrics = status.metrics.map(|m| m.tasks).unwrap_or_default();
            let kind = status.kind;
            status.tasks.into_iter().map(move |t| TaskPlacement {
                connector: name.clone(),
                kind: kind.clone(),
                task: t.id,
                state: t.state,
                worker_id: t.worker_id.unwrap_or_default(),
                records: metrics
                    .iter()
                    .find(|m| m.id == t.id)
                    .and_then(|m| m.records),
            })
        })
        .collect();
    tasks.sort_by(|a, b| (&a.connector, a.task).cmp(&(&b.connector, b.task)));
    Ok(tasks)
}

/// Whether the `worker_id` a task reports is the worker whose REST API is at
/// `rest_url`. Both are `host:port`; loopback names (`127.0.0.1`, `localhost`, `::1`,
/// and `0.0.0.0`, which a worker bound to every interface may report) are one host.
pub fn same_worker(worker_id: &str, rest_url: &str) -> bool {
    let parse = |s: &str| host_port(s).and_then(|hp| etl_core::net::HostPort::parse(&hp, 0).ok());
    let (Some(task), Some(ours)) = (parse(worker_id), parse(rest_url)) else {
        return false;
    };
    let local = |host: &str| {
        matches!(
            host.to_ascii_lowercase().as_str(),
            "127.0.0.1" | "localhost" | "::1" | "0.0.0.0" | "::"
        )
    };
    task.port == ours.port
        && (task.host.eq_ignore_ascii_case(&ours.host) || (local(&task.host) && local(&ours.host)))
}

/// The tasks grouped by where they run: per worker (in the order of `rest_urls`),
/// unassigned, and on workers that are not ours.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub by_worker: Vec<Vec<TaskPlacement>>,
    pub unassigned: Vec<TaskPlacement>,
    pub elsewhere: Vec<TaskPlacement>,
}

/// Groups `tasks` by the worker running each; `rest_urls` are our workers' REST URLs.
pub fn place(tasks: Vec<TaskPlacement>, rest_urls: &[String]) -> Placement {
    let mut placement = Placement {
        by_worker: vec![Vec::new(); rest_urls.len()],
        ..Placement::default()
    };
    for task in tasks {
        if task.unassigned() {
            placement.unassigned.push(task);
        } else if let Some(k) = rest_urls
            .iter()
            .position(|url| same_worker(&task.worker_id, url))
        {
            placement.by_worker[k].push(task);
        } else {
            placement.elsewhere.push(task);
        }
    }
    placement
}

/// One worker, as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerView {
    pub name: String,
    pub health: Health,
    pub grpc_url: String,
    pub rest_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Its tasks; empty also when no worker's REST API answered (see `tasks_error`).
    pub tasks: Vec<TaskPlacement>,
}

/// connect-manager in `status`: the mode, every worker and where each task runs.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectView {
    pub mode: ConnectMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    pub workers: Vec<WorkerView>,
    /// The REST URL whose answer the tasks come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_from: Option<String>,
    /// Why the tasks are unknown: no worker's REST API answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks_error: Option<String>,
    /// Tasks no worker runs (UNASSIGNED).
    pub unassigned: Vec<TaskPlacement>,
    /// Tasks on a worker that is not one of this stack's.
    pub elsewhere: Vec<TaskPlacement>,
}

/// The REST URL of a connect-manager entry: its own, else (a `stack.json` of an etlctl
/// from before workers) the stack's.
fn rest_url_of(info: &StackInfo, worker: &ServiceInfo) -> String {
    worker
        .rest_url
        .clone()
        .unwrap_or_else(|| info.rest_url.clone())
}

/// Assembles the view from `stack.json`, the probed `components` (for each worker's
/// health) and the tasks (`Ok((url that answered, tasks))`, or why none did).
pub fn view(
    info: &StackInfo,
    components: &[Component],
    tasks: Result<(String, Vec<TaskPlacement>), String>,
) -> ConnectView {
    let workers = info.connect_workers();
    let rest_urls: Vec<String> = workers.iter().map(|w| rest_url_of(info, w)).collect();
    let (tasks_from, tasks_error, placement) = match tasks {
        Ok((from, tasks)) => (Some(from), None, place(tasks, &rest_urls)),
        Err(e) => (
            None,
            Some(e),
            Placement {
                by_worker: vec![Vec::new(); rest_urls.len()],
                ..Placement::default()
            },
        ),
    };
    let workers = workers
        .iter()
        .zip(rest_urls)
        .zip(placement.by_worker)
        .map(|((w, rest_url), tasks)| {
            let name = w.display_name();
            let health = components
                .iter()
                .find(|c| c.name == name)
                .map_or(Health::Unreachable, |c| c.health);
            WorkerView {
                name,
                health,
                grpc_url: w.grpc_url.clone(),
                rest_url,
                pid: w.pid,
                restarts: w.restarts,
                tasks,
            }
        })
        .collect();
    ConnectView {
        mode: info.connect.mode,
        group_id: info.connect.group_id.clone(),
        workers,
        tasks_from,
        tasks_error,
        unassigned: placement.unassigned,
        elsewhere: placement.elsewhere,
    }
}

/// Asks the workers' REST APIs, healthy ones first, for every connector's status until
/// one answers. `token`: the stack's API token (every REST call needs it).
pub async fn fetch_tasks(
    workers: &[WorkerView],
    token: Option<&etl_service::auth::Token>,
) -> Result<(String, Vec<TaskPlacement>), String> {
    let client = reqwest::Client::builder()
        .connect_timeout(REST_TIMEOUT)
        .timeout(REST_TIMEOUT)
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let mut order: Vec<&WorkerView> = workers.iter().collect();
    order.sort_by_key(|w| w.health != Health::Healthy);
    let mut failures = Vec::new();
    for worker in order {
        let url = format!(
            "{}/connectors?expand=status",
            worker.rest_url.trim_end_matches('/')
        );
        let mut request = client.get(&url);
        if let Some(token) = token {
            request = request.header("authorization", token.header_value());
        }
        let answer = async {
            let response = request.send().await.map_err(|e| root_cause(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(format!("HTTP {status}"));
            }
            let body = response.bytes().await.map_err(|e| root_cause(&e))?;
            parse_tasks(&body)
        };
        match answer.await {
            Ok(tasks) => return Ok((worker.rest_url.clone(), tasks)),
            Err(e) => failures.push(format!("{}: {e}", worker.rest_url)),
        }
    }
    Err(if failures.is_empty() {
        "no connect-manager worker in the stack".to_owned()
    } else {
        format!("no worker's REST API answered ({})", failures.join("; "))
    })
}

/// The innermost cause of a reqwest error ("Connection refused", "operation timed
/// out"): its own message ("error sending request for url …") says nothing the
/// worker's URL beside it does not.
fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The workers table and where the tasks run, after the components' table.
pub fn render(view: &ConnectView) -> String {
    let mut out = String::new();
    let count = view.workers.len();
    let mode = match (&view.mode, &view.group_id) {
        (ConnectMode::Distributed, Some(group)) => format!("distributed, group {group}"),
        (mode, _) => mode.to_string(),
    };
    let from = match (&view.tasks_from, &view.tasks_error) {
        (Some(url), _) => format!("; tasks as {url} reports them"),
        (None, Some(e)) => format!("; tasks unknown: {e}"),
        (None, None) => String::new(),
    };
    let _ = writeln!(
        out,
        "connect-manager: {mode}, {count} worker{}{from}",
        if count == 1 { "" } else { "s" }
    );
    let addr = |url: &str| host_port(url).unwrap_or_else(|| url.to_owned());
    let rows: Vec<[String; 7]> = view
        .workers
        .iter()
        .map(|w| {
            let tasks = if view.tasks_from.is_none() {
                "?".to_owned()
            } else if w.tasks.is_empty() {
                "—".to_owned()
            } else {
                w.tasks
                    .iter()
                    .map(TaskPlacement::label)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            [
                w.name.clone(),
                w.health.as_str().to_owned(),
                w.pid.map_or("—".to_owned(), |p| p.to_string()),
                w.restarts.to_string(),
                addr(&w.grpc_url),
                addr(&w.rest_url),
                tasks,
            ]
        })
        .collect();
    let header = [
        "WORKER", "HEALTH", "PID", "RESTARTS", "GRPC", "REST", "TASKS",
    ]
    .map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 7]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        text.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(&header));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    let list = |tasks: &[TaskPlacement]| {
        tasks
            .iter()
            .map(TaskPlacement::label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !view.unassigned.is_empty() {
        let _ = writeln!(
            out,
            "unassigned (no worker runs them): {}",
            list(&view.unassigned)
        );
    }
    let mut elsewhere: BTreeMap<&str, Vec<TaskPlacement>> = BTreeMap::new();
    for task in &view.elsewhere {
        elsewhere
            .entry(task.worker_id.as_str())
            .or_default()
            .push(task.clone());
    }
    for (worker, tasks) in elsewhere {
        let _ = writeln!(
            out,
            "on worker {worker}, not one of this stack's: {}",
            list(&tasks)
        );
    }
    if view.tasks_from.is_some() && no_tasks(view) {
        let _ = writeln!(
            out,
            "no connectors yet (`etlctl connectors apply`, or a demo, creates them)"
        );
    }
    out
}

fn no_tasks(view: &ConnectView) -> bool {
    view.workers.iter().all(|w| w.tasks.is_empty())
        && view.unassigned.is_empty()
        && view.elsewhere.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::plan::test_plan;
    use std::path::PathBuf;

    /// What a worker of a three-worker cluster answers (Kafka Connect's shape, plus
    /// connect-manager's `metrics`).
    const EXPANDED: &str = r#"{
      "sftp-csv-source": {"status": {"name": "sftp-csv-source", "type": "source",
        "connector": {"state": "RUNNING", "worker_id": "127.0.0.1:8083"},
        "tasks": [{"id": 1, "state": "RUNNING", "worker_id": "127.0.0.1:8085"},
                  {"id": 0, "state": "RUNNING", "worker_id": "127.0.0.1:8083"},
                  {"id": 2, "state": "UNASSIGNED", "worker_id": "127.0.0.1:8084"}],
        "metrics": {"records": 10, "tasks": [{"id": 0, "records": 7}, {"id": 1, "records": 3}]}}},
      "postgres-sink": {"status": {"name": "postgres-sink", "type": "sink",
        "connector": {"state": "RUNNING", "worker_id": "127.0.0.1:8084"},
        "tasks": [{"id": 0, "state": "RUNNING", "worker_id": "localhost:8084"},
                  {"id": 1, "state": "FAILED", "worker_id": "127.0.0.1:8083", "trace": "boom"},
                  {"id": 2, "state": "RUNNING", "worker_id": "10.0.0.9:8083"},
                  {"id": 3, "state": "RUNNING", "worker_id": null}]}},
      "info-only": {"info": {"name": "info-only"}}
    }"#;

    #[test]
    fn the_expanded_status_is_read_as_tasks_in_order() {
        let tasks = parse_tasks(EXPANDED.as_bytes()).expect("parses");
        let labels: Vec<String> = tasks.iter().map(TaskPlacement::label).collect();
        assert_eq!(
            labels,
            [
                "postgres-sink/0",
                "postgres-sink/1 FAILED",
                "postgres-sink/2",
                "postgres-sink/3",
                "sftp-csv-source/0",
                "sftp-csv-source/1",
                "sftp-csv-source/2 UNASSIGNED",
            ]
        );
        assert_eq!(tasks[3].worker_id, "");
        assert_eq!(
            (tasks[0].kind.as_str(), tasks[4].kind.as_str()),
            ("sink", "source")
        );
        let records: Vec<Option<u64>> = tasks.iter().map(|t| t.records).collect();
        assert_eq!(records, [None, None, None, None, Some(7), Some(3), None]);
        assert!(parse_tasks(b"[\"postgres-sink\"]").is_err(), "not expanded");
        assert_eq!(parse_tasks(b"{}").expect("no connectors"), []);
    }

    #[test]
    fn worker_ids_match_our_rest_addresses() {
        assert!(same_worker("127.0.0.1:8084", "http://127.0.0.1:8084"));
        assert!(same_worker("localhost:8084", "http://127.0.0.1:8084"));
        assert!(same_worker("0.0.0.0:8084", "http://127.0.0.1:8084/"));
        assert!(!same_worker("127.0.0.1:8085", "http://127.0.0.1:8084"));
        assert!(!same_worker("10.0.0.9:8084", "http://127.0.0.1:8084"));
        assert!(same_worker("cm-2:8083", "http://CM-2:8083"));
        assert!(!same_worker("", "http://127.0.0.1:8084"));
    }

    #[test]
    fn tasks_are_grouped_by_the_worker_running_them() {
        let rest: Vec<String> = (0..3)
            .map(|k| format!("http://127.0.0.1:{}", 8083 + k))
            .collect();
        let placement = place(parse_tasks(EXPANDED.as_bytes()).expect("parses"), &rest);
        let ids = |tasks: &[TaskPlacement]| -> Vec<String> {
            tasks
                .iter()
                .map(|t| format!("{}/{}", t.connector, t.task))
                .collect()
        };
        assert_eq!(
            placement
                .by_worker
                .iter()
                .map(|t| ids(t))
                .collect::<Vec<_>>(),
            [
                vec!["postgres-sink/1", "sftp-csv-source/0"],
                vec!["postgres-sink/0"],
                vec!["sftp-csv-source/1"],
            ]
        );
        // UNASSIGNED whatever worker last reported it, and a task with no worker.
        assert_eq!(
            ids(&placement.unassigned),
            ["postgres-sink/3", "sftp-csv-source/2"]
        );
        assert_eq!(ids(&placement.elsewhere), ["postgres-sink/2"]);
    }

    fn three_workers() -> (StackInfo, Vec<Component>) {
        let mut plan = test_plan("/x");
        plan.connect_workers = 3;
        let mut info = plan.stack_info(1, 2);
        let components = info
            .connect_workers()
            .iter()
            .map(|w| Component {
                name: w.display_name(),
                health: Health::Healthy,
                endpoint: String::new(),
                log: PathBuf::new(),
                pid: None,
                restarts: 0,
                last_exit: None,
            })
            .collect();
        for (k, w) in info
            .services
            .iter_mut()
            .filter(|s| s.worker.is_some())
            .enumerate()
        {
            w.pid = Some(4100 + k as u32);
            w.restarts = u32::from(k == 1);
        }
        (info, components)
    }

    #[test]
    fn status_lists_every_worker_with_its_tasks() {
        let (info, components) = three_workers();
        let tasks = parse_tasks(EXPANDED.as_bytes()).expect("parses");
        let view = view(
            &info,
            &components,
            Ok(("http://127.0.0.1:8083".to_owned(), tasks)),
        );
        let text = render(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "connect-manager: distributed, group connect-cluster, 3 workers; tasks as http://127.0.0.1:8083 reports them"
        );
        assert!(lines[1].starts_with("WORKER "), "{text}");
        assert!(
            lines[2].starts_with("connect-manager-0  healthy  4100")
                && lines[2].contains("127.0.0.1:50053")
                && lines[2].contains("127.0.0.1:8083")
                && lines[2].ends_with("postgres-sink/1 FAILED, sftp-csv-source/0"),
            "{text}"
        );
        assert!(
            lines[3].contains("127.0.0.1:50055") && lines[3].ends_with("postgres-sink/0"),
            "{text}"
        );
        assert!(lines[4].ends_with("sftp-csv-source/1"), "{text}");
        assert!(
            text.contains(
                "unassigned (no worker runs them): postgres-sink/3, sftp-csv-source/2 UNASSIGNED"
            ),
            "{text}"
        );
        assert!(
            text.contains("on worker 10.0.0.9:8083, not one of this stack's: postgres-sink/2"),
            "{text}"
        );
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["mode"], "distributed");
        assert_eq!(json["workers"][1]["rest_url"], "http://127.0.0.1:8084");
        assert_eq!(json["workers"][1]["restarts"], 1);
        assert_eq!(
            json["workers"][2]["tasks"][0]["connector"],
            "sftp-csv-source"
        );
    }

    #[test]
    fn one_standalone_worker_and_no_answer_are_said_plainly() {
        let info = test_plan("/x").stack_info(1, 2);
        let view = view(&info, &[], Ok(("http://127.0.0.1:8083".to_owned(), vec![])));
        let text = render(&view);
        assert!(
            text.starts_with("connect-manager: standalone, 1 worker; tasks as"),
            "{text}"
        );
        assert!(text.contains("\nconnect-manager  unreachable  —"), "{text}");
        assert!(text.contains("no connectors yet"), "{text}");

        let view = super::view(&info, &[], Err("no worker's REST API answered".to_owned()));
        let text = render(&view);
        assert!(
            text.contains("tasks unknown: no worker's REST API answered"),
            "{text}"
        );
        assert!(
            text.lines().nth(2).is_some_and(|l| l.ends_with('?')),
            "{text}"
        );
    }
}
