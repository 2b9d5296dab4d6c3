//! Two demos with the same seed on one stack: `make demo-small`, then a bigger demo.
//! The generator draws the same stream for the same seed, so the bigger input starts
//! with the smaller one's rows: its first chunk holds every row the first run landed,
//! and more. Those rows are *overlapping rows* (reported as a warning), not a copied
//! file: both runs pass, and the first run's report stays PASSED.

use std::time::{Duration, Instant};

use crate::helpers::{Down, TestStack, args, require_binaries, run, stderr, stdout};

/// How long each demo may take (the first one starts the stack).
const DEMO_TIMEOUT: Duration = Duration::from_secs(180);

/// `etlctl demo` on `stack` with `rows` rows of seed 42, bounded; returns its stdout
/// and report.json.
fn demo(stack: &TestStack, rows: u64) -> (String, serde_json::Value) {
    let connectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/connectors");
    let mut demo = args(&[
        "demo",
        "--connectors-dir",
        connectors,
        "--seed",
        "42",
        "--no-tracing",
        "--up-timeout",
        "120",
    ]);
    demo.extend([
        "--rows".into(),
        rows.to_string(),
        "--timeout".into(),
        DEMO_TIMEOUT.as_secs().to_string(),
    ]);
    demo.extend(stack.stack_args());
    let output = run(&demo);
    let text = stdout(&output);
    let report: serde_json::Value = std::fs::read_to_string(stack.dir().join("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    assert!(
        output.status.success(),
        "demo --rows {rows} failed ({}):\n{text}\n{}\nreport: {report}",
        output.status,
        stderr(&output)
    );
    (text, report)
}

fn assert_passed(report: &serde_json::Value) {
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["state"], "PASSED", "{report}");
    for figure in ["missing", "duplicates", "altered", "content_duplicates"] {
        assert_eq!(report[figure], 0, "{figure}: {report}");
    }
    assert_eq!(report["rows_landed"], report["rows_expected"], "{report}");
}

#[test]
fn a_bigger_demo_with_the_same_seed_overlaps_and_both_runs_pass() {
    require_binaries();
    let stack = TestStack::new();
    let dir = stack.dir().display().to_string();
    let _down = Down(dir.clone());

    let (_, small) = demo(&stack, 100);
    assert_passed(&small);
    assert_eq!(small["overlapping_rows"], 0, "{small}");
    let small_rows = small["rows_landed"].as_u64().expect("rows_landed");
    assert!(small_rows > 80, "{small}");

    let (text, full) = demo(&stack, 1000);
    assert_passed(&full);
    assert_ne!(
        small["run_id"], full["run_id"],
        "another input, another run"
    );
    // Every row of the small run is again in the bigger run's first chunk (the
    // generator's sentence pool may add a few more).
    let overlapping = full["overlapping_rows"].as_u64().expect("overlapping_rows");
    assert!(overlapping >= small_rows, "{full}");
    assert!(
        text.lines()
            .any(|l| l.contains("warning") && l.contains(&format!("{overlapping} rows"))),
        "no warning line with the overlapping rows:\n{text}"
    );
    assert!(
        !text.contains('✗'),
        "a problem line in a passed run:\n{text}"
    );

    // The first run's report, asked again: still PASSED, its rows now overlapping.
    let run_id = small["run_id"].as_str().expect("run id");
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let output = run(&args(&["report", "--dir", &dir, run_id, "--json"]));
        let report: serde_json::Value =
            serde_json::from_str(&stdout(&output)).unwrap_or(serde_json::Value::Null);
        if report["overlapping_rows"].as_u64().unwrap_or(0) > 0 || Instant::now() >= deadline {
            assert!(output.status.success(), "report exit: {}", output.status);
            break report;
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a synchronous #[test]: no tokio runtime to block"
        )]
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_passed(&first);
    assert_eq!(first["overlapping_rows"], small["rows_landed"], "{first}");
}
