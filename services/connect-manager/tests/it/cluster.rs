//! Distributed mode in-process: three workers of one cluster on the shared
//! broker (topics and group named for the test), one sftp-gateway, one
//! Postgres database. The kill -9 of a worker process is in
//! `crates/etlctl/tests/it/faults.rs`
//! (`kill_one_of_three_connect_manager_workers`); here a worker stops cleanly.

use std::{collections::BTreeSet, path::Path, time::Duration};

use connect_manager::{Config, Mode};
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
/// on all, on workers that are among `ms`; returns the workers running them.
async fn all_running(
    http: &reqwest::Client,
    ms: &[&Manager],
    name: &str,
    n: usize,
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
            return first.iter().map(|(_, _, w)| w.clone()).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {n} tasks of {name} RUNNING on {ids:?}, seen alike by every worker; last seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let sink_workers = all_running(&http, &all, &sink, 3).await;
    let source_workers = all_running(&http, &all, &source, 3).await;
    assert_eq!(
        sink_workers.len(),
        3,
        "three sink tasks on three workers spread over all of them"
    );
    assert_eq!(source_workers.len(), 3, "source tasks spread too");

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
    let r = http
        .put(rest(&workers[2], &format!("/connectors/{sink}/resume")))
        .send()
        .await
        .expect("resume");
    assert_eq!(r.status(), 202);
    all_running(&http, &all, &sink, 3).await;

    // A worker leaves: its tasks move to the other two within the session timeout.
    let gone = workers.pop().expect("a worker");
    let gone_id = gone.running().rest_addr.to_string();
    gone.stop().await;
    let left: Vec<&Manager> = workers.iter().collect();
    let sink_workers = all_running(&http, &left, &sink, 3).await;
    assert!(!sink_workers.contains(&gone_id));
    all_running(&http, &left, &source, 3).await;
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
