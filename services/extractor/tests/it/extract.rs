//! A run end to end against the gateway and a recording verifier.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use etl_core::{
    digest::{file_checksum, row_digest},
    naming::parse_chunk_file_name,
    review::{CHUNK_COLUMNS, LabelScheme},
    table,
};
use etl_service::Shutdown;
use extractor::{Error, Progress, RunOptions, SourceSpec, Summary, source::BadKind};

use crate::helpers::{Stack, input_file, list};

fn options(stack: &Stack, path: &std::path::Path, run_id: &str) -> RunOptions {
    let mut opts = RunOptions::new(vec![SourceSpec {
        name: "amazon".into(),
        path: path.to_path_buf(),
        labels: LabelScheme::Polarity,
    }]);
    opts.run_id = Some(run_id.into());
    opts.chunk_size = 1000;
    opts.workers = 2;
    opts.upload = Some(stack.target());
    opts
}

async fn extract(opts: RunOptions) -> Result<Summary, Error> {
    extractor::extract(opts, Arc::new(Progress::new()), Shutdown::new()).await
}

fn mtimes(stack: &Stack) -> BTreeMap<String, SystemTime> {
    stack
        .uploaded()
        .into_iter()
        .map(|n| {
            let m = std::fs::metadata(stack.input_dir().join(&n))
                .expect("stat")
                .modified()
                .expect("mtime");
            (n, m)
        })
        .collect()
}

