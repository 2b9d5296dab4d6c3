//! compose.yaml and the Dockerfile cannot run on machines without a Docker engine,
//! so their contract is checked statically: health gates, pinned images, env
//! names that the binaries really accept, the design's ports (published only
//! where a user needs them, on 127.0.0.1), no literal secrets, a connect-manager
//! that scales (`--scale connect-manager=3`), and a Dockerfile that builds
//! exactly the workspace's binaries.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::Command,
};

use serde_yaml_ng::Value;

const SERVICES: [&str; 4] = [
    "extractor",
    "sftp-gateway",
    "connect-manager",
    "sink-verifier",
];

fn root() -> PathBuf {
    e2e::root().to_path_buf()
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("compose.yaml")).expect("read compose.yaml");
    let mut value: Value = serde_yaml_ng::from_str(&text).expect("compose.yaml is valid YAML");
    // `<<: *anchor` merges, as compose applies them.
    value.apply_merge().expect("merge keys apply");
    value
}

fn services(c: &Value) -> &serde_yaml_ng::Mapping {
    c["services"].as_mapping().expect("services is a mapping")
}

fn name(k: &Value) -> &str {
    k.as_str().expect("service names are strings")
}

fn help_of(bin: &str) -> String {
    let path = e2e::bin(bin);
    let out = Command::new(&path)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{bin} --help failed");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Subcommands have their own flags (e.g. `extractor serve`).
    for sub in ["serve"] {
        if let Ok(o) = Command::new(&path).args([sub, "--help"]).output()
            && o.status.success()
        {
            text.push_str(&String::from_utf8_lossy(&o.stdout));
        }
    }
    text
}

#[test]
fn every_long_running_service_has_a_healthcheck_and_gates_on_healthy() {
    let c = compose();
    for (k, svc) in services(&c) {
        let n = name(k);
        let one_shot = svc["profiles"].as_sequence().is_some();
        if !one_shot {
            assert!(
                svc["healthcheck"]["test"].as_sequence().is_some(),
                "service {n} has no healthcheck"
            );
        }
        if let Some(deps) = svc.get("depends_on") {
            let deps = deps
                .as_mapping()
                .unwrap_or_else(|| panic!("{n}: depends_on must be the long form with conditions"));
            for (d, cond) in deps {
                assert_eq!(
                    cond["condition"].as_str(),
                    Some("service_healthy"),
                    "{n} depends on {} without condition: service_healthy",
                    name(d)
                );
                assert!(
                    services(&c).contains_key(d),
                    "{n} depends on unknown {}",
                    name(d)
                );
            }
        }
    }
    for s in SERVICES {
        let svc = &services(&c)[s];
        let test = svc["healthcheck"]["test"]
            .as_sequence()
            .expect("healthcheck");
        let words: Vec<&str> = test.iter().filter_map(Value::as_str).collect();
        assert_eq!(
            words,
            vec!["CMD", s, "healthcheck"],
            "{s} must probe itself with `{s} healthcheck`"
        );
    }
}

#[test]
fn every_image_tag_is_pinned() {
    let c = compose();
    for (k, svc) in services(&c) {
        let image = svc["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no image", name(k)));
        let tag = image.rsplit_once(':').map(|(_, t)| t);
        assert!(
            matches!(tag, Some(t) if t != "latest" && t.chars().any(|c| c.is_ascii_digit())),
            "{}: image {image} is not pinned to a version",
            name(k)
        );
    }
    let docker = std::fs::read_to_string(root().join("deploy/Dockerfile")).expect("Dockerfile");
    for line in docker
        .lines()
        .filter(|l| l.starts_with("ARG ") && l.contains("_IMAGE="))
    {
        let image = line.split_once('=').map(|(_, v)| v).unwrap_or("");
        assert!(
            image.contains(':') && !image.ends_with(":latest"),
            "Dockerfile base image not pinned: {line}"
        );
    }
}

