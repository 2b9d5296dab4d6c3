//! The `sftp-gateway` executable: help text, `healthcheck`, and a clean stop
//! on SIGTERM.

use std::{process::Stdio, time::Duration};

use crate::helpers::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_sftp-gateway");

#[test]
fn help_explains_every_flag() {
    let out = std::process::Command::new(BIN)
        .arg("--help")
        .env("ETL_SFTP_PASSWORD", "should-not-show")
        .env("ETL_SFTP_USERS", "a:also-hidden")
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--sftp-addr",
        "--grpc-addr",
        "--data-dir",
        "--sftp-user",
        "--sftp-password",
        "--user",
        "--authorized-key",
        "--host-key",
        "--watch-dir",
        "ETL_SFTP_ADDR",
        "ETL_GRPC_ADDR",
        "ETL_DATA_DIR",
        "ETL_SFTP_USERS",
        "ETL_SFTP_AUTHORIZED_KEYS",
        "ETL_SFTP_HOST_KEY",
        "--users-file",
        "--permissions",
        "--root",
        "ETL_SFTP_ROOTS",
        "--login-grace-time",
        "--idle-timeout",
        "--max-startups",
        "--max-connections",
        "--max-connections-per-addr",
        "--max-auth-attempts",
        "--auth-penalty",
        "--auth-penalty-min",
        "--auth-penalty-max",
        "--auth-penalty-exempt",
        "--max-file-size",
        "--user-quota",
        "ETL_SFTP_USERS_FILE",
        "ETL_SFTP_PERMISSIONS",
        "ETL_SFTP_LOGIN_GRACE_TIME",
        "ETL_SFTP_IDLE_TIMEOUT",
        "ETL_SFTP_MAX_STARTUPS",
        "ETL_SFTP_MAX_CONNECTIONS",
        "ETL_SFTP_MAX_CONNECTIONS_PER_ADDR",
        "ETL_SFTP_MAX_AUTH_ATTEMPTS",
        "ETL_SFTP_AUTH_PENALTY",
        "ETL_SFTP_AUTH_PENALTY_MIN",
        "ETL_SFTP_AUTH_PENALTY_MAX",
        "ETL_SFTP_AUTH_PENALTY_EXEMPT",
        "ETL_SFTP_MAX_FILE_SIZE",
        "ETL_SFTP_USER_QUOTA",
        "healthcheck",
        "hash-password",
        "host-key",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    assert!(
        !help.contains("should-not-show") && !help.contains("also-hidden"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_answers_healthcheck_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sftp_port, grpc_port) = (free_port(), free_port());
    let grpc_url = format!("http://127.0.0.1:{grpc_port}");
    let healthcheck = || async {
        tokio::process::Command::new(BIN)
            .args(["healthcheck", "--addr", &grpc_url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .expect("run healthcheck")
            .success()
    };
    assert!(!healthcheck().await, "nothing runs yet");

    let child = tokio::process::Command::new(BIN)
        .env("ETL_SFTP_ADDR", format!("127.0.0.1:{sftp_port}"))
        .env("ETL_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("ETL_DATA_DIR", dir.path().join("data"))
        .env("ETL_SFTP_PASSWORD", "s3cret-pw")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start sftp-gateway");

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !healthcheck().await {
        assert!(
            std::time::Instant::now() < deadline,
            "gateway never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cfg = etl_sftp::SftpConfig::from_addr(
        &format!("127.0.0.1:{sftp_port}"),
        "etl",
        etl_sftp::SftpAuth::Password("s3cret-pw".into()),
    )
    .expect("addr");
    let client = etl_sftp::SftpClient::connect(&cfg)
        .await
        .expect("login with the env password");
    client
        .write_atomic("input", "bin.csv", b"x")
        .await
        .expect("upload");
    let _ = client.close().await;
    assert!(dir.path().join("data/etl/input/bin.csv").is_file());
    assert!(dir.path().join("data/ssh_host_ed25519_key").is_file());

    let pid = child.id().expect("pid").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("stops within 20 s of SIGTERM")
        .expect("output");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit status {:?}; log:\n{log}",
        out.status
    );
    assert!(log.contains("upload complete"), "{log}");
    assert!(!log.contains("s3cret-pw"), "password logged:\n{log}");
}

#[test]
fn hash_password_and_host_key_commands() {
    use std::io::Write;
    let mut child = std::process::Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run hash-password");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("write password");
    let out = child.wait_with_output().expect("output");
    assert!(out.status.success());
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        hash.starts_with("$argon2id$") && !hash.contains("s3cret"),
        "{hash}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let run = || {
        std::process::Command::new(BIN)
            .args(["host-key", "--data-dir"])
            .arg(dir.path())
            .output()
            .expect("run host-key")
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let printed = String::from_utf8_lossy(&first.stdout).trim().to_string();
    assert!(printed.starts_with("SHA256:"), "{printed}");
    let file = dir.path().join(sftp_gateway::FINGERPRINT_FILE);
    assert_eq!(std::fs::read_to_string(file).expect("file").trim(), printed);
    assert!(
        dir.path().join("ssh_host_ed25519_key").is_file(),
        "key generated"
    );
    let again = run();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        printed,
        "same key"
    );
}
