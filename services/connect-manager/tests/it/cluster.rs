//! Distributed mode in-process: three workers of one cluster on the shared
//! broker (topics and group named for the test), one sftp-gateway, one
//! Postgres database. The kill -9 of a worker process is in
//! `crates/etlctl/tests/it/faults.rs`
//! (`kill_one_of_three_connect_manager_workers`); here a worker stops cleanly.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use connect_manager::{Config, Mode};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{Chunk, Manager, Stack, WAIT, eventually};

/// A worker of the cluster `group` on `brokers`.
async fn worker(brokers: &str, group: &str, dir: &Path) -> Manager {
    let mut config = Config::ephemeral(brokers, dir);
    config.mode = Mode::Distributed;
    config.group_id = group.to_string();
    config.config_storage_topic = format!("{group}-configs");
    config.status_storage_topic = format!("{group}-status");
    config.offset_storage_topic = format!("{group}-offsets");
    config.assignment_topic = format!("{group}-assignments");
    Manager::start_with(config).await
}

fn rest(m: &Manager, path: &str) -> String {
    format!("http://{}{path}", m.running().rest_addr)
}

async fn get(http: &reqwest::Client, url: &str) -> Option<Value> {
    let r = http.get(url).send().await.ok()?;
    r.status().is_success().then_some(())?;
    r.json().await.ok()
}