/// Parses every uploaded file and checks it against its registered manifest;
/// returns the total number of rows.
fn check_files_against_manifests(stack: &Stack) -> u64 {
    let registered = stack.recorder.registered();
    let mut total = 0;
    for name in stack.uploaded() {
        let data = std::fs::read(stack.input_dir().join(&name)).expect("read chunk");
        let t = table::parse(&data, table::detect_delimiter(&data)).expect("chunk parses");
        assert_eq!(t.header, CHUNK_COLUMNS.to_vec(), "{name}");
        let digests: Vec<u64> = t.rows.iter().map(|r| row_digest(r)).collect();
        let (manifest, traceparent) = registered
            .iter()
            .rev()
            .find(|(m, _)| m.file_name == name)
            .unwrap_or_else(|| panic!("{name} was never registered"));
        assert_eq!(manifest.row_count, t.rows.len() as u64, "{name}");
        assert_eq!(manifest.row_digests, digests, "{name}");
        assert_eq!(manifest.checksum, file_checksum(&digests), "{name}");
        assert_eq!(manifest.columns, CHUNK_COLUMNS.to_vec());
        assert!(manifest.uploaded_at_unix_ms > 0);
        // One trace per file: the manifest names it and the call carried it.
        assert_eq!(manifest.trace_id.len(), 32, "{name}: {manifest:?}");
        assert!(
            traceparent.contains(&manifest.trace_id),
            "{name}: RegisterFile sent traceparent {traceparent:?}, manifest trace {}",
            manifest.trace_id
        );
        for row in &t.rows {
            assert!(["positive", "negative"].contains(&row[2].as_str()));
            assert_eq!(row[3], "amazon");
            assert_eq!(row[4], "false");
            assert_eq!(row[5], "en");
        }
        total += t.rows.len() as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_registers_and_reruns_without_duplicates() {
    let stack = Stack::start().await;
    let input = input_file(
        stack.dir.path(),
        "reviews.csv",
        2500,
        1,
        LabelScheme::Polarity,
    );
    let mut events = stack.gateway().subscribe();

    let first = extract(options(&stack, &input, "run-it1"))
        .await
        .expect("run");
    assert_eq!(
        stack.uploaded(),
        vec![
            "run-it1__reviews__chunk_000000.csv",
            "run-it1__reviews__chunk_000001.csv",
            "run-it1__reviews__chunk_000002.csv",
        ]
    );
    assert_eq!((first.files, first.files_skipped), (3, 0));
    assert_eq!(first.rows_read, 2500);
    assert_eq!(first.rows_kept + first.rows_dropped + first.bad_rows, 2500);
    assert!(
        first.rows_dropped > 0,
        "the generator mixes in other languages"
    );
    assert!(first.bytes > 0);
    let rows = check_files_against_manifests(&stack);
    assert_eq!(rows, first.rows_kept);
    assert_eq!(stack.recorder.registered().len(), 3);
    let completed = stack.recorder.completed();
    assert_eq!(completed.len(), 1);
    assert_eq!(
        (completed[0].run_id.as_str(), completed[0].files),
        ("run-it1", 3)
    );

    // The gateway's FileReady events joined each file's trace (AnnounceUpload).
    let registered = stack.recorder.registered();
    for _ in 0..3 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), events.recv())
            .await
            .expect("FileReady in time")
            .expect("event");
        let name = event.path.trim_start_matches("input/");
        let (manifest, _) = registered
            .iter()
            .find(|(m, _)| m.file_name == name)
            .expect("registered");
        let traceparent = event.trace.map(|t| t.traceparent).unwrap_or_default();
        assert!(
            traceparent.contains(&manifest.trace_id),
            "{name}: FileReady traceparent {traceparent:?} vs trace {}",
            manifest.trace_id
        );
    }

    // Same run again: nothing uploaded twice, every manifest registered again.
    let before = mtimes(&stack);
    let again = extract(options(&stack, &input, "run-it1"))
        .await
        .expect("rerun");
    assert_eq!((again.files, again.files_skipped, again.bytes), (3, 3, 0));
    assert_eq!(mtimes(&stack), before);
    let registered = stack.recorder.registered();
    assert_eq!(registered.len(), 6);
    let key = |m: &etl_proto::v1::FileManifest| {
        (
            m.file_name.clone(),
            m.row_count,
            m.row_digests.clone(),
            m.checksum,
        )
    };
    for (again, _) in &registered[3..] {
        assert!(
            registered[..3].iter().any(|(m, _)| key(m) == key(again)),
            "{} re-registered with a different manifest",
            again.file_name
        );
    }
    assert_eq!(stack.recorder.completed().len(), 2);

    // A chunk lost (or never uploaded): the rerun fills exactly that gap.
    let lost = stack.input_dir().join("run-it1__reviews__chunk_000001.csv");
    let content = std::fs::read(&lost).expect("read");
    std::fs::remove_file(&lost).expect("remove");
    let healed = extract(options(&stack, &input, "run-it1"))
        .await
        .expect("rerun");
    assert_eq!((healed.files, healed.files_skipped), (3, 2));
    assert_eq!(std::fs::read(&lost).expect("back again"), content);
    assert_eq!(stack.uploaded().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_in_finished_count_as_uploaded() {
    let stack = Stack::start().await;
    let input = input_file(
        stack.dir.path(),
        "moved.csv",
        1500,
        2,
        LabelScheme::Polarity,
    );
    extract(options(&stack, &input, "run-moved"))
        .await
        .expect("run");
    // The connector moves processed files to finished/.
    let finished = stack.data_dir.join("etl").join("finished");
    std::fs::create_dir_all(&finished).expect("mkdir");
    for name in stack.uploaded() {
        std::fs::rename(stack.input_dir().join(&name), finished.join(&name)).expect("move");
    }
    let again = extract(options(&stack, &input, "run-moved"))
        .await
        .expect("rerun");
    assert_eq!((again.files, again.files_skipped), (2, 2));
    assert!(stack.uploaded().is_empty(), "{:?}", stack.uploaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_run_stops_at_bad_row_and_rerun_resumes_without_gap() {
    let stack = Stack::start().await;
    // 1500 good reviews, one with a label outside the scheme, 1000 more.
    let mut data = Vec::new();
    extractor::generate(1500, 3, LabelScheme::Polarity, &mut data).expect("generate");
    let bad_line = data.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    data.extend_from_slice(b"7,Seven is no polarity label,This row is bad\n");
    extractor::generate(1000, 4, LabelScheme::Polarity, &mut data).expect("generate");
    let input = stack.dir.path().join("mixed.csv");
    std::fs::write(&input, &data).expect("write input");

    let mut strict = options(&stack, &input, "run-strict");
    strict.strict = true;
    let err = extract(strict).await.expect_err("strict stops");
    match &err {
        Error::BadRow { path, line, reason } => {
            assert!(path.ends_with("mixed.csv"), "{path}");
            assert_eq!(*line, bad_line);
            assert!(reason.contains("unknown label"), "{reason}");
        }
        other => panic!("expected a bad-row error, got {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("mixed.csv") && msg.contains(&format!("line {bad_line}")),
        "{msg}"
    );
    // The chunk before the bad row is complete and uploaded; nothing after it.
    assert_eq!(
        stack.uploaded(),
        vec!["run-strict__mixed__chunk_000000.csv"]
    );
    assert!(
        stack.recorder.completed().is_empty(),
        "an interrupted run is not complete"
    );

    let resumed = extract(options(&stack, &input, "run-strict"))
        .await
        .expect("resume");
    assert_eq!((resumed.files, resumed.files_skipped), (3, 1));
    assert_eq!(resumed.bad_rows, 1);
    assert_eq!(resumed.bad_by_kind.get(&BadKind::UnknownLabel), Some(&1));
    assert_eq!(resumed.bad_samples[0].1[0].line, bad_line);
    let numbers: Vec<u64> = stack
        .uploaded()
        .iter()
        .map(|n| parse_chunk_file_name(n).expect("chunk name").2)
        .collect();
    assert_eq!(numbers, vec![0, 1, 2], "no gap");
    assert_eq!(check_files_against_manifests(&stack), resumed.rows_kept);
    assert_eq!(resumed.rows_read, 2501);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_numbering_does_not_depend_on_worker_timing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = input_file(dir.path(), "stable.csv", 1200, 9, LabelScheme::Stars);
    let mut outputs = Vec::new();
    for (workers, uploads) in [(1, 1), (4, 3)] {
        let out = dir.path().join(format!("out-{workers}"));
        let mut opts = RunOptions::new(vec![SourceSpec {
            name: "full".into(),
            path: input.clone(),
            labels: LabelScheme::Stars,
        }]);
        opts.chunk_size = 100;
        opts.workers = workers;
        opts.uploads = uploads;
        opts.output_dir = Some(out.clone());
        let summary = extract(opts).await.expect("run");
        assert_eq!(summary.files, 12);
        let files: Vec<(String, Vec<u8>)> = list(&out)
            .into_iter()
            .map(|n| {
                let data = std::fs::read(out.join(&n)).expect("read");
                (n, data)
            })
            .collect();
        outputs.push(files);
    }
    assert_eq!(outputs[0].len(), 12);
    assert_eq!(outputs[0], outputs[1]);
    let first = String::from_utf8(outputs[0][0].1.clone()).expect("utf8");
    assert!(
        first.starts_with("header\tbody\tfeedback_type\tsource\tis_streaming\tlanguage_code\n")
    );
    assert!(first.contains("\tfull\tfalse\ten\n"), "{first}");
    // The derived run id is the same for the same input and options.
    let name = &outputs[0][0].0;
    assert!(
        name.starts_with("run-") && name.ends_with("__stable__chunk_000000.csv"),
        "{name}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_counted_per_kind_with_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut data = Vec::new();
    extractor::generate(3, 5, LabelScheme::Polarity, &mut data).expect("generate");
    let first_bad = data.iter().filter(|b| **b == b'\n').count() as u64 + 1;
    data.extend_from_slice(b"2,only two fields\n");
    data.extend_from_slice(b"\n");
    data.extend_from_slice(b"2,caf\xe9,invalid latin-1 byte\n");
    data.extend_from_slice(b"0,zero,is no label\n");
    for _ in 0..25 {
        data.extend_from_slice(b"\n");
    }
    data.extend_from_slice(
        b"2,Great blender,It works very well and I use it every morning for smoothies.\n",
    );
    let input = dir.path().join("bad.csv");
    std::fs::write(&input, &data).expect("write");
    let mut opts = RunOptions::new(vec![SourceSpec {
        name: "amazon".into(),
        path: input,
        labels: LabelScheme::Polarity,
    }]);
    opts.output_dir = Some(dir.path().join("out"));
    let s = extract(opts).await.expect("run goes on");
    assert_eq!(s.bad_rows, 29);
    assert_eq!(s.bad_by_kind[&BadKind::WrongColumnCount], 1);
    assert_eq!(s.bad_by_kind[&BadKind::EmptyLine], 26);
    assert_eq!(s.bad_by_kind[&BadKind::InvalidUtf8], 1);
    assert_eq!(s.bad_by_kind[&BadKind::UnknownLabel], 1);
    let samples = &s.bad_samples[0].1;
    assert_eq!(samples.len(), 20, "only the first 20 are kept");
    let got: Vec<(u64, BadKind)> = samples.iter().take(4).map(|b| (b.line, b.kind)).collect();
    assert_eq!(
        got,
        vec![
            (first_bad, BadKind::WrongColumnCount),
            (first_bad + 1, BadKind::EmptyLine),
            (first_bad + 2, BadKind::InvalidUtf8),
            (first_bad + 3, BadKind::UnknownLabel),
        ]
    );
    assert_eq!(s.rows_read, 4 + 29);
    let text = s.to_string();
    assert!(
        text.contains(&format!("line {first_bad}: wrong column count")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_run_leaves_whole_files_only_and_a_rerun_completes() {
    let stack = Stack::start().await;
    let input = input_file(
        stack.dir.path(),
        "big.csv",
        20_000,
        6,
        LabelScheme::Polarity,
    );
    let mut opts = options(&stack, &input, "run-stop");
    opts.chunk_size = 250;
    opts.workers = 1;
    opts.uploads = 1;
    let shutdown = Shutdown::new();
    let task = tokio::spawn(extractor::extract(
        opts.clone(),
        Arc::new(Progress::new()),
        shutdown.clone(),
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while stack
        .uploaded()
        .iter()
        .filter(|n| !n.starts_with('.'))
        .count()
        < 2
        && !task.is_finished()
    {
        assert!(std::time::Instant::now() < deadline, "no uploads");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.trigger();
    let stopped = task.await.expect("task");
    let uploaded_before = stack.uploaded();
    // Never half a file: no temporaries left, every file whole and registered.
    assert!(
        uploaded_before.iter().all(|n| !n.starts_with('.')),
        "{uploaded_before:?}"
    );
    check_files_against_manifests(&stack);
    match stopped {
        Err(Error::Cancelled) => {
            println!("stopped after {} of 80 files", uploaded_before.len());
            assert!(uploaded_before.len() < 80, "stopped early");
            assert!(
                stack.recorder.completed().is_empty(),
                "a stopped run is not complete"
            );
        }
        // A machine fast enough to finish first proves nothing here, and breaks nothing.
        Ok(summary) => assert_eq!(summary.files, 80),
        Err(e) => panic!("unexpected error {e}"),
    }
    let done = extract(opts).await.expect("rerun");
    assert_eq!(done.files, 80);
    assert_eq!(done.files_skipped, uploaded_before.len() as u64);
    assert_eq!(stack.uploaded().len(), 80);
    assert_eq!(check_files_against_manifests(&stack), done.rows_kept);
    assert_eq!(stack.recorder.completed().last().map(|c| c.files), Some(80));
}
