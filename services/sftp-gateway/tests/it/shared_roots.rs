//! Shared roots: users configured with the same root (`--root NAME:ROOT`, or
//! the users file's fourth field) work in one tree. Notices, announcements,
//! stored trace contexts and the quota follow the tree, not the login: what
//! the local stack relies on, where the extractor uploads as `extractor` and
//! the source connector watches and reads as `connect`.

use etl_proto::v1::{AnnounceUploadRequest, FileEventKind, TraceContext, WatchFilesRequest};
use etl_sftp::{SftpAuth, SftpClient};
use sftp_gateway::config::{RootSpec, UserSpec};

use crate::{
    events::{assert_quiet, next_grpc},
    helpers::{Gateway, pattern, reject},
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SHARED: &str = "shared";

/// `extractor` (users file, profile `upload`, root `shared`), `connect`
/// (`--user`, root `shared` by `--root`) and `alice` (`--user`, her own root).
async fn gateway(quota: u64) -> Gateway {
    let hash = sftp_gateway::hash_password("up-pw").expect("hash");
    Gateway::start_with(|c, dir| {
        let file = dir.join("users");
        std::fs::write(&file, format!("extractor:{hash}:upload:{SHARED}\n")).expect("users file");
        c.users_file = Some(file);
        for (name, password) in [("connect", "cm-pw"), ("alice", "al-pw")] {
            c.users.push(UserSpec {
                name: name.into(),
                password: password.into(),
            });
        }
        c.roots.push(RootSpec {
            name: "connect".into(),
            root: SHARED.into(),
        });
        c.user_quota = quota;
    })
    .await
}

async fn login(gw: &Gateway, user: &str, password: &str) -> SftpClient {
    SftpClient::connect(&gw.config(user, SftpAuth::Password(password.into())))
        .await
        .unwrap_or_else(|e| panic!("{user} logs in: {e}"))
}

async fn watch(
    gw: &Gateway,
    user: &str,
    directory: &str,
    include_existing: bool,
) -> tonic::Streaming<etl_proto::v1::FileReady> {
    gw.grpc()
        .await
        .watch_files(WatchFilesRequest {
            user: user.into(),
            directory: directory.into(),
            include_existing,
        })
        .await
        .expect("WatchFiles")
        .into_inner()
}

async fn announce(gw: &Gateway, user: &str, path: &str) {
    gw.grpc()
        .await
        .announce_upload(AnnounceUploadRequest {
            user: user.into(),
            path: path.into(),
            trace: Some(TraceContext {
                traceparent: TRACEPARENT.into(),
                tracestate: String::new(),
            }),
        })
        .await
        .expect("AnnounceUpload");
}

fn trace_id(ev: &etl_proto::v1::FileReady) -> Option<String> {
    let tp = ev.trace.clone().unwrap_or_default().traceparent;
    etl_telemetry::trace_id_of(&tp).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_announced_to_every_user_of_its_root_and_to_no_one_else() {
    let gw = gateway(0).await;
    let mut connect_input = watch(&gw, "connect", "input", false).await;
    let mut alice_all = watch(&gw, "alice", "", false).await;
    let extractor = login(&gw, "extractor", "up-pw").await;
    let connect = login(&gw, "connect", "cm-pw").await;
    let alice = login(&gw, "alice", "al-pw").await;

    // The uploader announces as itself; the watcher subscribed as the other user.
    announce(&gw, "extractor", "input/a.csv").await;
    extractor
        .write_atomic("input", "a.csv", b"label,title\n1,x\n")
        .await
        .expect("upload");
    let ev = next_grpc(&mut connect_input).await;
    assert_eq!(ev.kind, FileEventKind::Uploaded as i32);
    assert_eq!(
        (ev.user.as_str(), ev.path.as_str()),
        ("extractor", "input/a.csv"),
        "the event names the uploader"
    );
    assert_eq!(
        trace_id(&ev).as_deref(),
        Some(TRACE_ID),
        "the announced trace"
    );
    assert_quiet(&mut connect_input).await;

    // One tree: the other user reads the file and its stored trace context.
    let names: Vec<_> = connect
        .list("input")
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["a.csv"]);
    let served = connect
        .traceparent("input/a.csv")
        .await
        .expect("traceparent@file-etl");
    assert_eq!(served, ev.trace.clone().map(|t| t.traceparent));
    assert!(gw.root(SHARED).join("input/a.csv").is_file());
    for own in ["extractor", "connect"] {
        assert!(!gw.root(own).exists(), "no tree of its own for {own}");
    }

    // Another root sees neither the event nor the file.
    assert_quiet(&mut alice_all).await;
    assert!(alice.list("input").await.expect("list").is_empty());
    let err = alice.read("input/a.csv").await.expect_err("not hers");
    assert!(err.is_not_found(), "{err}");
    // Her own uploads reach only her root's watchers.
    alice
        .write_atomic("input", "mine.csv", b"m")
        .await
        .expect("alice uploads");
    let ev = next_grpc(&mut alice_all).await;
    assert_eq!(
        (ev.user.as_str(), ev.path.as_str()),
        ("alice", "input/mine.csv")
    );
    assert_quiet(&mut connect_input).await;
    assert!(!connect.exists("input/mine.csv").await.expect("exists"));

    // The connector rejects the file: a REJECTED event for every watcher of
    // error/ in the root (the verifier may watch as either user).
    let mut extractor_errors = watch(&gw, "extractor", "error", false).await;
    reject(&connect, "a.csv", b"line 2: bad\n").await;
    let ev = next_grpc(&mut extractor_errors).await;
    assert_eq!(ev.kind, FileEventKind::Rejected as i32, "{ev:?}");
    assert_eq!(
        (ev.user.as_str(), ev.path.as_str(), ev.reason.as_str()),
        ("connect", "error/a.csv", "line 2: bad")
    );
    assert_eq!(
        trace_id(&ev).as_deref(),
        Some(TRACE_ID),
        "the file's one trace"
    );
    assert_quiet(&mut alice_all).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_of_the_root_lists_the_other_users_files_with_their_trace() {
    let mut gw = gateway(0).await;
    let extractor = login(&gw, "extractor", "up-pw").await;
    announce(&gw, "extractor", "input/1.csv").await;
    extractor
        .write_atomic("input", "1.csv", b"1")
        .await
        .expect("upload 1");
    extractor
        .write_atomic("input", "2.csv", b"22")
        .await
        .expect("upload 2");

    // Same instance: the listing and the recent replay of the uploads overlap;
    // each file comes once, as its live event (which names the uploader).
    let mut stream = watch(&gw, "connect", "input", true).await;
    let first = next_grpc(&mut stream).await;
    let second = next_grpc(&mut stream).await;
    assert_eq!(
        (first.path.as_str(), second.path.as_str()),
        ("input/1.csv", "input/2.csv")
    );
    assert_eq!(
        (first.user.as_str(), second.user.as_str()),
        ("extractor", "extractor")
    );
    assert_eq!(trace_id(&first).as_deref(), Some(TRACE_ID));
    assert_quiet(&mut stream).await;
    drop(stream);
    assert_quiet(&mut watch(&gw, "alice", "input", true).await).await;
    extractor.close().await.expect("close");

    // After a restart only the files know their context: the listing serves it.
    gw.restart().await;
    let mut stream = watch(&gw, "connect", "input", true).await;
    let first = next_grpc(&mut stream).await;
    assert_eq!(first.path, "input/1.csv");
    assert_eq!(trace_id(&first).as_deref(), Some(TRACE_ID));
    assert_eq!(next_grpc(&mut stream).await.path, "input/2.csv");
    assert_quiet(&mut stream).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_is_per_root_and_announcement_caps_per_user() {
    let gw = gateway(2500).await;
    let extractor = login(&gw, "extractor", "up-pw").await;
    let connect = login(&gw, "connect", "cm-pw").await;
    let alice = login(&gw, "alice", "al-pw").await;
    extractor
        .write_atomic("input", "a.csv", &pattern(2000))
        .await
        .expect("fits");
    // The root holds 2000 of 2500 bytes, whoever writes next.
    let err = connect
        .write("finished/b.csv", &pattern(1000))
        .await
        .expect_err("over the root's quota");
    let msg = err.to_string();
    assert!(
        msg.contains("quota exceeded") && msg.contains(SHARED) && msg.contains("2500"),
        "{msg}"
    );
    // Another root has its own.
    alice
        .write_atomic("input", "a.csv", &pattern(2000))
        .await
        .expect("alice's root is not charged for the shared one");
    // Moving a file within the root frees nothing and costs nothing; removing frees.
    connect
        .rename("input/a.csv", "finished/a.csv")
        .await
        .expect("move");
    connect.remove("finished/a.csv").await.expect("remove");
    extractor
        .write_atomic("input", "c.csv", &pattern(2000))
        .await
        .expect("fits again once the other user freed the bytes");

    // Announcement caps stay per user: another user of the root may still announce.
    let notifier = gw.running().notifier();
    for i in 0..sftp_gateway::notify::MAX_ANNOUNCEMENTS_PER_USER {
        assert!(notifier.announce(
            "extractor",
            SHARED,
            &format!("input/{i}.csv"),
            TraceContext::default()
        ));
    }
    let refused = gw
        .grpc()
        .await
        .announce_upload(AnnounceUploadRequest {
            user: "extractor".into(),
            path: "input/over.csv".into(),
            trace: None,
        })
        .await
        .expect_err("over the extractor's cap");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    announce(&gw, "connect", "input/over.csv").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_root_is_refused_at_start_with_a_message_naming_it() {
    etl_telemetry::init_for_tests();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let hash = sftp_gateway::hash_password("pw").expect("hash");
    for bad in ["../escape", "a/b", ".trace", ".."] {
        let users = dir.path().join("users");
        std::fs::write(
            &users,
            format!("# the uploader\nok:{hash}:upload\nup:{hash}:upload:{bad}\n"),
        )
        .expect("users file");
        let mut config = sftp_gateway::Config::ephemeral(&data_dir);
        config.users_file = Some(users.clone());
        let err = match sftp_gateway::start(config, etl_service::Shutdown::new()).await {
            Ok(_) => panic!("a gateway started with root {bad:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(&format!("{bad:?}")) && err.contains("line 3"),
            "{bad:?}: {err}"
        );
        assert!(!err.contains(&hash), "the hash is never shown: {err}");
        assert!(!dir.path().join("escape").exists());
    }

    // The flag and its env twin, through the executable: refused before anything starts.
    for (args, env) in [
        (vec!["--root", "etl:../escape"], None),
        (vec![], Some("etl:../escape")),
    ] {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sftp-gateway"));
        cmd.args(["--sftp-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&args)
            .env_remove("ETL_SFTP_ROOTS")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(value) = env {
            cmd.env("ETL_SFTP_ROOTS", value);
        }
        // Bounded: a gateway that took the root would serve until killed.
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{args:?} {env:?}: the gateway started"))
            .expect("run sftp-gateway");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} {env:?}: started");
        assert!(
            stderr.contains("\"../escape\""),
            "{args:?} {env:?}: {stderr}"
        );
    }
    assert!(!dir.path().join("escape").exists());
}
