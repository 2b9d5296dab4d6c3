//! The `extractor` executable: generate, run to a directory, strict errors,
//! help that hides secrets.

use std::process::{Command, Output};

use etl_core::review::LabelScheme;

use crate::helpers::list;

fn extractor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_extractor"))
        .args(args)
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .output()
        .expect("extractor runs")
}

#[test]
fn generate_is_deterministic_and_matches_the_library() {
    let a = extractor(&[
        "generate", "--rows", "50", "--seed", "9", "--labels", "stars",
    ]);
    let b = extractor(&[
        "generate", "--rows", "50", "--seed", "9", "--labels", "stars",
    ]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let mut want = Vec::new();
    extractor::generate(50, 9, LabelScheme::Stars, &mut want).expect("generate");
    assert_eq!(a.stdout, want);
}

#[test]
fn run_writes_chunk_files_and_prints_a_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("cli.csv");
    let out = dir.path().join("out");
    let generated = extractor(&[
        "generate",
        "--rows",
        "120",
        "--output",
        input.to_str().expect("utf8"),
    ]);
    assert!(generated.status.success());
    let run = extractor(&[
        "run",
        "--source",
        &format!("cli={}", input.display()),
        "--output-dir",
        out.to_str().expect("utf8"),
        "--chunk-size",
        "50",
        "--run-id",
        "run-bin",
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("run run-bin"), "{stdout}");
    assert!(stdout.contains("120 read"), "{stdout}");
    assert!(stdout.contains("files: 3"), "{stdout}");
    assert_eq!(
        list(&out),
        vec![
            "run-bin__cli__chunk_000000.csv",
            "run-bin__cli__chunk_000001.csv",
            "run-bin__cli__chunk_000002.csv"
        ]
    );
}

#[test]
fn strict_run_fails_naming_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("broken.csv");
    std::fs::write(
        &input,
        "2,Good,Works well and I like it a lot.\n2,missing body\n",
    )
    .expect("write");
    let run = extractor(&[
        "run",
        "--input",
        input.to_str().expect("utf8"),
        "--output-dir",
        dir.path().join("out").to_str().expect("utf8"),
        "--strict",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("broken.csv: line 2: wrong column count"),
        "{stderr}"
    );
}

#[test]
fn help_documents_env_twins_and_hides_the_password() {
    let help = Command::new(env!("CARGO_BIN_EXE_extractor"))
        .args(["run", "--help"])
        .env("ETL_SFTP_PASSWORD", "hunter2")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(!text.contains("hunter2"), "{text}");
    for env in [
        "ETL_SFTP_ADDR",
        "ETL_SFTP_USER",
        "ETL_SFTP_PASSWORD",
        "ETL_VERIFIER_URL",
        "ETL_GATEWAY_URL",
        "ETL_CHUNK_SIZE",
        "ETL_WORKERS",
        "ETL_LANGUAGES",
        "ETL_LANGUAGE_THRESHOLD",
        "ETL_RUN_ID",
        "ETL_UPLOAD_DEADLINE_SECS",
    ] {
        assert!(text.contains(env), "{env} missing from --help");
    }
}

#[test]
fn every_flag_of_every_subcommand_has_an_env_twin() {
    for sub in [
        &["serve"][..],
        &["run"],
        &["generate"],
        &["healthcheck"],
        &[],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_extractor"))
            .args(sub)
            .arg("--help")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{sub:?} --help failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let options = text
            .split_once("Options:")
            .unwrap_or_else(|| panic!("{sub:?}: no options section:\n{text}"))
            .1;
        // Each option starts on a line that begins with its flag, indented by
        // 2 (`-x, --xx`) or 6 (`--xx`) spaces; its description by 10.
        let mut entries: Vec<String> = Vec::new();
        for line in options.lines() {
            let text = line.trim_start();
            if text.starts_with('-') && line.len() - text.len() <= 6 {
                entries.push(String::new());
            }
            if let Some(entry) = entries.last_mut() {
                entry.push_str(line);
                entry.push('\n');
            }
        }
        let mut flags = 0;
        for entry in entries {
            let flag = entry.split_whitespace().next().unwrap_or_default();
            if entry.contains("--help") || entry.contains("--version") {
                continue;
            }
            assert!(
                entry.contains("[env: ETL_"),
                "{sub:?}: {flag} has no ETL_* env twin in --help:\n{entry}"
            );
            flags += 1;
        }
        assert!(flags > 0, "{sub:?}: no flags found in\n{text}");
    }
}
