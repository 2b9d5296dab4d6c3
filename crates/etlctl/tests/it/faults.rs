//! The fault suite: a multi-file demo on a real local stack (`etlctl up`: Postgres,
//! Apache Kafka, the four services under the supervisor), one fault injected in the
//! middle of the run, and then the run must complete on its own — the supervisor, not
//! the test, restarts what died — with the verifier's proof: missing 0, duplicates 0,
//! altered 0, every file in `finished/`, none left in `input/`.
//!
//! Every case is bounded (the demo's own `--timeout`, and each wait here), kills only
//! processes of the stack it started, by the pid the supervisor recorded, and the stack
//! is taken down when the case ends, pass or fail. Cases run one at a time: each
//! stack is a JVM, a Postgres and four services on a 2-core machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::helpers::{
    Down, TestStack, args, etlctl, require_binaries, run, signal, stderr, stdout,
};

/// One case at a time (see the module doc).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Rows per case: with 1000-row chunks and ~93% kept by the language filter, 24 files.
const ROWS: u64 = 26_000;
const CHUNK: u64 = 1_000;
/// How long one case's demo may take, faults and restarts included.
const DEMO_TIMEOUT: Duration = Duration::from_secs(240);

/// A stack for one case, and its demo.
struct Case {
    // Fields drop in order: the stack goes down before its directory is removed.
    _down: Down,
    stack: TestStack,
    seed: u64,
}

impl Case {
    fn start(seed: u64) -> Self {
        Self::start_on(seed, TestStack::new())
    }

    fn start_on(seed: u64, stack: TestStack) -> Self {
        require_binaries();
        let dir = stack.dir().display().to_string();
        let down = Down(dir);
        let mut up = args(&["up", "--no-tracing", "--timeout", "180"]);
        up.extend(stack.stack_args());
        let output = run(&up);
        assert!(output.status.success(), "up failed: {}", stderr(&output));
        Case {
            _down: down,
            stack,
            seed,
        }
    }

    fn demo_args(&self) -> Vec<String> {
        let connectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/connectors");
        let mut demo = args(&["demo", "--connectors-dir", connectors]);
        demo.extend([
            "--rows".into(),
            ROWS.to_string(),
            "--seed".into(),
            self.seed.to_string(),
            "--chunk-size".into(),
            CHUNK.to_string(),
            "--timeout".into(),
            DEMO_TIMEOUT.as_secs().to_string(),
            "--up-timeout".into(),
            "60".into(),
        ]);
        demo.extend(self.stack.stack_args());
        demo
    }

    /// Starts the demo in the background.
    fn spawn_demo(&self) -> Child {
        let mut command = etlctl();
        command
            .args(self.demo_args())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.spawn().expect("spawn etlctl demo")
    }

