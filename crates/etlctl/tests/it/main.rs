//! etlctl end to end: the real binary starting and stopping real Postgres and tansu in a
//! temp directory on free ports, so a developer's running stack is never touched.

mod faults;
mod helpers;
mod overlap;
mod workers;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use helpers::{
    Down, TestStack, alive, args, etlctl, fake_services, require_binaries, run, run_with_env,
    stderr, stdout, terminate_supervisor, tree, wait_until,
};

#[test]
fn infra_only_stack_goes_up_and_down_without_leaving_processes() {
    let stack = TestStack::new();
    let dir = stack.dir().display().to_string();
    let mut up = args(&["up", "--without-services", "--timeout", "120"]);
    up.extend(stack.stack_args());

    let output = run(&up);
    assert!(output.status.success(), "up failed: {}", stderr(&output));
    assert!(stdout(&output).contains("stack up"), "{}", stdout(&output));

    let output = run(&args(&["status", "--dir", &dir, "--json"]));
    assert!(output.status.success(), "status: {}", stdout(&output));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let components = status["components"].as_array().expect("components");
    let health = |name: &str| {
        components
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["health"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(health("postgres").as_deref(), Some("healthy"));
    assert_eq!(health("kafka").as_deref(), Some("healthy"));
    assert_eq!(health("extractor").as_deref(), Some("disabled"));
    assert_eq!(health("jaeger").as_deref(), Some("healthy"));
    assert_eq!(
        status["stack"]["postgres"]["url"],
        format!("postgres://postgres@127.0.0.1:{}/nlp_db", stack.pg_port)
    );
    let jaeger = format!("http://127.0.0.1:{}", stack.jaeger_port);
    assert_eq!(status["stack"]["tracing"]["jaeger_url"], jaeger.as_str());
    assert_eq!(
        status["stack"]["tracing"]["otlp_endpoint"],
        format!("http://127.0.0.1:{}", stack.otlp_port)
    );
    assert_eq!(status["stack"]["tracing"]["collector"], "embedded");
    let output = run(&args(&["status", "--dir", &dir]));
    assert!(stdout(&output).contains(&jaeger), "{}", stdout(&output));

    // The embedded collector answers Jaeger's query API; an unknown trace is a clear
    // error, not a hang.
    let output = run(&args(&[
        "trace",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "--dir",
        &dir,
        "--wait",
        "1",
    ]));
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no trace 4bf92f3577b34da6a3ce929d0e0e4736")
            && stderr(&output).contains(&jaeger),
        "{}",
        stderr(&output)
    );

    let info = stack.stack_json().expect("stack.json");
    let supervisor = u32::try_from(info["supervisor_pid"].as_u64().expect("pid")).expect("u32");
    let processes = tree(supervisor);
    // The supervisor, postgres (and its workers), tansu and their watchdogs.
    assert!(processes.len() >= 5, "{processes:?}");

    let output = run(&up);
    assert!(output.status.success());
    assert!(
        stdout(&output).contains("already up"),
        "{}",
        stdout(&output)
    );

    let output = run(&args(&["down", "--dir", &dir]));
    assert!(output.status.success(), "down failed: {}", stderr(&output));
    assert!(stdout(&output).contains("stopped:"), "{}", stdout(&output));
    let left: Vec<_> = processes.iter().filter(|p| alive(**p)).collect();
    assert!(left.is_empty(), "still running after down: {left:?}");
    assert!(!stack.dir().join("stack.json").exists());
    assert!(!stack.dir().join("supervisor.pid").exists());
    // Data and logs stay.
    assert!(stack.dir().join("pg/data/PG_VERSION").exists());
    assert!(stack.dir().join("logs/supervisor.log").exists());

    let output = run(&args(&["down", "--dir", &dir]));
    assert!(output.status.success());
    assert!(stdout(&output).contains("no stack running"));
    let output = run(&args(&["status", "--dir", &dir]));
    assert!(!output.status.success());
    assert!(stdout(&output).contains("no stack running"));
}

#[test]
fn up_explains_busy_ports_and_missing_binaries_before_starting_anything() {
    let stack = TestStack::new();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_port = busy.local_addr().expect("addr").port().to_string();

    let mut up = args(&["up", "--without-services"]);
    up.extend(stack.stack_args());
    let pg = up.iter().position(|a| a == "--pg-port").expect("flag") + 1;
    up[pg] = busy_port.clone();
    let output = run(&up);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("port {busy_port} is busy")) && message.contains("--pg-port"),
        "{message}"
    );

    let empty = stack.tmp.path().join("no-binaries");
    std::fs::create_dir_all(&empty).expect("dir");
    let mut up = args(&["up", "--bin-dir", &empty.display().to_string()]);
    up.extend(stack.stack_args());
    let output = run(&up);
    assert!(!output.status.success());
    let message = stderr(&output);
    for needle in [
        "service binaries missing",
        "extractor",
        "sink-verifier",
        "--without-services",
    ] {
        assert!(message.contains(needle), "{needle} not in: {message}");
    }
    assert!(!stack.dir().join("supervisor.pid").exists());

    // The collector's ports are checked too, naming their flags.
    let mut up = args(&["up", "--without-services"]);
    up.extend(stack.stack_args());
    let otlp = up.iter().position(|a| a == "--otlp-port").expect("flag") + 1;
    up[otlp] = busy_port.clone();
    let output = run(&up);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains(&format!("port {busy_port} is busy")) && message.contains("--otlp-port"),
        "{message}"
    );
    assert!(!stack.dir().join("supervisor.pid").exists());

    // A file that no report names and no database knows: a clear error.
    let dir = stack.dir().display().to_string();
    let nowhere = format!(
        "postgres://postgres@127.0.0.1:{}/nlp_db",
        etl_stack::free_port()
    );
    let output = run(&args(&[
        "trace",
        "some-file.csv",
        "--dir",
        &dir,
        "--database-url",
        &nowhere,
    ]));
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("no trace for some-file.csv") && message.contains("report.json"),
        "{message}"
    );
}

