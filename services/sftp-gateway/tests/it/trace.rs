//! The trace context travels with the file: stored by the gateway when an
//! upload completes, served by the `traceparent@file-etl` SFTP extension
//! after restarts and renames, absent (not an error) on OpenSSH. Files moved
//! to `error/` become REJECTED events; `include_existing` lists what is there.

use etl_proto::v1::{
    AnnounceUploadRequest, FileEventKind, FileReady, TraceContext, WatchFilesRequest,
};
use etl_sftp::{SftpClient, SftpError};
use testkit::Sshd;
use tonic::Streaming;

use crate::{
    events::{assert_quiet, next_grpc},
    helpers::{Gateway, next_event, reject, sshd_config},
};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn watch(gw: &Gateway, directory: &str, include_existing: bool) -> Streaming<FileReady> {
    gw.grpc()
        .await
        .watch_files(WatchFilesRequest {
            user: "etl".into(),
            directory: directory.into(),
            include_existing,
        })
        .await
        .expect("WatchFiles")
        .into_inner()
}

async fn announce(gw: &Gateway, path: &str) {
    gw.grpc()
        .await
        .announce_upload(AnnounceUploadRequest {
            user: "etl".into(),
            path: path.into(),
            trace: Some(TraceContext {
                traceparent: TRACEPARENT.into(),
                tracestate: String::new(),
            }),
        })
        .await
        .expect("AnnounceUpload");
}

fn traceparent_of(ev: &FileReady) -> String {
    ev.trace.clone().unwrap_or_default().traceparent
}

fn stored_xattr(path: &std::path::Path) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = rustix::fs::getxattr(path, "user.etl.traceparent", &mut buf[..]).ok()?;
    String::from_utf8(buf[..n].to_vec()).ok()
}

