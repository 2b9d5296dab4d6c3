//! `etlctl up --workers N`: several connect-manager workers under the supervisor, each
//! with its own ports, data directory and log, each restarted on its own; `status`
//! listing them with the tasks each runs. The first test uses fake service binaries
//! (what the supervisor does); the second the real ones (what connect-manager's
//! distributed mode does with them).

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::helpers::{
    Down, TestStack, args, etlctl, fake_services, require_binaries, run, signal, stderr, stdout,
    terminate_supervisor, tree, wait_until,
};

const WORKERS: u16 = 3;

/// Worker `k`'s entry of `stack.json`.
fn worker(info: &serde_json::Value, k: u16) -> Option<&serde_json::Value> {
    info["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "connect-manager" && s["worker"] == k)
}

fn pid_of(entry: &serde_json::Value) -> Option<u64> {
    (entry["state"] == "running")
        .then(|| entry["pid"].as_u64())
        .flatten()
}

/// The supervisor in the foreground with fake binaries and `--workers 3`: every worker
/// gets its own listeners, data directory, log and the cluster's mode and group; a
/// worker killed with SIGKILL is restarted alone; `up` with another worker count is
/// refused while the stack runs; SIGTERM stops every worker.
#[test]
fn each_worker_is_supervised_on_its_own() {
    let stack = TestStack::with_workers(WORKERS);
    let bin = stack.tmp.path().join("bin");
    fake_services(&bin, &[]);
    let log = std::fs::File::create(stack.tmp.path().join("supervisor.out")).expect("log");
    let mut supervise = args(&[
        "supervise",
        "--no-tracing",
        "--bin-dir",
        &bin.display().to_string(),
    ]);
    supervise.extend(stack.stack_args());
    let mut supervisor: Child = etlctl()
        .args(&supervise)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn supervisor");
    let running = |k: u16| {
        stack
            .stack_json()
            .and_then(|info| worker(&info, k).and_then(pid_of))
    };
    wait_until("three workers running", Duration::from_secs(90), || {
        (0..WORKERS).all(|k| running(k).is_some())
    });

    let info = stack.stack_json().expect("stack.json");
    assert_eq!(info["connect"]["mode"], "distributed");
    assert_eq!(info["connect"]["workers"], WORKERS);
    for k in 0..WORKERS {
        let (grpc, rest) = if k == 0 {
            (stack.base_port + 2, stack.rest_port)
        } else {
            (stack.base_port + 3 + k, stack.rest_port + k)
        };
        let entry = worker(&info, k).expect("worker entry");
        assert_eq!(entry["grpc_url"], format!("http://127.0.0.1:{grpc}"));
        assert_eq!(entry["rest_url"], format!("http://127.0.0.1:{rest}"));
        let data = stack.dir().join(format!("connect-{k}"));
        let env_file = data.join("env.txt");
        wait_until(
            &format!("worker {k}'s environment"),
            Duration::from_secs(10),
            || std::fs::read_to_string(&env_file).is_ok_and(|t| t.contains("ETL_MODE")),
        );
        let env = std::fs::read_to_string(&env_file).expect("env");
        for expected in [
            format!("ETL_GRPC_ADDR=127.0.0.1:{grpc}"),
            format!("ETL_REST_ADDR=127.0.0.1:{rest}"),
            format!("ETL_DATA_DIR={}", data.display()),
            "ETL_MODE=distributed".to_owned(),
            "ETL_GROUP_ID=connect-cluster".to_owned(),
        ] {
            assert!(
                env.contains(&expected),
                "worker {k}: {expected} not in:\n{env}"
            );
        }
        assert!(
            stack
                .dir()
                .join(format!("logs/connect-manager-{k}.log"))
                .is_file(),
            "worker {k}'s own log"
        );
    }
    // The standalone connect-manager's directory is not a worker's.
    assert!(!stack.dir().join("connect/env.txt").exists());
    // Kept for the next `up`, which says when the mode changed.
    assert_eq!(
        std::fs::read_to_string(stack.dir().join("connect-workers"))
            .ok()
            .as_deref(),
        Some("3\n")
    );

    // SIGKILL one worker: the supervisor restarts it, and only it.
    let before: Vec<u64> = (0..WORKERS).map(|k| running(k).expect("pid")).collect();
    signal(before[1], "KILL");
    wait_until("worker 1 restarted", Duration::from_secs(30), || {
        stack.stack_json().is_some_and(|info| {
            worker(&info, 1).is_some_and(|w| {
                w["restarts"] == 1 && pid_of(w).is_some_and(|pid| pid != before[1])
            })
        })
    });
    let info = stack.stack_json().expect("stack.json");
    for k in [0, 2] {
        let w = worker(&info, k).expect("worker");
        assert_eq!(w["restarts"], 0, "worker {k}");
        assert_eq!(pid_of(w), Some(before[usize::from(k)]), "worker {k}");
    }
    let log1 = std::fs::read_to_string(stack.dir().join("logs/connect-manager-1.log"))
        .expect("worker 1's log");
    assert!(log1.contains("restarting in"), "{log1}");

    // `status` lists the three workers (the fakes serve no gRPC and no REST).
    let dir = stack.dir().display().to_string();
    let output = run(&args(&["status", "--dir", &dir, "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let workers = status["connect"]["workers"].as_array().expect("workers");
    let names: Vec<&str> = workers.iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "connect-manager-0",
            "connect-manager-1",
            "connect-manager-2"
        ]
    );
    assert_eq!(workers[1]["restarts"], 1);
    assert!(
        status["connect"]["tasks_error"].is_string(),
        "{}",
        status["connect"]
    );
    let output = run(&args(&["status", "--dir", &dir]));
    let text = stdout(&output);
    assert!(
        text.contains("connect-manager: distributed, group connect-cluster, 3 workers"),
        "{text}"
    );

    // Another shape while it runs: refused, nothing started.
    let mut up = args(&["up", "--no-tracing"]);
    up.extend(stack.stack_args());
    let workers_flag = up.iter().position(|a| a == "--workers").expect("flag") + 1;
    up[workers_flag] = "2".to_owned();
    let output = run(&up);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("runs 3 connect-manager workers (distributed), not 2"),
        "{}",
        stderr(&output)
    );

    let processes = tree(supervisor.id());
    terminate_supervisor(&mut supervisor, &processes);
}

/// Tasks by worker from `etlctl status --json`: worker name → `connector/task` labels,
/// and how many tasks are unassigned or on a worker not ours.
fn placement(status: &serde_json::Value) -> (Vec<(String, Vec<String>)>, usize) {
    let label = |t: &serde_json::Value| {
        format!(
            "{}/{}",
            t["connector"].as_str().unwrap_or("?"),
            t["task"].as_u64().unwrap_or(0)
        )
    };
    let workers = status["connect"]["workers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| {
                    (
                        w["name"].as_str().unwrap_or("?").to_owned(),
                        w["tasks"]
                            .as_array()
                            .map(|ts| ts.iter().map(label).collect())
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let stray = ["unassigned", "elsewhere"]
        .iter()
        .map(|k| status["connect"][*k].as_array().map_or(0, Vec::len))
        .sum();
    (workers, stray)
}

/// `etlctl up --workers 3` with the real services: three connect-manager workers in
/// distributed mode come up healthy, `status` lists them, the connectors applied
/// through worker 0 get three tasks each that Kafka shares out among the three, and a
/// worker killed with SIGKILL is restarted by the supervisor and healthy again.
///
/// Needs connect-manager's distributed mode (issue 14) and the service binaries.
#[test]
fn three_workers_come_up_healthy_and_share_the_tasks() {
    require_binaries();
    let stack = TestStack::with_workers(WORKERS);
    let dir = stack.dir().display().to_string();
    let _down = Down(dir.clone());
    let mut up = args(&["up", "--no-tracing", "--timeout", "180"]);
    up.extend(stack.stack_args());
    let output = run(&up);
    assert!(output.status.success(), "up failed: {}", stderr(&output));
    for k in 0..WORKERS {
        assert!(
            stdout(&output).contains(&format!("connect-manager-{k}")),
            "{}",
            stdout(&output)
        );
    }

    let status_json = || {
        let output = run(&args(&["status", "--dir", &dir, "--json"]));
        let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        (output.status.success(), value)
    };
    let (healthy, status) = status_json();
    assert!(healthy, "{status}");
    let workers = status["connect"]["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), usize::from(WORKERS), "{status}");
    for (k, w) in workers.iter().enumerate() {
        assert_eq!(w["name"], format!("connect-manager-{k}"));
        assert_eq!(w["health"], "healthy", "{w}");
        let rest = if k == 0 {
            stack.rest_port
        } else {
            stack.rest_port + k as u16
        };
        assert_eq!(w["rest_url"], format!("http://127.0.0.1:{rest}"));
    }
    assert_eq!(status["connect"]["mode"], "distributed");
    let text = stdout(&run(&args(&["status", "--dir", &dir])));
    assert!(text.contains("3 workers"), "{text}");

    // The connectors through worker 0 (as every etlctl command talks to it), with
    // tasks.max 3 each from the stack: Kafka shares the six tasks among the workers.
    let connectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/connectors");
    let output = run(&args(&[
        "connectors",
        "apply",
        "--dir",
        connectors,
        "--stack-dir",
        &dir,
    ]));
    assert!(output.status.success(), "apply: {}", stderr(&output));
    let mut last = serde_json::Value::Null;
    wait_until(
        "every task running on one of the three workers, each worker with one",
        Duration::from_secs(90),
        || {
            let (_, status) = status_json();
            let (by_worker, stray) = placement(&status);
            last = status;
            let placed: usize = by_worker.iter().map(|(_, tasks)| tasks.len()).sum();
            stray == 0 && placed == 6 && by_worker.iter().all(|(_, tasks)| !tasks.is_empty())
        },
    );
    eprintln!("tasks by worker: {:?}", placement(&last).0);
    // Each task says what it is and what it moved, from its own worker or, for
    // the others, through the status topic: etl-bench's warm-up reads both.
    wait_until(
        "every task with its kind and its records counted",
        Duration::from_secs(30),
        || {
            let (_, status) = status_json();
            let tasks: Vec<serde_json::Value> = status["connect"]["workers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|w| w["tasks"].as_array().cloned().unwrap_or_default())
                .collect();
            last = status;
            tasks.len() == 6
                && tasks.iter().all(|t| {
                    matches!(t["kind"].as_str(), Some("source" | "sink")) && t["records"].is_u64()
                })
        },
    );

    // SIGKILL worker 2 (its pid as the supervisor recorded it): restarted, healthy again.
    let info = stack.stack_json().expect("stack.json");
    let pid = worker(&info, 2).and_then(pid_of).expect("worker 2's pid");
    signal(pid, "KILL");
    wait_until(
        "worker 2 restarted and healthy",
        Duration::from_secs(90),
        || {
            let restarted = stack.stack_json().is_some_and(|info| {
                worker(&info, 2)
                    .is_some_and(|w| w["restarts"] == 1 && pid_of(w).is_some_and(|new| new != pid))
            });
            restarted && status_json().0
        },
    );
}