    /// Waits for the demo (bounded) and returns its report.json.
    fn finish(&self, demo: Child) -> serde_json::Value {
        let deadline = Instant::now() + DEMO_TIMEOUT + Duration::from_secs(60);
        let mut demo = demo;
        loop {
            if demo.try_wait().expect("wait demo").is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = demo.kill();
                break;
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "a synchronous #[test]: no tokio runtime to block"
            )]
            std::thread::sleep(Duration::from_millis(200));
        }
        let output = demo.wait_with_output().expect("demo output");
        let report = self.report();
        eprintln!(
            "demo -> {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "demo failed ({}):\n{}\n{}\nreport: {report}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        report
    }

    fn report(&self) -> serde_json::Value {
        std::fs::read_to_string(self.stack.dir().join("report.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn sftp_dir(&self, sub: &str) -> PathBuf {
        self.stack.dir().join("sftp/etl").join(sub)
    }

    /// The proof: every row once and unaltered, every file finished, nothing left.
    fn assert_complete(&self, report: &serde_json::Value) {
        assert_eq!(report["complete"], true, "{report}");
        assert_eq!(report["passed"], true, "{report}");
        assert_eq!(report["missing"], 0, "{report}");
        assert_eq!(report["duplicates"], 0, "{report}");
        assert_eq!(report["altered"], 0, "{report}");
        let files = report["files"].as_u64().expect("files");
        assert!(files >= 20, "at least 20 files: {report}");
        assert_eq!(report["files_verified"].as_u64(), Some(files), "{report}");
        assert_eq!(report["rows_landed"], report["rows_expected"], "{report}");
        // Moving a sent file to finished/ is the source's last step, after its
        // rows are in Kafka: a file whose move met a restarting gateway is sent
        // again and moved once the gateway is back, which can be a few seconds
        // after the verifier has seen every row.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (finished, left) = loop {
            let finished = visible_files(&self.sftp_dir("finished"));
            let left = visible_files(&self.sftp_dir("input"));
            if (finished.len() as u64 == files && left.is_empty()) || Instant::now() >= deadline {
                break (finished, left);
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "the test's own thread waits for the stack it drives"
            )]
            std::thread::sleep(Duration::from_millis(250));
        };
        if finished.len() as u64 != files || !left.is_empty() {
            panic!(
                "{} of {files} files in finished/ 30 s after the report, left in input/: {left:?}\n{}",
                finished.len(),
                self.diagnosis()
            );
        }
        assert_eq!(
            self.table_rows(),
            report["rows_expected"].as_u64().expect("rows_expected"),
            "the table holds each expected row once"
        );
    }

    /// What a failed completion check needs to be understood from a CI log alone:
    /// every file under the SFTP root (hidden claims and temporaries included) and
    /// the warnings and errors of the services that move files.
    fn diagnosis(&self) -> String {
        let mut out = String::from("files under the SFTP root:\n");
        let mut dirs = vec![self.stack.dir().join("sftp/etl")];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(|e| e.ok()) {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if !dir.ends_with("finished") {
                    out.push_str(&format!("  {}\n", path.display()));
                }
            }
        }
        for service in ["connect-manager", "sftp-gateway"] {
            let log = self.stack.dir().join(format!("logs/{service}.log"));
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| !l.contains("\"level\":\"INFO\"") && !l.contains("\"level\":\"DEBUG\""))
                .collect();
            out.push_str(&format!("last warnings and errors of {}:\n", log.display()));
            for line in &lines[lines.len().saturating_sub(40)..] {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }

    /// Rows in the `review` table (0 while it does not exist).
    fn table_rows(&self) -> u64 {
        let output = Command::new(psql())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.stack.pg_port.to_string(),
                "-U",
                "postgres",
                "-d",
                "nlp_db",
                "-Atc",
                "select count(*) from review",
            ])
            .output();
        match output {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Waits (bounded) until at least `rows` rows landed.
    fn wait_rows(&self, rows: u64) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.table_rows() < rows {
            assert!(
                Instant::now() < deadline,
                "fewer than {rows} rows landed within 120 s"
            );
            #[expect(
                clippy::disallowed_methods,
                reason = "a synchronous #[test]: no tokio runtime to block"
            )]
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid the supervisor recorded for `component` (a service, "postgres" or "kafka").
    fn pid(&self, component: &str) -> u32 {
        let info = self.stack.stack_json().expect("stack.json");
        let pid = match component {
            "postgres" => info["postgres"]["process"]["pid"].as_u64(),
            "kafka" => info["kafka"]["process"]["pid"].as_u64(),
            service => info["services"]
                .as_array()
                .and_then(|all| all.iter().find(|s| s["name"] == service))
                .and_then(|s| s["pid"].as_u64()),
        };
        u32::try_from(pid.unwrap_or_else(|| panic!("no pid for {component}: {info}"))).expect("pid")
    }

    fn restarts(&self, component: &str) -> u64 {
        let info = self.stack.stack_json().expect("stack.json");
        match component {
            "postgres" => info["postgres"]["process"]["restarts"].as_u64(),
            "kafka" => info["kafka"]["process"]["restarts"].as_u64(),
            service => info["services"]
                .as_array()
                .and_then(|all| all.iter().find(|s| s["name"] == service))
                .and_then(|s| s["restarts"].as_u64()),
        }
        .unwrap_or(0)
    }

    fn signal(&self, component: &str, sig: &str) {
        let pid = self.pid(component);
        signal(u64::from(pid), sig);
        eprintln!("sent SIG{sig} to {component} (pid {pid})");
    }
}

