//! The control-plane token and the input directories, through the real server:
//! calls without the token are refused, the run's own calls to the gateway and
//! the verifier (which require it too) carry it, and StartRun reads nothing
//! outside its input directories, answering the same for files that exist and
//! files that do not.

use std::time::{Duration, Instant};

use etl_core::review::LabelScheme;
use etl_proto::v1::{
    SourceSpec, StartRunRequest, WatchRunRequest, extractor_client::ExtractorClient,
};
use etl_service::{ApiSecurity, ClientAuth, Shutdown, auth::Token};
use extractor::Config;
use tonic::Code;

use crate::helpers::{Stack, input_file};

const TOKEN: &str = "extractor-test-token-42";

fn request(path: &std::path::Path) -> StartRunRequest {
    StartRunRequest {
        sources: vec![SourceSpec {
            name: "shop".into(),
            path: path.display().to_string(),
            label_scheme: "stars".into(),
        }],
        run_id: String::new(),
        chunk_size: 500,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_needs_the_token_and_the_run_passes_it_on() {
    // The gateway and the verifier require the token as well.
    let stack = Stack::start_with(ApiSecurity::with_token(TOKEN)).await;
    let input_dir = stack.dir.path().join("inputs");
    std::fs::create_dir_all(&input_dir).expect("mkdir");
    let input = input_file(&input_dir, "shop.csv", 1200, 11, LabelScheme::Stars);
    let mut config = Config::ephemeral(stack.endpoints());
    config.security = ApiSecurity::with_token(TOKEN);
    config.input_dirs = vec![input_dir.clone()];
    let shutdown = Shutdown::new();
    let running = extractor::start(config, shutdown.clone())
        .await
        .expect("extractor starts");
    let url = format!("http://{}", running.grpc_addr);

    // Health needs no token: SERVING once the gateway and the verifier answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etl_service::probe_health(&url).await.unwrap_or(false) {
        assert!(Instant::now() < deadline, "extractor never became SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut anonymous =
        ExtractorClient::new(ClientAuth::none().connect(&url).await.expect("connects"));
    let refused = anonymous
        .start_run(request(&input))
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let refused = anonymous
        .watch_run(WatchRunRequest {
            run_id: "run-x".into(),
        })
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(stack.uploaded().is_empty(), "nothing ran");

    let auth = ClientAuth::token(Token::new(TOKEN, "test").expect("token"));
    let mut client = ExtractorClient::new(auth.connect(&url).await.expect("connects"));
    let run_id = client
        .start_run(request(&input))
        .await
        .expect("started with the token")
        .into_inner()
        .run_id;
    let mut stream = client
        .watch_run(WatchRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    while let Some(p) = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("progress in time")
        .expect("stream ok")
    {
        last = Some(p);
    }
    let last = last.expect("progress");
    assert!(last.done && last.error.is_empty(), "{last:?}");
    assert_eq!(last.files, 3);
    // Registered with the verifier, which refuses calls without the token.
    assert_eq!(stack.recorder.registered().len(), 3);
    assert_eq!(stack.recorder.completed()[0].files, 3);
    assert_eq!(stack.uploaded().len(), 3);

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stops in time")
        .expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_run_reads_only_below_the_input_dirs_and_says_so_the_same_way() {
    let stack = Stack::start().await;
    let inside = stack.dir.path().join("inputs");
    let outside = stack.dir.path().join("elsewhere");
    std::fs::create_dir_all(&inside).expect("mkdir");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let secret = input_file(&outside, "secret.csv", 10, 1, LabelScheme::Polarity);
    std::os::unix::fs::symlink(&secret, inside.join("link.csv")).expect("symlink");
    let mut config = Config::ephemeral(stack.endpoints());
    config.input_dirs = vec![inside.clone()];
    let shutdown = Shutdown::new();
    let running = extractor::start(config, shutdown.clone())
        .await
        .expect("extractor starts");
    let mut client = ExtractorClient::connect(format!("http://{}", running.grpc_addr))
        .await
        .expect("connects");

    let answer = |path: std::path::PathBuf| {
        let mut client = client.clone();
        async move {
            let status = client
                .start_run(request(&path))
                .await
                .expect_err("not allowed");
            let shown = path.display().to_string();
            (
                status.code(),
                status.message().replace(&format!("{shown:?}"), "PATH"),
            )
        }
    };
    let existing = answer(secret.clone()).await;
    let missing = answer(outside.join("missing.csv")).await;
    let system = answer("/etc/passwd".into()).await;
    let dotdot = answer(inside.join("../elsewhere/secret.csv")).await;
    let through_link = answer(inside.join("link.csv")).await;
    assert_eq!(existing.0, Code::PermissionDenied, "{existing:?}");
    assert!(existing.1.contains("not allowed"), "{existing:?}");
    for other in [&missing, &system, &dotdot, &through_link] {
        assert_eq!(
            other, &existing,
            "one answer whether the file exists or not"
        );
    }
    assert!(stack.uploaded().is_empty(), "nothing was read");

    // Below the input directory, a missing file is the run's ordinary error.
    let status = client
        .start_run(request(&inside.join("missing.csv")))
        .await
        .expect_err("missing");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("stops in time")
        .expect("clean stop");
}

/// The uploader checks the server's host key: a pinned fingerprint that is not
/// the gateway's, or a known_hosts file that lists another key, stops the run
/// at once with a host key error (not retried until the deadline), and nothing
/// is uploaded; the gateway's own fingerprint lets the run through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_key_other_than_the_pinned_one_is_refused() {
    let stack = Stack::start().await;
    let input_dir = stack.dir.path().join("inputs");
    std::fs::create_dir_all(&input_dir).expect("mkdir");
    let input = input_file(&input_dir, "shop.csv", 300, 5, LabelScheme::Stars);
    let run = |endpoints: extractor::Endpoints, run_id: &'static str| {
        let mut opts = extractor::RunOptions::new(vec![extractor::SourceSpec {
            name: "shop".into(),
            path: input.clone(),
            labels: LabelScheme::Stars,
        }]);
        opts.run_id = Some(run_id.into());
        opts.chunk_size = 100;
        opts.upload = Some(
            endpoints
                .upload_target(true, ClientAuth::none())
                .expect("target"),
        );
        extractor::extract(
            opts,
            std::sync::Arc::new(extractor::Progress::new()),
            Shutdown::new(),
        )
    };

    // A pinned fingerprint of some other key.
    let mut pinned = stack.endpoints();
    pinned.sftp_host_key_fingerprint =
        Some("SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let started = Instant::now();
    let err = run(pinned, "run-pinned").await.expect_err("refused");
    assert!(
        err.to_string().to_lowercase().contains("host key"),
        "the error names the host key: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused at once, not retried until the deadline"
    );

    // A known_hosts file that lists another key for this server.
    let known = stack.dir.path().join("known_hosts");
    let addr = stack.endpoints().sftp_addr;
    let port = addr.rsplit(':').next().expect("port");
    std::fs::write(
        &known,
        format!(
            "[127.0.0.1]:{port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdK1g3Ns6mlUK6kETV4Wj3Y3rRvaxXuYVtq+5cEt3Mq\n"
        ),
    )
    .expect("known_hosts");
    let mut listed = stack.endpoints();
    listed.sftp_known_hosts = Some(known);
    let err = run(listed, "run-known").await.expect_err("refused");
    assert!(
        err.to_string().to_lowercase().contains("host key"),
        "the error names the host key: {err}"
    );
    assert!(stack.uploaded().is_empty(), "nothing was uploaded");

    // The gateway's own fingerprint.
    let mut right = stack.endpoints();
    right.sftp_host_key_fingerprint = Some(stack.gateway().host_key_fingerprint().to_string());
    let summary = run(right, "run-right").await.expect("the run passes");
    assert_eq!(summary.files, 3);
}