#[test]
fn every_etl_variable_in_compose_is_accepted_by_its_binary() {
    let c = compose();
    let placeholders = connector_placeholders();
    for (k, svc) in services(&c) {
        let n = name(k);
        let Some(env) = svc["environment"].as_mapping() else {
            continue;
        };
        let Some(bin) = svc["build"]["target"].as_str() else {
            continue; // third-party image
        };
        let help = help_of(bin);
        for key in env
            .keys()
            .filter_map(Value::as_str)
            .filter(|k| k.starts_with("ETL_"))
        {
            let accepted =
                help.contains(&format!("env: {key}=")) || help.contains(&format!("env: {key}]"));
            // etlctl also passes variables through to connector files' placeholders.
            let placeholder = bin == "etlctl" && placeholders.contains(key);
            assert!(
                accepted || placeholder,
                "compose sets {key} for {n}, but `{bin} --help` has no flag with that env twin"
            );
        }
    }
}

fn connector_placeholders() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let dir = root().join("deploy/connectors");
    for entry in std::fs::read_dir(&dir).expect("deploy/connectors") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read");
        for part in text.split("${").skip(1) {
            let name = part.split(['}', ':']).next().unwrap_or("");
            out.insert(name.to_string());
        }
    }
    out
}

/// Ports of the design's table, e.g. `| extractor | gRPC … | 127.0.0.1:50051 |`.
fn design_ports() -> BTreeMap<String, BTreeSet<u16>> {
    let path = root().join("../shared/DESIGN.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (shared/ sits beside the project root)",
            path.display()
        )
    });
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let ports: BTreeSet<u16> = cells[3]
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|p| p.parse().ok())
            .filter(|p| *p > 1000)
            .collect();
        if !ports.is_empty() {
            out.insert(cells[1].to_lowercase(), ports);
        }
    }
    out
}