fn psql() -> PathBuf {
    let debian = Path::new("/usr/lib/postgresql/15/bin/psql");
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        PathBuf::from("psql")
    }
}

fn visible_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// One case: a fresh stack, the demo, `fault` once `at_rows` rows have landed (0: at
/// once), then the run must complete with the proof.
fn case(seed: u64, at_rows: u64, component: &str, fault: impl FnOnce(&Case)) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::start(seed);
    let before = case.restarts(component);
    let demo = case.spawn_demo();
    if at_rows > 0 {
        case.wait_rows(at_rows);
    }
    fault(&case);
    let report = case.finish(demo);
    case.assert_complete(&report);
    assert!(
        case.restarts(component) > before || component == "none",
        "the supervisor did not restart {component}"
    );
}

fn expected_rows() -> u64 {
    // ~93% of generated rows are kept; a third of those.
    ROWS * 93 / 100 / 3
}

#[test]
fn kill_connect_manager_early() {
    case(101, 0, "connect-manager", |c| {
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous #[test]: no tokio runtime to block"
        )]
        std::thread::sleep(Duration::from_secs(1));
        c.signal("connect-manager", "KILL");
    });
}

#[test]
fn kill_connect_manager_with_a_file_in_flight() {
    case(102, expected_rows(), "connect-manager", |c| {
        c.signal("connect-manager", "KILL")
    });
}

#[test]
fn kill_sftp_gateway() {
    case(103, expected_rows(), "sftp-gateway", |c| {
        c.signal("sftp-gateway", "KILL")
    });
}

#[test]
fn kill_sink_verifier() {
    case(104, expected_rows(), "sink-verifier", |c| {
        c.signal("sink-verifier", "KILL")
    });
}

#[test]
fn kill_the_broker() {
    case(105, expected_rows(), "kafka", |c| c.signal("kafka", "KILL"));
}

#[test]
fn postgres_stopped_immediately() {
    case(106, expected_rows(), "postgres", |c| {
        let data = c.stack.dir().join("pg/data");
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg("/usr/lib/postgresql/15/bin/pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&data)
            .status()
            .expect("pg_ctl");
        assert!(status.success(), "pg_ctl stop -m immediate");
    });
}

#[test]
fn sigterm_each_service_mid_run() {
    for (seed, service) in [
        (111, "connect-manager"),
        (112, "sftp-gateway"),
        (113, "sink-verifier"),
    ] {
        case(seed, expected_rows(), service, |c| {
            c.signal(service, "TERM")
        });
    }
}

/// Scale-out: three connect-manager workers in distributed mode share the run
/// (`tasks.max` 3 for the sink and the source, one task of each per worker), and
/// one of them is killed with SIGKILL halfway. The worker group drops the dead
/// member after its session timeout and Kafka hands its slots to the others; the
/// sink's consumer group does the same with its partitions; its claimed files are
/// taken over. The supervisor restarts the killed worker as a new member. The run
/// must end with the proof, every file finished, nothing twice.
#[test]
fn kill_one_of_three_connect_manager_workers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::start_on(109, TestStack::with_workers(3));
    let demo = case.spawn_demo();
    let dir = case.stack.dir().display().to_string();
    // Every worker runs tasks before the kill: the fault hits a share of the work.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let output = run(&args(&["status", "--dir", &dir, "--json"]));
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        let busy = status["connect"]["workers"]
            .as_array()
            .map(|ws| {
                ws.len() == 3
                    && ws
                        .iter()
                        .all(|w| w["tasks"].as_array().is_some_and(|t| !t.is_empty()))
            })
            .unwrap_or(false);
        if busy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the three workers never all ran tasks: {status}"
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous #[test]: no tokio runtime to block"
        )]
        std::thread::sleep(Duration::from_millis(250));
    }
    case.wait_rows(expected_rows());
    let info = case.stack.stack_json().expect("stack.json");
    let worker_1 = |info: &serde_json::Value| {
        info["services"].as_array().and_then(|all| {
            all.iter()
                .find(|s| s["name"] == "connect-manager" && s["worker"] == 1)
                .cloned()
        })
    };
    let entry = worker_1(&info).expect("worker 1 in stack.json");
    let pid = entry["pid"].as_u64().expect("worker 1 pid");
    let restarts = entry["restarts"].as_u64().unwrap_or(0);
    signal(pid, "KILL");
    eprintln!("sent SIGKILL to connect-manager worker 1 (pid {pid})");
    let report = case.finish(demo);
    case.assert_complete(&report);
    let info = case.stack.stack_json().expect("stack.json");
    assert!(
        worker_1(&info).and_then(|e| e["restarts"].as_u64()) > Some(restarts),
        "the supervisor did not restart worker 1: {info}"
    );
}

