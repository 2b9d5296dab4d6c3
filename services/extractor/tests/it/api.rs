//! gRPC `StartRun` + `WatchRun` through the extractor server.

use std::time::{Duration, Instant};

use etl_core::review::LabelScheme;
use etl_proto::v1::{
    SourceSpec, StartRunRequest, WatchRunRequest, extractor_client::ExtractorClient,
};
use etl_service::Shutdown;
use extractor::Config;

use crate::helpers::{Stack, input_file};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_run_and_watch_it_to_the_end() {
    let stack = Stack::start().await;
    let input = input_file(stack.dir.path(), "shop.csv", 1200, 11, LabelScheme::Stars);
    let shutdown = Shutdown::new();
    let running = extractor::start(Config::ephemeral(stack.endpoints()), shutdown.clone())
        .await
        .expect("extractor starts");
    let url = format!("http://{}", running.grpc_addr);

    // SERVING once the gateway accepts a login and the verifier's health answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etl_service::probe_health(&url).await.unwrap_or(false) {
        assert!(Instant::now() < deadline, "extractor never became SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut client = ExtractorClient::connect(url.clone())
        .await
        .expect("connect");
    let run_id = client
        .start_run(StartRunRequest {
            sources: vec![SourceSpec {
                name: "shop".into(),
                path: input.display().to_string(),
                label_scheme: "stars".into(),
            }],
            run_id: String::new(),
            chunk_size: 500,
        })
        .await
        .expect("started")
        .into_inner()
        .run_id;
    assert!(run_id.starts_with("run-"), "{run_id}");

    let mut stream = client
        .watch_run(WatchRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut updates = Vec::new();
    while let Some(p) = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("progress in time")
        .expect("stream ok")
    {
        updates.push(p);
    }
    let last = updates.last().expect("at least one update");
    assert!(last.done, "{last:?}");
    assert_eq!(last.error, "", "{last:?}");
    assert_eq!(last.run_id, run_id);
    assert_eq!(last.rows_read, 1200);
    assert_eq!(last.rows_kept + last.rows_dropped + last.bad_rows, 1200);
    assert_eq!(last.files, 3);
    assert_eq!(stack.uploaded().len(), 3);
    assert!(stack.uploaded().iter().all(|n| n.starts_with(&run_id)));
    assert_eq!(stack.recorder.registered().len(), 3);
    assert_eq!(stack.recorder.completed()[0].files, 3);
    assert!(updates.iter().filter(|p| p.done).count() == 1);

    // Watching a finished run gives its final state at once.
    let mut again = client
        .watch_run(WatchRunRequest { run_id })
        .await
        .expect("watch")
        .into_inner();
    let p = again.message().await.expect("ok").expect("one message");
    assert!(p.done && p.files == 3);
    assert!(again.message().await.expect("ok").is_none());

    // Errors are the caller's to fix, and say so.
    let unknown = client
        .watch_run(WatchRunRequest {
            run_id: "run-nope".into(),
        })
        .await
        .expect_err("unknown run");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let bad = client
        .start_run(StartRunRequest {
            sources: vec![SourceSpec {
                name: "x".into(),
                path: input.display().to_string(),
                label_scheme: "thumbs".into(),
            }],
            ..Default::default()
        })
        .await
        .expect_err("bad scheme");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let missing = client
        .start_run(StartRunRequest {
            sources: vec![SourceSpec {
                name: "x".into(),
                path: "/nonexistent/file.csv".into(),
                label_scheme: String::new(),
            }],
            ..Default::default()
        })
        .await
        .expect_err("missing file");
    // Outside the input directories (the temporary directory, for tests).
    assert_eq!(missing.code(), tonic::Code::PermissionDenied);
    assert!(missing.message().contains("/nonexistent/file.csv"));
    let missing_inside = stack.dir.path().join("missing.csv");
    let missing = client
        .start_run(StartRunRequest {
            sources: vec![SourceSpec {
                name: "x".into(),
                path: missing_inside.display().to_string(),
                label_scheme: String::new(),
            }],
            ..Default::default()
        })
        .await
        .expect_err("missing file");
    assert_eq!(missing.code(), tonic::Code::FailedPrecondition);
    assert!(
        missing
            .message()
            .contains(&missing_inside.display().to_string())
    );

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stops in time")
        .expect("clean stop");
}
