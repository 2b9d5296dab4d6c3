//! The `connect-manager` executable: flags and the healthcheck subcommand.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_connect-manager"))
}

#[test]
fn help_lists_flags_with_env_twins() {
    let out = bin().arg("--help").output().expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--grpc-addr",
        "ETL_GRPC_ADDR",
        "--rest-addr",
        "ETL_REST_ADDR",
        "--kafka-brokers",
        "ETL_KAFKA_BROKERS",
        "--data-dir",
        "ETL_DATA_DIR",
        "healthcheck",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let port = testkit::free_port();
    let out = bin()
        .args(["healthcheck", "--addr", &format!("http://127.0.0.1:{port}")])
        .output()
        .expect("runs");
    assert!(!out.status.success());
}

#[test]
fn sigterm_stops_it_cleanly_even_without_kafka() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().expect("tempdir");
    let dead_broker = format!("127.0.0.1:{}", testkit::free_port());
    let mut child = bin()
        .args(["--grpc-addr", "127.0.0.1:0", "--rest-addr", "127.0.0.1:0"])
        .args(["--kafka-brokers", &dead_broker])
        .arg("--data-dir")
        .arg(dir.path())
        .env("LOG_FORMAT", "text")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    // Started once it logged its addresses.
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let started = line.contains("connect-manager started");
            seen.push(line);
            if started {
                break;
            }
        }
        seen
    });
    let seen = lines.join().expect("reader");
    assert!(
        seen.iter().any(|l| l.contains("connect-manager started")),
        "{seen:#?}"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            assert!(exit.success(), "exit status {exit:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous test waiting for a child process"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
}