/// The extractor's own death: the supervisor restarts it, and rerunning the same demo
/// (same input, same options: the same run id) finishes the run without loading
/// anything twice.
#[test]
fn kill_the_extractor_then_rerun() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::start(107);
    let demo = case.spawn_demo();
    case.wait_rows(expected_rows() / 2);
    case.signal("extractor", "KILL");
    let output = demo.wait_with_output().expect("demo");
    eprintln!("first demo -> {}", output.status);
    // Wait for the supervisor to bring the extractor back, then run the same demo.
    let deadline = Instant::now() + Duration::from_secs(60);
    while case.restarts("extractor") == 0 {
        assert!(Instant::now() < deadline, "extractor not restarted");
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous #[test]: no tokio runtime to block"
        )]
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = case.finish(case.spawn_demo());
    case.assert_complete(&report);
}

/// The same demo twice adds no row; a copy of a landed file under a new name is
/// reported as content duplicates, names the copy and its original, and turns the
/// original's run FAILED (rows merely shared with other files would be a warning).
#[test]
fn rerun_adds_nothing_and_copies_are_content_duplicates() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let case = Case::start(108);
    let first = case.finish(case.spawn_demo());
    case.assert_complete(&first);
    let rows = case.table_rows();
    let second = case.finish(case.spawn_demo());
    case.assert_complete(&second);
    assert_eq!(case.table_rows(), rows, "the second run added rows");
    assert_eq!(first["run_id"], second["run_id"], "same input, same run id");

    // A landed file uploaded again under another name.
    let finished = visible_files(&case.sftp_dir("finished"));
    let original = finished.first().expect("a finished file");
    let copy = format!("copy-of-{original}");
    std::fs::copy(
        case.sftp_dir("finished").join(original),
        case.sftp_dir("input").join(format!(".{copy}.part")),
    )
    .expect("copy");
    std::fs::rename(
        case.sftp_dir("input").join(format!(".{copy}.part")),
        case.sftp_dir("input").join(&copy),
    )
    .expect("publish copy");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = run(&args(&[
            "report",
            "--dir",
            &case.stack.dir().display().to_string(),
            first["run_id"].as_str().expect("run id"),
            "--json",
        ]));
        let text = stdout(&output);
        if let Ok(report) = serde_json::from_str::<serde_json::Value>(&text)
            && report["content_duplicates"].as_u64().unwrap_or(0) > 0
        {
            assert_eq!(report["passed"], false, "{report}");
            assert_eq!(report["state"], "FAILED", "{report}");
            assert_eq!(
                report["copies"],
                serde_json::json!([{ "copy": copy, "original": original }]),
                "{report}"
            );
            // Every row of the original (a chunk of ~930 kept rows) is in the copy.
            let original_rows = report["content_duplicates"].as_u64().unwrap_or(0);
            assert!(original_rows > 500, "{report}");
            assert_eq!(
                (report["missing"].as_u64(), report["altered"].as_u64()),
                (Some(0), Some(0))
            );
            assert_eq!(
                output.status.code(),
                Some(2),
                "report exits 2 for a failed run"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no content duplicates reported for {copy}: {text}"
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous #[test]: no tokio runtime to block"
        )]
        std::thread::sleep(Duration::from_millis(500));
    }
}