async fn traceparent(client: &SftpClient, path: &str) -> Option<String> {
    client
        .traceparent(path)
        .await
        .unwrap_or_else(|e| panic!("traceparent of {path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_survives_gateway_restart_and_rename() {
    let mut gw = Gateway::start().await;
    let mut events = gw.subscribe();
    announce(&gw, "input/a.csv").await;
    let client = gw.client().await;
    client
        .write_atomic("input", "a.csv", b"a\n")
        .await
        .expect("upload a");
    // A plain SFTP upload (no announcement): its trace starts at the gateway.
    client.write("input/b.csv", b"b\n").await.expect("upload b");
    let a = next_event(&mut events).await;
    let b = next_event(&mut events).await;
    assert_eq!(
        (a.path.as_str(), b.path.as_str()),
        ("input/a.csv", "input/b.csv")
    );
    let (a_tp, b_tp) = (traceparent_of(&a), traceparent_of(&b));
    assert_eq!(etl_telemetry::trace_id_of(&a_tp), Some(TRACE_ID));
    assert!(etl_telemetry::trace_id_of(&b_tp).is_some_and(|id| id != TRACE_ID));

    // Served as the event carried it, and kept on the file itself.
    assert_eq!(
        traceparent(&client, "input/a.csv").await.as_deref(),
        Some(a_tp.as_str())
    );
    assert_eq!(
        stored_xattr(&gw.root("etl").join("input/a.csv")).as_deref(),
        Some(a_tp.as_str())
    );
    client.close().await.expect("close");

    // A new gateway instance on the same root: nothing in memory survived.
    gw.restart().await;
    let client = gw.client().await;
    assert_eq!(
        traceparent(&client, "input/a.csv").await.as_deref(),
        Some(a_tp.as_str())
    );
    assert_eq!(
        traceparent(&client, "/input/./b.csv").await.as_deref(),
        Some(b_tp.as_str())
    );

    // The context moves with the file (what the source does once it is done).
    let mut events = gw.subscribe();
    client
        .rename("input/a.csv", "finished/a.csv")
        .await
        .expect("move to finished");
    assert_eq!(
        traceparent(&client, "finished/a.csv").await.as_deref(),
        Some(a_tp.as_str())
    );
    crate::helpers::assert_no_event(&mut events).await;

    // Files without a context, missing files, paths outside the root.
    client
        .write("finished/plain.csv", b"p")
        .await
        .expect("write outside watched dirs");
    assert_eq!(traceparent(&client, "finished/plain.csv").await, None);
    let err = client
        .traceparent("input/missing.csv")
        .await
        .expect_err("missing");
    assert!(err.is_not_found(), "{err}");
    let err = client
        .traceparent("../etc/passwd")
        .await
        .expect_err("escape");
    assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");

    // Rewriting a file in place is a new upload with a trace of its own.
    let mut events = gw.subscribe();
    client
        .write("input/b.csv", b"b2\n")
        .await
        .expect("rewrite b");
    let b2 = next_event(&mut events).await;
    assert_ne!(traceparent_of(&b2), b_tp);
    assert_eq!(
        traceparent(&client, "input/b.csv").await,
        Some(traceparent_of(&b2))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_files_have_no_traceparent() {
    let sshd = tokio::task::spawn_blocking(Sshd::start)
        .await
        .expect("sshd");
    let client = match SftpClient::connect(&sshd_config(&sshd)).await {
        Ok(c) => c,
        Err(e) => panic!("connect to sshd: {e}\nsshd log:\n{}", sshd.log()),
    };
    client.write("a.csv", b"a").await.expect("write");
    assert_eq!(
        client
            .traceparent("a.csv")
            .await
            .expect("OP_UNSUPPORTED is no error"),
        None
    );
    assert_eq!(
        client.traceparent("a.csv").await.expect("asked again"),
        None
    );
    // The main session is unaffected by the second channel.
    assert_eq!(client.read("a.csv").await.expect("read"), b"a");
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_file_to_error_is_a_rejected_event_with_its_reason() {
    let gw = Gateway::start().await;
    let mut rejections = watch(&gw, "error", false).await;
    let mut uploads = watch(&gw, "input", false).await;
    let mut everything = watch(&gw, "", false).await;
    let client = gw.client().await;
    client
        .write_atomic("input", "bad.csv", b"x\ty\n")
        .await
        .expect("upload");
    let uploaded = next_grpc(&mut uploads).await;
    assert_eq!(uploaded.kind, FileEventKind::Uploaded as i32);
    assert_eq!(next_grpc(&mut everything).await.path, "input/bad.csv");

    // As connect-manager rejects a file: the reason first, then the move.
    let reason = "line 2: expected 6 fields, found 2";
    reject(&client, "bad.csv", format!("{reason}\n").as_bytes()).await;
    let ev = next_grpc(&mut rejections).await;
    assert_eq!(ev.kind, FileEventKind::Rejected as i32, "{ev:?}");
    assert_eq!(
        (ev.user.as_str(), ev.path.as_str()),
        ("etl", "error/bad.csv")
    );
    assert_eq!(ev.reason, reason);
    assert_eq!(ev.size, 4);
    assert_eq!(
        traceparent_of(&ev),
        traceparent_of(&uploaded),
        "the file's one trace"
    );
    assert_quiet(&mut rejections).await;
    // Watchers of uploads never see a rejection.
    assert_quiet(&mut uploads).await;
    assert_quiet(&mut everything).await;

    // A long reason is cut at 4 KiB.
    client
        .write_atomic("input", "long.csv", b"l")
        .await
        .expect("upload long");
    reject(&client, "long.csv", "é".repeat(5000).as_bytes()).await;
    let ev = next_grpc(&mut rejections).await;
    assert_eq!(ev.path, "error/long.csv");
    assert!(
        ev.reason.len() <= 4096 && ev.reason.len() >= 4094,
        "{}",
        ev.reason.len()
    );
    assert!(ev.reason.chars().all(|c| c == 'é'));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_existing_lists_files_oldest_first_then_live_events() {
    let mut gw = Gateway::start().await;
    announce(&gw, "input/1.csv").await;
    let client = gw.client().await;
    client
        .write_atomic("input", "1.csv", b"1")
        .await
        .expect("1");
    client
        .write_atomic("input", "2.csv", b"22")
        .await
        .expect("2");
    client
        .write_atomic("input", "3.csv", b"3")
        .await
        .expect("3");
    reject(&client, "3.csv", b"no header").await;
    let stored_1 = traceparent(&client, "input/1.csv").await;
    let stored_2 = traceparent(&client, "input/2.csv").await;
    assert!(stored_1.is_some() && stored_2.is_some());

    // Same instance: the listing and the recent replay overlap; each file once.
    let mut stream = watch(&gw, "input", true).await;
    let first = next_grpc(&mut stream).await;
    let second = next_grpc(&mut stream).await;
    assert_eq!(
        (first.path.as_str(), second.path.as_str()),
        ("input/1.csv", "input/2.csv")
    );
    assert_quiet(&mut stream).await;
    drop(stream);
    client.close().await.expect("close");

    // After a restart only the listing knows the files, with their contexts.
    gw.restart().await;
    let mut stream = watch(&gw, "input", true).await;
    let first = next_grpc(&mut stream).await;
    let second = next_grpc(&mut stream).await;
    assert_eq!(
        (first.path.as_str(), second.path.as_str()),
        ("input/1.csv", "input/2.csv")
    );
    assert_eq!(Some(traceparent_of(&first)), stored_1);
    assert_eq!(
        etl_telemetry::trace_id_of(&traceparent_of(&first)),
        Some(TRACE_ID)
    );
    assert_eq!(Some(traceparent_of(&second)), stored_2);
    assert_eq!((first.size, second.size), (1, 2));
    assert!(first.kind == FileEventKind::Uploaded as i32 && first.completed_at_unix_ms > 0);

    // Then the live events.
    let client = gw.client().await;
    client
        .write_atomic("input", "4.csv", b"4")
        .await
        .expect("4");
    assert_eq!(next_grpc(&mut stream).await.path, "input/4.csv");
    assert_quiet(&mut stream).await;

    // In error/: the rejected files with their reasons, not the reason files.
    let mut errors = watch(&gw, "error", true).await;
    let ev = next_grpc(&mut errors).await;
    assert_eq!(ev.path, "error/3.csv");
    assert_eq!(ev.kind, FileEventKind::Rejected as i32);
    assert_eq!(ev.reason, "no header");
    assert_quiet(&mut errors).await;
    gw.stop().await;
}