/// The supervisor in the foreground with fake service binaries: services get their
/// environment, a crashed one is restarted, and SIGTERM stops everything — including a
/// service that ignores SIGTERM.
#[test]
fn supervisor_restarts_crashed_services_and_stops_everything() {
    let stack = TestStack::new();
    let bin = stack.tmp.path().join("bin");
    fake_services(&bin, &["connect-manager"]);
    let log = std::fs::File::create(stack.tmp.path().join("supervisor.out")).expect("log");
    let mut supervise: Vec<String> = args(&["supervise", "--bin-dir", &bin.display().to_string()]);
    supervise.extend(stack.stack_args());
    let mut supervisor: Child = etlctl()
        .args(&supervise)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn supervisor");

    let running = |name: &str| {
        stack.stack_json().and_then(|info| {
            info["services"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == name && s["state"] == "running")
                .and_then(|s| s["pid"].as_u64())
        })
    };
    wait_until("all four services running", Duration::from_secs(90), || {
        [
            "extractor",
            "sftp-gateway",
            "connect-manager",
            "sink-verifier",
        ]
        .iter()
        .all(|s| running(s).is_some())
    });

    let env_file = stack.dir().join("connect/env.txt");
    wait_until(
        "the fake connect-manager's env",
        Duration::from_secs(10),
        || std::fs::read_to_string(&env_file).is_ok_and(|t| t.contains("ETL_REST_ADDR")),
    );
    let env = std::fs::read_to_string(&env_file).expect("env");
    // The token every service requires: made once, readable by its owner only.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = std::fs::metadata(stack.dir().join("api-token")).expect("api-token");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    for expected in [
        format!("ETL_GRPC_ADDR=127.0.0.1:{}", stack.base_port + 2),
        format!("ETL_REST_ADDR=127.0.0.1:{}", stack.rest_port),
        format!("ETL_KAFKA_BROKERS=127.0.0.1:{}", stack.kafka_port),
        format!(
            "ETL_DATABASE_URL=postgres://postgres@127.0.0.1:{}/nlp_db",
            stack.pg_port
        ),
        format!("ETL_GATEWAY_URL=http://127.0.0.1:{}", stack.base_port + 1),
        format!("ETL_VERIFIER_URL=http://127.0.0.1:{}", stack.base_port + 3),
        format!("ETL_SFTP_ADDR=127.0.0.1:{}", stack.sftp_port),
        format!(
            "ETL_API_TOKEN_FILE={}",
            stack.dir().join("api-token").display()
        ),
        "LOG_FORMAT=json".to_owned(),
        "OTEL_SERVICE_NAME=connect-manager".to_owned(),
        format!(
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{}",
            stack.otlp_port
        ),
    ] {
        assert!(env.contains(&expected), "{expected} not in:\n{env}");
    }

    let gateway = running("sftp-gateway").expect("gateway pid");
    Command::new("kill")
        .args(["-KILL", &gateway.to_string()])
        .status()
        .expect("kill");
    wait_until("the gateway restarted", Duration::from_secs(30), || {
        stack.stack_json().is_some_and(|info| {
            info["services"].as_array().is_some_and(|services| {
                services.iter().any(|s| {
                    s["name"] == "sftp-gateway"
                        && s["restarts"] == 1
                        && s["state"] == "running"
                        && s["pid"].as_u64() != Some(gateway)
                })
            })
        })
    });
    let gateway_log =
        std::fs::read_to_string(stack.dir().join("logs/sftp-gateway.log")).expect("log");
    assert!(gateway_log.contains("restarting in"), "{gateway_log}");

    let processes = tree(supervisor.id());
    assert!(processes.len() >= 9, "{processes:?}");
    terminate_supervisor(&mut supervisor, &processes);
    assert!(!stack.dir().join("stack.json").exists());
    let connect_log =
        std::fs::read_to_string(stack.dir().join("logs/connect-manager.log")).expect("log");
    assert!(
        connect_log.contains("killed after ignoring SIGTERM"),
        "{connect_log}"
    );
}

