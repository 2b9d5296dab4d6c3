//! FileReady events: over gRPC `WatchFiles`, in process, and with the trace
//! context announced by `AnnounceUpload`.

use std::time::Duration;

use etl_proto::v1::{AnnounceUploadRequest, FileReady, TraceContext, WatchFilesRequest};
use etl_sftp::{SftpAuth, SftpClient};
use sftp_gateway::config::UserSpec;
use tonic::Streaming;

use crate::helpers::{Gateway, assert_no_event, next_event};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

async fn watch(gw: &Gateway, user: &str, directory: &str) -> Streaming<FileReady> {
    gw.grpc()
        .await
        .watch_files(WatchFilesRequest {
            user: user.into(),
            directory: directory.into(),
            include_existing: false,
        })
        .await
        .expect("WatchFiles")
        .into_inner()
}

pub(crate) async fn next_grpc(stream: &mut Streaming<FileReady>) -> FileReady {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a FileReady within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

pub(crate) async fn assert_quiet(stream: &mut Streaming<FileReady>) {
    if let Ok(Ok(Some(ev))) =
        tokio::time::timeout(Duration::from_millis(300), stream.message()).await
    {
        panic!("unexpected event: {ev:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_upload_is_announced_over_grpc_but_not_its_temporary() {
    let gw = Gateway::start().await;
    let mut stream = watch(&gw, "etl", "input").await;
    let client = gw.client().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);

    client
        .write_atomic("input", "a.csv", b"label,title\n1,x\n")
        .await
        .expect("upload");
    // The .a.csv.part closes before the rename: had it been announced, it would come first.
    let ev = next_grpc(&mut stream).await;
    assert_eq!(ev.user, "etl");
    assert_eq!(ev.path, "input/a.csv");
    assert_eq!(ev.size, 16);
    assert!(ev.completed_at_unix_ms >= before, "{ev:?}");
    // No announcement: the file's trace starts at the gateway.
    let tp = ev.trace.unwrap_or_default().traceparent;
    assert!(
        etl_telemetry::trace_id_of(&tp).is_some(),
        "an unannounced upload gets a trace of its own: {tp:?}"
    );
    assert_quiet(&mut stream).await;

    // Outside the watched directory: nothing. A plain write in input/: on close.
    client
        .write("finished/b.csv", b"b")
        .await
        .expect("write finished");
    client
        .write("input/c.csv", b"cc")
        .await
        .expect("write input");
    let ev = next_grpc(&mut stream).await;
    assert_eq!((ev.path.as_str(), ev.size), ("input/c.csv", 2));
    assert_quiet(&mut stream).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_trace_rides_the_file_ready() {
    let gw = Gateway::start().await;
    let mut grpc = gw.grpc().await;
    let mut stream = watch(&gw, "etl", "").await;
    grpc.announce_upload(AnnounceUploadRequest {
        user: "etl".into(),
        path: "input/traced.csv".into(),
        trace: Some(TraceContext {
            traceparent: TRACEPARENT.into(),
            tracestate: "vendor=x".into(),
        }),
    })
    .await
    .expect("AnnounceUpload");
    let client = gw.client().await;
    client
        .write_atomic("input", "traced.csv", b"t")
        .await
        .expect("upload");
    let ev = next_grpc(&mut stream).await;
    assert_eq!(ev.path, "input/traced.csv");
    let trace = ev.trace.unwrap_or_default();
    // The event carries the gateway's sftp.receive span, a child in the uploader's trace.
    assert_eq!(
        etl_telemetry::trace_id_of(&trace.traceparent),
        Some(TRACE_ID),
        "{trace:?}"
    );
    assert_eq!(trace.tracestate, "vendor=x");

    // An announcement is used once: the next upload of the same name has none.
    client
        .write_atomic("input", "traced.csv", b"t2")
        .await
        .expect("upload again");
    let ev = next_grpc(&mut stream).await;
    let tp = ev.trace.unwrap_or_default().traceparent;
    let id = etl_telemetry::trace_id_of(&tp).expect("a trace of its own");
    assert_ne!(id, TRACE_ID, "the used-up announcement is not reused");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_announcements_are_invalid_arguments() {
    let gw = Gateway::start().await;
    let mut grpc = gw.grpc().await;
    for (user, path) in [
        ("etl", "../x.csv"),
        ("etl", ""),
        ("../etl", "input/x.csv"),
        ("", "input/x.csv"),
        ("nobody", "input/x.csv"),
        ("etl", &format!("input/{}.csv", "x".repeat(5000))),
    ] {
        let status = grpc
            .announce_upload(AnnounceUploadRequest {
                user: user.into(),
                path: path.into(),
                trace: None,
            })
            .await
            .expect_err("invalid");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{user} {path}: {status:?}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_filter_by_user_and_directory() {
    let gw = Gateway::start_with(|c, _| {
        c.users.push(UserSpec {
            name: "alice".into(),
            password: "pw".into(),
        });
        c.watch_dirs = vec!["input".into(), "inbox".into()];
    })
    .await;
    let mut alice_only = watch(&gw, "alice", "").await;
    let mut inbox_only = watch(&gw, "alice", "inbox").await;
    let mut etl_inbox = watch(&gw, "etl", "inbox").await;
    let mut everything = gw.subscribe();

    let etl = gw.client().await;
    let alice = SftpClient::connect(&gw.config("alice", SftpAuth::Password("pw".into())))
        .await
        .expect("alice");
    etl.write_atomic("input", "e.csv", b"e")
        .await
        .expect("etl upload");
    alice.mkdir_all("inbox").await.expect("mkdir inbox");
    alice
        .write_atomic("inbox", "a.csv", b"a")
        .await
        .expect("alice upload");

    let first = next_event(&mut everything).await;
    let second = next_event(&mut everything).await;
    assert_eq!(
        (first.user.as_str(), first.path.as_str()),
        ("etl", "input/e.csv")
    );
    assert_eq!(
        (second.user.as_str(), second.path.as_str()),
        ("alice", "inbox/a.csv")
    );
    assert_no_event(&mut everything).await;

    assert_eq!(next_grpc(&mut alice_only).await.path, "inbox/a.csv");
    assert_quiet(&mut alice_only).await;
    let ev = next_grpc(&mut inbox_only).await;
    assert_eq!(
        (ev.user.as_str(), ev.path.as_str()),
        ("alice", "inbox/a.csv")
    );
    assert_quiet(&mut inbox_only).await;
    assert_quiet(&mut etl_inbox).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_and_watch_streams_end_on_shutdown() {
    let gw = Gateway::start().await;
    let addr = gw.grpc_addr.to_string();
    assert!(
        etl_service::probe_health(&addr).await.expect("probe"),
        "SERVING once listening"
    );
    let mut stream = watch(&gw, "etl", "").await;
    gw.stop().await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
    assert!(
        matches!(end, Ok(Ok(None)) | Ok(Err(_))),
        "the stream ends with the server: {end:?}"
    );
    assert!(
        etl_service::probe_health(&addr).await.is_err(),
        "nothing answers after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_needs_a_user() {
    let gw = Gateway::start().await;
    let status = gw
        .grpc()
        .await
        .watch_files(WatchFilesRequest {
            user: String::new(),
            directory: "input".into(),
            include_existing: true,
        })
        .await
        .expect_err("no user");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("needs a user"), "{status:?}");
    // A name that is no user has no root to watch.
    let status = gw
        .grpc()
        .await
        .watch_files(WatchFilesRequest {
            user: "nobody".into(),
            directory: "input".into(),
            include_existing: true,
        })
        .await
        .expect_err("no such user");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("nobody"), "{status:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_waiting_per_user_are_capped() {
    let gw = Gateway::start().await;
    let notifier = gw.running().notifier();
    for i in 0..sftp_gateway::notify::MAX_ANNOUNCEMENTS_PER_USER {
        assert!(notifier.announce(
            "etl",
            "etl",
            &format!("input/{i}.csv"),
            TraceContext::default()
        ));
    }
    let status = gw
        .grpc()
        .await
        .announce_upload(AnnounceUploadRequest {
            user: "etl".into(),
            path: "input/one-too-many.csv".into(),
            trace: None,
        })
        .await
        .expect_err("over the cap");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Announcing a file already announced replaces it: still accepted.
    assert!(notifier.announce("etl", "etl", "input/0.csv", TraceContext::default()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_the_api_token_and_health_does_not() {
    use etl_service::{ClientAuth, auth::Token};
    const TOKEN: &str = "gateway-test-token-5150";
    let gw = Gateway::start_with(|c, _| {
        c.security = etl_service::ApiSecurity::with_token(TOKEN);
    })
    .await;
    let url = format!("http://{}", gw.grpc_addr);
    let anonymous = ClientAuth::none().connect(&url).await.expect("connects");
    let mut anonymous = etl_proto::v1::sftp_gateway_client::SftpGatewayClient::new(anonymous);
    let refused = anonymous
        .watch_files(WatchFilesRequest {
            user: "etl".into(),
            directory: "input".into(),
            include_existing: true,
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let announce = AnnounceUploadRequest {
        user: "etl".into(),
        path: "input/a.csv".into(),
        trace: None,
    };
    let refused = anonymous
        .announce_upload(announce.clone())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let auth = ClientAuth::token(Token::new(TOKEN, "test").expect("token"));
    let mut client = etl_proto::v1::sftp_gateway_client::SftpGatewayClient::new(
        auth.connect(&url).await.expect("connects"),
    );
    client
        .announce_upload(announce)
        .await
        .expect("with the token");
    let mut stream = client
        .watch_files(WatchFilesRequest {
            user: "etl".into(),
            directory: "input".into(),
            include_existing: false,
        })
        .await
        .expect("with the token")
        .into_inner();
    gw.client()
        .await
        .write_atomic("input", "a.csv", b"x")
        .await
        .expect("upload");
    let ev = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("an event");
    assert_eq!(ev.path, "input/a.csv");

    // Health: open (the `healthcheck` subcommand has no token).
    assert!(
        etl_service::probe_health(&url)
            .await
            .expect("health answers")
    );
    gw.stop().await;
}