fn port_entries<'a>(svc: &'a Value, key: &str) -> Vec<&'a str> {
    svc[key]
        .as_sequence()
        .map(|ps| ps.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The ports a service listens on inside the network: `expose`, and the
/// container side of `ports` (`[IP:]HOST:CONTAINER`).
fn container_ports(svc: &Value) -> BTreeSet<u16> {
    port_entries(svc, "ports")
        .into_iter()
        .chain(port_entries(svc, "expose"))
        .filter_map(|p| p.rsplit(':').next()?.parse().ok())
        .collect()
}

/// The published ports: `(host IP, host port)` of each `ports` entry with a
/// fixed host port (`127.0.0.1::8083`, a port Docker picks, is not one).
fn published(svc: &Value) -> BTreeSet<(String, u16)> {
    port_entries(svc, "ports")
        .into_iter()
        .filter_map(|p| {
            let parts: Vec<&str> = p.split(':').collect();
            match parts.as_slice() {
                [ip, host, _] => Some((ip.to_string(), host.parse().ok()?)),
                [host, _] => Some((String::new(), host.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

fn host_ports(svc: &Value) -> BTreeSet<u16> {
    published(svc).into_iter().map(|(_, p)| p).collect()
}

/// What a user needs on the host at a fixed port (issue 10): SFTP, the Jaeger UI.
/// connect-manager's REST API is published too, on a port Docker picks per
/// replica (issue 14), see [`connect_manager_scales`].
const PUBLISHED: [(&str, u16); 2] = [("sftp-gateway", 2222), ("jaeger", 16686)];

/// `ports` entries whose host port Docker picks (`IP::CONTAINER`): `(IP, container port)`.
fn published_on_any_port(svc: &Value) -> BTreeSet<(String, u16)> {
    port_entries(svc, "ports")
        .into_iter()
        .filter_map(|p| {
            let parts: Vec<&str> = p.split(':').collect();
            match parts.as_slice() {
                [ip, "", container] => Some((ip.to_string(), container.parse().ok()?)),
                [container] => Some((String::new(), container.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

#[test]
fn ports_match_the_design() {
    let design = design_ports();
    let c = compose();
    for s in SERVICES {
        let want = design
            .get(s)
            .unwrap_or_else(|| panic!("DESIGN.md has no ports for {s}"));
        let svc = &services(&c)[s];
        assert_eq!(
            &container_ports(svc),
            want,
            "{s}: compose ports (expose and ports) differ from DESIGN.md"
        );
        // Listen addresses (0.0.0.0:PORT) set in compose use the design's ports.
        for (k, v) in svc["environment"].as_mapping().expect("env") {
            let (key, val) = (k.as_str().unwrap_or(""), v.as_str().unwrap_or(""));
            if let Some(port) = val.strip_prefix("0.0.0.0:") {
                let port: u16 = port.parse().expect("numeric port");
                assert!(
                    want.contains(&port),
                    "{s}: {key}={val} is not a design port"
                );
            }
        }
    }
    let pg = &services(&c)["postgres"];
    assert_eq!(container_ports(pg), BTreeSet::from([5432]));
    let jaeger = &services(&c)["jaeger"];
    assert_eq!(container_ports(jaeger), BTreeSet::from([4317, 16686]));
    assert_eq!(pg["environment"]["POSTGRES_DB"].as_str(), Some("nlp_db"));
    let kafka = &services(&c)["kafka"];
    assert!(
        kafka["environment"]["KAFKA_PROCESS_ROLES"]
            .as_str()
            .is_some_and(|r| r.contains("controller")),
        "Kafka runs in KRaft mode"
    );
}

#[test]
fn only_what_a_user_needs_is_published_and_only_on_loopback() {
    let c = compose();
    for (k, svc) in services(&c) {
        let n = name(k);
        let want: BTreeSet<u16> = PUBLISHED
            .iter()
            .filter(|(s, _)| *s == n)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(host_ports(svc), want, "{n}: published ports");
        for (ip, port) in published(svc).into_iter().chain(published_on_any_port(svc)) {
            assert_eq!(
                ip, "127.0.0.1",
                "{n}: port {port} must be bound to 127.0.0.1, not every interface"
            );
        }
    }
}

/// `docker compose up --scale connect-manager=3` (issue 14): replicas of one
/// distributed cluster, nothing fixed that two replicas would fight over, each
/// checked on its own, started once Kafka answers.
#[test]
fn connect_manager_scales() {
    let c = compose();
    let cm = &services(&c)["connect-manager"];
    assert!(
        cm.get("container_name").is_none(),
        "connect-manager: a container_name allows one replica only"
    );
    assert!(
        published(cm).is_empty(),
        "connect-manager: a fixed host port collides when scaled: {:?}",
        published(cm)
    );
    assert_eq!(
        published_on_any_port(cm),
        BTreeSet::from([("127.0.0.1".to_owned(), 8083)]),
        "connect-manager's REST API is reachable from the host, on a port Docker picks per replica"
    );
    let env = &cm["environment"];
    assert_eq!(
        env["ETL_MODE"].as_str(),
        Some("distributed"),
        "replicas share connectors and tasks only in distributed mode"
    );
    assert!(
        env["ETL_GROUP_ID"].as_str().is_some_and(|g| !g.is_empty()),
        "every replica joins the same group"
    );
    assert_eq!(
        cm["depends_on"]["kafka"]["condition"].as_str(),
        Some("service_healthy"),
        "the cluster lives in Kafka: start once Kafka is healthy"
    );
    assert!(
        cm["healthcheck"]["test"].as_sequence().is_some(),
        "each replica has its own healthcheck"
    );
    // A named volume would be one directory for every replica (worker ids and
    // the sink's static group membership derive from the data directory).
    let named: BTreeSet<&str> = c["volumes"]
        .as_mapping()
        .map(|v| v.keys().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for volume in cm["volumes"]
        .as_sequence()
        .map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let source = volume.split(':').next().unwrap_or("");
        assert!(
            !named.contains(source),
            "connect-manager mounts the named volume {source}: replicas would share it"
        );
    }
    // Scale with the partitions: the demo job's connectors get a task per partition.
    let job = &services(&c)["etlctl"]["environment"];
    let partitions = services(&c)["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]
        .as_u64()
        .expect("KAFKA_NUM_PARTITIONS");
    for var in ["ETL_SINK_TASKS_MAX", "ETL_SOURCE_TASKS_MAX"] {
        assert_eq!(
            job[var].as_str().and_then(|v| v.parse::<u64>().ok()),
            Some(partitions),
            "etlctl job: {var}"
        );
    }
}

/// A value that names a secret without holding it: compose interpolation
/// (`${VAR:?…}`, from `.env`) or a ConfigProvider reference (`$${env:VAR}`).
fn is_reference(value: &str) -> bool {
    value.contains("${")
}

#[test]
fn no_secret_is_written_in_compose() {
    let c = compose();
    let secret_name = |k: &str| {
        let k = k.to_ascii_uppercase();
        ["PASSWORD", "TOKEN", "SECRET", "PASSPHRASE"]
            .iter()
            .any(|w| k.contains(w))
            && !k.ends_with("_FILE")
    };
    for (k, svc) in services(&c) {
        let n = name(k);
        let Some(env) = svc["environment"].as_mapping() else {
            continue;
        };
        for (key, value) in env {
            let (key, value) = (key.as_str().unwrap_or(""), value.as_str().unwrap_or(""));
            if secret_name(key) {
                assert!(
                    is_reference(value),
                    "{n}: {key} holds a literal secret; take it from .env (${{{key}:?}})"
                );
            }
            // A password inside a URL (user:password@host).
            if let Some((_, rest)) = value.split_once("://")
                && let Some((userinfo, _)) = rest.split('/').next().unwrap_or("").rsplit_once('@')
                && let Some((_, password)) = userinfo.split_once(':')
            {
                assert!(
                    password.starts_with("${"),
                    "{n}: {key} has a literal password in its URL"
                );
            }
        }
    }
    // Every service of ours requires the control-plane token, from .env.
    for s in SERVICES.iter().chain(["etlctl"].iter()) {
        let token = services(&c)[*s]["environment"]["ETL_API_TOKEN"]
            .as_str()
            .unwrap_or_else(|| panic!("{s} gets no ETL_API_TOKEN"));
        assert!(token.starts_with("${ETL_API_TOKEN:?"), "{s}: {token}");
    }
    // `.env` keys are documented at the top of the file.
    let text = std::fs::read_to_string(root().join("compose.yaml")).expect("read compose.yaml");
    for key in ["ETL_API_TOKEN", "ETL_PG_PASSWORD", "ETL_SFTP_PASSWORD"] {
        assert!(
            text.lines()
                .take_while(|l| l.starts_with('#'))
                .any(|l| l.contains(key)),
            "the .env key {key} is not documented in compose.yaml's header"
        );
    }
}

/// Workspace binaries that are not part of the product's images: `etl-bench`
/// measures a local stack started from the checkout (`make bench`).
const DEVELOPER_TOOLS: [&str; 1] = ["etl-bench"];

fn workspace_binaries() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let mut bins = BTreeSet::new();
    for p in meta["packages"].as_array().expect("packages") {
        for t in p["targets"].as_array().expect("targets") {
            if t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
            {
                bins.insert(t["name"].as_str().expect("name").to_string());
            }
        }
    }
    bins
}

#[test]
fn dockerfile_builds_exactly_the_workspace_binaries() {
    let docker = std::fs::read_to_string(root().join("deploy/Dockerfile")).expect("Dockerfile");
    let built: BTreeSet<String> = docker
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1].to_string())
        .collect();
    let targets: BTreeSet<String> = docker
        .lines()
        .filter_map(|l| l.strip_prefix("FROM runtime AS "))
        .map(|t| t.trim().to_string())
        .collect();
    // Developer tools that drive a local stack from a checkout are not shipped.
    let bins: BTreeSet<String> = workspace_binaries()
        .into_iter()
        .filter(|b| !DEVELOPER_TOOLS.contains(&b.as_str()))
        .collect();
    assert_eq!(
        built, bins,
        "`cargo build --bin …` in the Dockerfile vs the workspace's binaries"
    );
    assert_eq!(targets, bins, "one runtime target per binary");
    for b in &bins {
        assert!(
            docker.contains(&format!(
                "COPY --from=builder /src/target/release/{b} /usr/local/bin/{b}"
            )),
            "target {b} must copy only its own binary"
        );
    }
    assert!(
        docker.contains("USER etl"),
        "runtime runs as a non-root user"
    );
    assert!(
        docker.contains("ca-certificates"),
        "runtime has CA certificates"
    );
    assert!(
        docker.contains("cargo chef cook"),
        "dependencies are cached in their own layer"
    );
    let c = compose();
    for s in SERVICES.iter().chain(["etlctl"].iter()) {
        assert_eq!(
            services(&c)[*s]["build"]["target"].as_str(),
            Some(*s),
            "compose builds {s} from its Dockerfile target"
        );
    }
}