/// The tasks of `name` as `(id, state, worker_id)`, as worker `m` shows them.
async fn tasks(
    http: &reqwest::Client,
    m: &Manager,
    name: &str,
) -> Option<Vec<(u64, String, String)>> {
    let status = get(http, &rest(m, &format!("/connectors/{name}/status"))).await?;
    status["tasks"]
        .as_array()?
        .iter()
        .map(|t| {
            Some((
                t["id"].as_u64()?,
                t["state"].as_str()?.to_string(),
                t["worker_id"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Waits until every worker in `ms` shows `n` RUNNING tasks of `name`, the same
/// on all, spread over `spread` workers that are among `ms`; returns them.
///
/// The spread is waited for, not taken from the first agreeing answer: a
/// worker that joins the group later than the others (its first metadata
/// did not list the assignment topic yet) gets its slots a rebalance later,
/// and until then the tasks rightly run on the others (CI saw 3 tasks on 2
/// of 3 workers there).
async fn all_running(
    http: &reqwest::Client,
    ms: &[&Manager],
    name: &str,
    n: usize,
    spread: usize,
) -> BTreeSet<String> {
    let ids: BTreeSet<String> = ms
        .iter()
        .map(|m| m.running().rest_addr.to_string())
        .collect();
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        seen.clear();
        for m in ms {
            seen.push(tasks(http, m, name).await);
        }
        if let Some(Some(first)) = seen.first()
            && seen.iter().all(|s| s.as_ref() == Some(first))
            && first.len() == n
            && first
                .iter()
                .all(|(_, state, w)| state == "RUNNING" && ids.contains(w))
        {
            let on: BTreeSet<String> = first.iter().map(|(_, _, w)| w.clone()).collect();
            if on.len() == spread {
                return on;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {n} tasks of {name} RUNNING on {spread} of {ids:?}, seen alike by every worker; last seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The last record of each task of `name` in the status topic, read from its
/// start to its end as an operator's console consumer would.
async fn topic_task_records(brokers: &str, topic: &str, name: &str) -> BTreeMap<u32, Value> {
    let (brokers, topic, prefix) = (
        brokers.to_string(),
        topic.to_string(),
        format!("status-task-{name}-"),
    );
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", testkit::unique_name("status-reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let partitions = metadata.topics()[0].partitions().len() as i32;
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .expect("watermarks");
            if high > 0 {
                ends.insert(p, high);
                tpl.add_partition_offset(&topic, p, Offset::Beginning)
                    .expect("partition");
            }
        }
        let mut states = BTreeMap::new();
        if ends.is_empty() {
            return states;
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !ends.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{topic} not read to its end in 20 s"
            );
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.expect("status record");
            if ends
                .get(&m.partition())
                .is_some_and(|&end| m.offset() + 1 >= end)
            {
                ends.remove(&m.partition());
            }
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let Some(task) = key
                .strip_prefix(&prefix)
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            match m.payload() {
                Some(v) => {
                    states.insert(task, serde_json::from_slice(v).expect("status JSON"));
                }
                None => {
                    states.remove(&task);
                }
            }
        }
        states
    })
    .await
    .expect("join")
}

/// The last `state` of each task of `name` in the status topic.
async fn topic_task_states(brokers: &str, topic: &str, name: &str) -> BTreeMap<u32, String> {
    topic_task_records(brokers, topic, name)
        .await
        .into_iter()
        .map(|(task, v)| (task, v["state"].as_str().unwrap_or_default().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_share_the_tasks_and_answer_alike() {
    let mut stack = Stack::start().await;
    // The standalone manager of the stack takes no part here.
    if let Some(m) = stack.manager.take() {
        m.stop().await;
    }
    let group = testkit::unique_name("cluster");
    let dirs: Vec<TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut workers = Vec::new();
    for d in &dirs {
        workers.push(worker(&stack.brokers, &group, d.path()).await);
    }
    let http = reqwest::Client::new();

    // Created through worker 0's REST API ...
    let (source, mut source_config) =
        stack.connector("sftp-source.json", &[("file.poll.interval.ms", "200")]);
    source_config.insert("tasks.max".into(), "3".into());
    let (sink, mut sink_config) = stack.connector("postgres-sink.json", &[]);
    sink_config.insert("tasks.max".into(), "3".into());
    for (name, config) in [(&source, &source_config), (&sink, &sink_config)] {
        let created = eventually("the cluster to take a connector", WAIT, || async {
            let r = http
                .post(rest(&workers[0], "/connectors"))
                .json(&json!({"name": name, "config": config}))
                .send()
                .await
                .ok()?;
            // 503 while the worker has not read the config topic yet.
            (r.status() != 503).then_some(r.status())
        })
        .await;
        assert_eq!(created, 201, "creating {name}");
    }
    // ... listed by the other two, with the same status.
    let both = BTreeSet::from([source.clone(), sink.clone()]);
    for m in &workers[1..] {
        // Each worker reads the config topic on its own: seconds at most.
        eventually(
            "the other workers to list both connectors",
            Duration::from_secs(10),
            || async {
                let list = get(&http, &rest(m, "/connectors")).await?;
                let names: BTreeSet<String> = list
                    .as_array()?
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                (names == both).then_some(())
            },
        )
        .await;
    }
    let all: Vec<&Manager> = workers.iter().collect();
    // Three sink tasks on three workers spread over all of them, source tasks too.
    all_running(&http, &all, &sink, 3, 3).await;
    all_running(&http, &all, &source, 3, 3).await;

    // Files land once each, whichever worker's source task claims them.
    let pg = stack.pg().await;
    let files = 12;
    let rows_per_file = 50;
    for i in 0..files {
        let chunk = Chunk::tricky(rows_per_file, &format!("f{i}"));
        stack
            .upload(&format!("part-{i:03}.tsv"), &chunk.tsv())
            .await;
    }
    stack
        .wait_for_rows(&pg, (files * rows_per_file) as i64)
        .await;
    for i in 0..files {
        stack
            .wait_for_file(&format!("finished/part-{i:03}.tsv"))
            .await;
    }

    // A pause through worker 1 is seen by worker 2; a resume through worker 2 by all.
    let r = http
        .put(rest(&workers[1], &format!("/connectors/{sink}/pause")))
        .send()
        .await
        .expect("pause");
    assert_eq!(r.status(), 202);
    eventually("worker 2 to show the sink PAUSED", WAIT, || async {
        let s = get(
            &http,
            &rest(&workers[2], &format!("/connectors/{sink}/status")),
        )
        .await?;
        (s["connector"]["state"] == "PAUSED").then_some(())
    })
    .await;
    // The status topic says so too, as Kafka Connect's would: each worker's
    // last word on the tasks it stopped (it said RUNNING until the resume).
    let status_topic = format!("{group}-status");
    eventually(
        "the status topic to say the sink's tasks are PAUSED",
        WAIT,
        || async {
            let states = topic_task_states(&stack.brokers, &status_topic, &sink).await;
            (states.len() == 3 && states.values().all(|s| s == "PAUSED")).then_some(())
        },
    )
    .await;
    let r = http
        .put(rest(&workers[2], &format!("/connectors/{sink}/resume")))
        .send()
        .await
        .expect("resume");
    assert_eq!(r.status(), 202);
    all_running(&http, &all, &sink, 3, 3).await;

    // Records cross: the worker a task left says UNASSIGNED after the task's
    // new worker said RUNNING (written here as that worker would). The task's
    // worker says RUNNING again, so no worker keeps showing it UNASSIGNED.
    let records = topic_task_records(&stack.brokers, &status_topic, &sink).await;
    let runs_0 = records[&0]["etl.worker"].clone();
    let mut late = records
        .values()
        .find(|r| r["etl.worker"] != runs_0)
        .expect("a sink task on another worker")
        .clone();
    late["state"] = json!("UNASSIGNED");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&status_topic)
                .key(&format!("status-task-{sink}-0"))
                .payload(&late.to_string()),
            Duration::from_secs(10),
        )
        .await
        .expect("the late record written");
    eventually(
        "the status topic to say task 0 is RUNNING again",
        WAIT,
        || async {
            let states = topic_task_states(&stack.brokers, &status_topic, &sink).await;
            (states.get(&0).map(String::as_str) == Some("RUNNING")).then_some(())
        },
    )
    .await;
    all_running(&http, &all, &sink, 3, 3).await;

    // A worker leaves: its tasks move to the other two within the session timeout.
    let gone = workers.pop().expect("a worker");
    let gone_id = gone.running().rest_addr.to_string();
    gone.stop().await;
    let left: Vec<&Manager> = workers.iter().collect();
    let sink_workers = all_running(&http, &left, &sink, 3, 2).await;
    assert!(!sink_workers.contains(&gone_id));
    all_running(&http, &left, &source, 3, 2).await;
    for i in files..files + 6 {
        let chunk = Chunk::tricky(rows_per_file, &format!("f{i}"));
        stack
            .upload(&format!("part-{i:03}.tsv"), &chunk.tsv())
            .await;
    }
    stack
        .wait_for_rows(&pg, ((files + 6) * rows_per_file) as i64)
        .await;
    let dupes: i64 = pg
        .query_one(
            "SELECT count(*) FROM (SELECT _etl_file, _etl_row FROM review GROUP BY 1, 2 HAVING count(*) > 1) d",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(dupes, 0);

    // Deleted through worker 1: gone from worker 0 too.
    let r = http
        .delete(rest(&workers[1], &format!("/connectors/{source}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 204);
    eventually(
        "worker 0 to forget the deleted source",
        Duration::from_secs(10),
        || async {
            let r = http
                .get(rest(&workers[0], &format!("/connectors/{source}")))
                .send()
                .await
                .ok()?;
            (r.status() == 404).then_some(())
        },
    )
    .await;
    for m in workers {
        tokio::time::timeout(Duration::from_secs(60), m.stop())
            .await
            .expect("worker stops");
    }
}