/// The whole pipeline through `etlctl demo`. It needs the four service binaries next to
/// etlctl: `cargo test -p etlctl` alone does not build other packages' binaries (`make
/// test`'s `cargo test --workspace` does; see `require_binaries`). Missing binaries fail the
/// test rather than skip it, so a green run always means the demo ran.
#[test]
fn demo_lands_every_row() {
    require_binaries();
    let stack = TestStack::new();
    let dir = stack.dir().display().to_string();
    let connectors = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/connectors");
    let mut demo = args(&[
        "demo",
        "--rows",
        "2500",
        "--seed",
        "3",
        "--chunk-size",
        "1000",
        "--timeout",
        "180",
        "--connectors-dir",
        connectors,
    ]);
    demo.extend(stack.stack_args());
    let _down = Down(dir.clone());
    let output = run(&demo);
    assert!(
        output.status.success(),
        "demo failed ({}): {}\n{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(stack.dir().join("report.json")).expect("report.json"),
    )
    .expect("json");
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["rows_generated"], 2500);
    assert_eq!(report["rows_landed"], report["rows_expected"]);
    assert!(
        report["rows_expected"].as_u64().unwrap_or(0) > 2000,
        "{report}"
    );
    let trace_ids = report["trace_ids"].as_object().expect("trace_ids");
    assert_eq!(Some(trace_ids.len() as u64), report["files"].as_u64());
    assert!(stack.dir().join("input/demo-2500-3.csv").is_file());

    // The report links the first file's trace in the stack's Jaeger, and says how to
    // print it.
    let (first_file, first_trace) = trace_ids.iter().next().expect("a traced file");
    let first_trace = first_trace.as_str().expect("trace id");
    assert_eq!(
        report["jaeger_trace_url"],
        format!("http://127.0.0.1:{}/trace/{first_trace}", stack.jaeger_port)
    );
    assert!(
        stdout(&output).contains(&format!("etlctl trace {first_file}")),
        "{}",
        stdout(&output)
    );

    // `etlctl trace <file>`: one trace through all four services, for every file of a
    // demo started at once on a fresh stack (the first file's context must not be lost
    // to start-up races). Spans arrive in batches, so ask again for a while.
    let services = [
        "extractor",
        "sftp-gateway",
        "connect-manager",
        "sink-verifier",
    ];
    for (file, trace_id) in trace_ids {
        let trace_id = trace_id.as_str().expect("trace id");
        let trace = args(&["trace", file, "--dir", &dir, "--wait", "20"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let (text, missing) = loop {
            let output = run(&trace);
            assert!(output.status.success(), "trace failed: {}", stderr(&output));
            let text = stdout(&output);
            let missing: Vec<&str> = services
                .iter()
                .copied()
                .filter(|s| !text.lines().any(|l| l.ends_with(&format!("  {s}"))))
                .collect();
            // The sink's spans may come in a later batch than the source's.
            let complete = missing.is_empty() && text.contains("INSERT review");
            if complete || std::time::Instant::now() >= deadline {
                break (text, missing);
            }
            #[expect(
                clippy::disallowed_methods,
                reason = "a synchronous #[test]: no tokio runtime to block"
            )]
            std::thread::sleep(Duration::from_secs(2));
        };
        assert!(text.starts_with(&format!("trace {trace_id}: ")), "{text}");
        assert!(
            missing.is_empty(),
            "the trace of {file} has no spans from {missing:?}:\n{text}"
        );
        assert!(
            text.contains("INSERT review"),
            "no Postgres write in {file}'s trace:\n{text}"
        );
    }
    // The same trace by its id.
    let output = run(&args(&["trace", first_trace, "--dir", &dir]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with(&format!("trace {first_trace}: ")));

    // `--stack external` (compose's one-shot job): the same services reached through
    // flags and env, placeholders from the environment, the report elsewhere.
    let external = stack.tmp.path().join("external");
    // Below the stack's input directory: the only place its extractor reads.
    let input = stack.dir().join("input").join("shared");
    let grpc = |offset: u16| format!("http://127.0.0.1:{}", stack.base_port + offset);
    // Every service requires the token `up` made; health alone does not.
    let token_file = stack.dir().join("api-token");
    let output = run(&args(&[
        "connectors",
        "list",
        "--stack",
        "external",
        "--url",
        &grpc(2),
    ]));
    assert!(!output.status.success(), "listed without the token");
    assert!(stderr(&output).contains("token"), "{}", stderr(&output));
    let output = run_with_env(
        &args(&[
            "connectors",
            "list",
            "--stack",
            "external",
            "--url",
            &grpc(2),
        ]),
        &[("ETL_API_TOKEN_FILE", token_file.display().to_string())],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let output = run_with_env(
        &args(&[
            "demo",
            "--stack",
            "external",
            "--rows",
            "300",
            "--seed",
            "5",
            "--chunk-size",
            "100",
            "--timeout",
            "120",
            "--connectors-dir",
            connectors,
            "--dir",
            &external.display().to_string(),
            "--input-dir",
            &input.display().to_string(),
        ]),
        &[
            ("ETL_EXTRACTOR_URL", grpc(0)),
            ("ETL_GATEWAY_URL", grpc(1)),
            ("ETL_CONNECT_URL", grpc(2)),
            ("ETL_VERIFIER_URL", grpc(3)),
            (
                "ETL_JAEGER_URL",
                format!("http://127.0.0.1:{}", stack.jaeger_port),
            ),
            ("ETL_SFTP_HOST", "127.0.0.1".to_owned()),
            ("ETL_SFTP_PORT", stack.sftp_port.to_string()),
            ("ETL_PG_HOST", "127.0.0.1".to_owned()),
            ("ETL_PG_PORT", stack.pg_port.to_string()),
            ("ETL_API_TOKEN_FILE", token_file.display().to_string()),
            // The stack's gateway knows only its own users: the connector's account,
            // its password a reference connect-manager resolves.
            ("ETL_SFTP_USER", "connect".to_owned()),
            ("ETL_SFTP_PASSWORD", "${env:ETL_SFTP_PASSWORD}".to_owned()),
        ],
    );
    assert!(
        output.status.success(),
        "external demo failed ({}): {}\n{}",
        output.status,
        stdout(&output),
        stderr(&output)
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(external.join("report.json")).expect("external report.json"),
    )
    .expect("json");
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["rows_generated"], 300);
    assert!(input.join("demo-300-5.csv").is_file());
    assert!(
        report["jaeger_trace_url"].as_str().is_some_and(
            |u| u.starts_with(&format!("http://127.0.0.1:{}/trace/", stack.jaeger_port))
        ),
        "{report}"
    );
    assert!(!external.join("stack.json").exists());

    // A file the local report.json does not name is found through Postgres.
    let (file, trace_id) = report["trace_ids"]
        .as_object()
        .and_then(|ids| ids.iter().next())
        .expect("a traced file");
    let output = run(&args(&["trace", file, "--dir", &dir]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with(&format!("trace {}: ", trace_id.as_str().unwrap_or("?"))),
        "{}",
        stdout(&output)
    );
}
