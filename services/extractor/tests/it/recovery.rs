//! Runs that survive what dies around them, and reruns that resume: the
//! gateway or the verifier restarted mid-run, the verifier away (register
//! before publish), stable run ids, stale temporaries of a killed upload.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use etl_core::{
    digest::row_digest,
    naming::{chunk_file_name, parse_chunk_file_name, temp_name},
    review::LabelScheme,
    table,
};
use etl_service::Shutdown;
use extractor::{Error, Progress, RunOptions, SourceSpec, Summary};
use tokio::sync::broadcast;

use crate::helpers::{Stack, input_file, list};

fn options(stack: &Stack, path: &Path, run_id: Option<&str>) -> RunOptions {
    let mut opts = RunOptions::new(vec![SourceSpec {
        name: "amazon".into(),
        path: path.to_path_buf(),
        labels: LabelScheme::Polarity,
    }]);
    opts.run_id = run_id.map(str::to_string);
    opts.workers = 1;
    opts.upload = Some(stack.target());
    opts
}

async fn extract(opts: RunOptions) -> Result<Summary, Error> {
    extractor::extract(opts, Arc::new(Progress::new()), Shutdown::new()).await
}

/// Waits until `input/` holds at least `n` published files (or the run ended).
async fn wait_for_published(
    stack: &Stack,
    n: usize,
    run: &tokio::task::JoinHandle<Result<Summary, Error>>,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while published(stack).len() < n && !run.is_finished() {
        assert!(Instant::now() < deadline, "no uploads within 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Published (not hidden) names in `input/`.
fn published(stack: &Stack) -> Vec<String> {
    stack
        .uploaded()
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Every file's rows match the manifest registered for it.
fn check_against_manifests(stack: &Stack) {
    let registered = stack.recorder.registered();
    for name in published(stack) {
        let data = std::fs::read(stack.input_dir().join(&name)).expect("read chunk");
        let t = table::parse(&data, table::detect_delimiter(&data)).expect("chunk parses");
        let digests: Vec<u64> = t.rows.iter().map(|r| row_digest(r)).collect();
        let (manifest, _) = registered
            .iter()
            .find(|(m, _)| m.file_name == name)
            .unwrap_or_else(|| panic!("{name} was published but never registered"));
        assert_eq!(manifest.row_digests, digests, "{name}");
    }
}

/// Counts FileReady events per published file name.
fn count_events(
    rx: &mut broadcast::Receiver<sftp_gateway::FileReady>,
    counts: &mut BTreeMap<String, u32>,
) {
    while let Ok(event) = rx.try_recv() {
        let name = event.path.trim_start_matches("input/").to_string();
        *counts.entry(name).or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_survives_the_sftp_server_restarting_mid_run() {
    let mut stack = Stack::start().await;
    let input = input_file(
        stack.dir.path(),
        "restart.csv",
        6000,
        21,
        LabelScheme::Polarity,
    );
    // 60 chunk files, one upload at a time, each registration taking 20 ms:
    // the run lasts over a second, so the restart lands in the middle of it.
    let mut opts = options(&stack, &input, Some("run-restart"));
    opts.chunk_size = 100;
    opts.uploads = 2;
    stack.recorder.set_delay(Duration::from_millis(20));
    let mut counts = BTreeMap::new();
    let mut events = stack.gateway().subscribe();

    let run = tokio::spawn(extract(opts));
    wait_for_published(&stack, 5, &run).await;
    assert!(
        !run.is_finished(),
        "the run ended before the gateway went away"
    );
    stack.stop_gateway().await;
    count_events(&mut events, &mut counts);
    let during = published(&stack).len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !run.is_finished(),
        "the run must wait for the server, not fail"
    );
    stack.start_gateway_again().await;
    let mut events = stack.gateway().subscribe();

    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run ends in time")
        .expect("task")
        .expect("the run completes after the server came back");
    count_events(&mut events, &mut counts);
    println!("{during} of 60 files published when the gateway stopped\n{summary}");

    assert_eq!(summary.files, 60);
    assert_eq!(summary.files_skipped, 0);
    assert!(summary.retries > 0, "{summary}");
    let names = stack.uploaded();
    assert_eq!(
        names.len(),
        60,
        "no temporary left, no file missing: {names:?}"
    );
    for (n, name) in names.iter().enumerate() {
        assert_eq!(name, &chunk_file_name("run-restart", "restart", n as u64));
    }
    // Published once each: no file renamed into place twice, across both
    // lives of the gateway. (Not every file is counted: a rename cut by the
    // stop may have moved the file without its notice going out.)
    assert!(counts.values().all(|c| *c == 1), "{counts:?}");
    assert!(counts.keys().all(|n| names.contains(n)), "{counts:?}");
    assert!(
        counts.len() > during,
        "files were published after the restart"
    );
    check_against_manifests(&stack);
    assert!(stack.recorder.published_before_registration().is_empty());
    assert_eq!(stack.recorder.completed().last().map(|c| c.files), Some(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_published_while_the_verifier_is_away() {
    let mut stack = Stack::start().await;
    let input = input_file(
        stack.dir.path(),
        "order.csv",
        1000,
        22,
        LabelScheme::Polarity,
    );
    let mut opts = options(&stack, &input, Some("run-order"));
    opts.chunk_size = 250;
    stack.stop_verifier().await;

    let run = tokio::spawn(extract(opts));
    // The data goes up, but without a registration no file is published.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!run.is_finished(), "the run waits for the verifier");
    assert!(published(&stack).is_empty(), "{:?}", stack.uploaded());

    stack.start_verifier_again().await;
    let summary = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run ends in time")
        .expect("task")
        .expect("the run completes once the verifier is back");
    assert_eq!(summary.files, 4);
    assert!(summary.retries > 0, "{summary}");
    assert_eq!(published(&stack).len(), 4);
    assert_eq!(stack.uploaded().len(), 4, "no temporary left");
    check_against_manifests(&stack);
    assert!(
        stack.recorder.published_before_registration().is_empty(),
        "{:?}",
        stack.recorder.published_before_registration()
    );
    assert_eq!(stack.recorder.completed().last().map(|c| c.files), Some(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_survives_the_verifier_restarting_mid_run() {
    let mut stack = Stack::start().await;
    let input = input_file(
        stack.dir.path(),
        "vrestart.csv",
        3000,
        26,
        LabelScheme::Polarity,
    );
    let mut opts = options(&stack, &input, Some("run-vrestart"));
    opts.chunk_size = 100;
    opts.uploads = 2;
    stack.recorder.set_delay(Duration::from_millis(20));

    let run = tokio::spawn(extract(opts));
    wait_for_published(&stack, 5, &run).await;
    assert!(
        !run.is_finished(),
        "the run ended before the verifier went away"
    );
    stack.stop_verifier().await;
    // Registrations in flight when it stopped may still be published; after
    // that, nothing is, until the verifier is back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = published(&stack);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        published(&stack),
        during,
        "published while nothing could be registered"
    );
    assert!(
        !run.is_finished(),
        "the run must wait for the verifier, not fail"
    );
    stack.start_verifier_again().await;

    let summary = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the run ends in time")
        .expect("task")
        .expect("the run completes after the verifier came back");
    assert_eq!(summary.files, 30);
    assert!(summary.retries > 0, "{summary}");
    assert_eq!(stack.uploaded().len(), 30, "{:?}", stack.uploaded());
    check_against_manifests(&stack);
    assert!(stack.recorder.published_before_registration().is_empty());
    assert_eq!(stack.recorder.completed().last().map(|c| c.files), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_that_stays_away_fails_the_run_naming_file_and_server() {
    let mut stack = Stack::start().await;
    let input = input_file(stack.dir.path(), "away.csv", 300, 23, LabelScheme::Polarity);
    stack.stop_verifier().await;
    let mut endpoints = stack.endpoints();
    endpoints.upload_deadline_secs = 2;
    let mut opts = options(&stack, &input, Some("run-away"));
    opts.upload = Some(
        endpoints
            .upload_target(true, etl_service::ClientAuth::none())
            .expect("target"),
    );

    let started = Instant::now();
    let err = extract(opts).await.expect_err("no verifier, no run");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(matches!(err, Error::GaveUp { .. }), "{msg}");
    assert!(msg.contains("run-away__away__chunk_000000.csv"), "{msg}");
    assert!(msg.contains(&stack.verifier_addr.to_string()), "{msg}");
    assert!(msg.contains("sink-verifier"), "{msg}");
    // Not published, and the temporary of the given-up file is gone.
    assert!(stack.uploaded().is_empty(), "{:?}", stack.uploaded());
    assert!(stack.recorder.completed().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_input_twice_gives_the_same_run_and_publishes_nothing_new() {
    let stack = Stack::start().await;
    let input = input_file(
        stack.dir.path(),
        "twice.csv",
        2500,
        24,
        LabelScheme::Polarity,
    );
    let mut opts = options(&stack, &input, None);
    opts.chunk_size = 1000;
    let first = extract(opts).await.expect("first run");
    assert!(first.run_id.starts_with("run-"), "{}", first.run_id);
    let names = stack.uploaded();
    assert_eq!(names.len(), 3);
    assert!(
        names.iter().all(|n| n.starts_with(&first.run_id)),
        "{names:?}"
    );
    let mtimes = |stack: &Stack| -> Vec<SystemTime> {
        stack
            .uploaded()
            .iter()
            .map(|n| {
                std::fs::metadata(stack.input_dir().join(n))
                    .and_then(|m| m.modified())
                    .expect("mtime")
            })
            .collect()
    };
    let before = mtimes(&stack);

    // The same rows, generated again into another directory (new path, new
    // modification time), as a rerun of the demo does: the same run.
    let elsewhere = stack.dir.path().join("again");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    let copy = input_file(&elsewhere, "twice.csv", 2500, 24, LabelScheme::Polarity);
    let mut opts = options(&stack, &copy, None);
    opts.chunk_size = 1000;
    opts.workers = 2;
    let second = extract(opts).await.expect("second run");
    assert_eq!(second.run_id, first.run_id);
    assert_eq!(
        (second.files, second.files_skipped, second.bytes),
        (3, 3, 0)
    );
    assert_eq!(stack.uploaded(), names);
    assert_eq!(mtimes(&stack), before, "nothing uploaded again");
    let completed = stack.recorder.completed();
    assert_eq!(completed.len(), 2);
    assert!(
        completed
            .iter()
            .all(|c| c.run_id == first.run_id && c.files == 3)
    );

    // Other options shape other files: another run.
    let mut opts = options(&stack, &copy, None);
    opts.chunk_size = 500;
    let other = extract(opts).await.expect("other run");
    assert_ne!(other.run_id, first.run_id);
    assert_eq!(other.files_skipped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_removes_stale_temporaries_of_its_run_and_completes() {
    let stack = Stack::start().await;
    let input = input_file(
        stack.dir.path(),
        "stale.csv",
        2500,
        25,
        LabelScheme::Polarity,
    );
    let mut opts = options(&stack, &input, Some("run-stale"));
    opts.chunk_size = 1000;
    extract(opts.clone()).await.expect("first run");

    // A killed upload: chunk 1 never published, its temporary half written;
    // a temporary of this run for a chunk that no longer comes; and one of
    // another run, in progress elsewhere, which must stay.
    let dir = stack.input_dir();
    let chunk1 = chunk_file_name("run-stale", "stale", 1);
    let content = std::fs::read(dir.join(&chunk1)).expect("read");
    std::fs::remove_file(dir.join(&chunk1)).expect("remove");
    std::fs::write(dir.join(temp_name(&chunk1)), &content[..content.len() / 2]).expect("part");
    let beyond = temp_name(&chunk_file_name("run-stale", "stale", 7));
    std::fs::write(dir.join(&beyond), b"half").expect("part");
    let foreign = temp_name(&chunk_file_name("run-other", "stale", 0));
    std::fs::write(dir.join(&foreign), b"in progress").expect("part");

    let rerun = extract(opts).await.expect("rerun");
    assert_eq!(rerun.stale_removed, 2, "{rerun}");
    assert_eq!((rerun.files, rerun.files_skipped), (3, 2));
    assert_eq!(
        std::fs::read(dir.join(&chunk1)).expect("republished"),
        content
    );
    let mut want = vec![
        foreign,
        chunk_file_name("run-stale", "stale", 0),
        chunk1,
        chunk_file_name("run-stale", "stale", 2),
    ];
    want.sort();
    assert_eq!(list(&dir), want);
    let numbers: Vec<u64> = published(&stack)
        .iter()
        .map(|n| parse_chunk_file_name(n).expect("chunk name").2)
        .collect();
    assert_eq!(numbers, vec![0, 1, 2]);
    check_against_manifests(&stack);
}
