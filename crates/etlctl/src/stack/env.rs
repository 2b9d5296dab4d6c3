//! What the stack hands its services through the environment: every variable name, once,
//! and each process's values ([`StackPlan::instance_env`]).
//!
//! The names are the env twins of the services' flags (docs/ARCHITECTURE.md, "Flags and
//! env twins"), so a service started by hand with the same variables behaves the same.
//! Some of them are also connector file placeholders (`${ETL_TOPIC:-review-etl}`), filled
//! from `stack.json` by [`StackInfo::placeholder`](super::info::StackInfo::placeholder);
//! the placeholders that are no service's variable are at the end.

use super::plan::{CONNECT_GROUP_ID, Instance, Service, StackPlan, Tracing};
use super::secrets::{SftpAccount, StackSecrets};

// The control plane (every service).
/// A file whose first line is the API token every call must carry.
pub const API_TOKEN_FILE: &str = "ETL_API_TOKEN_FILE";
/// The token itself; blanked, so a token in the caller's environment cannot win.
pub const API_TOKEN: &str = "ETL_API_TOKEN";

// Listeners and peers.
pub const GRPC_ADDR: &str = "ETL_GRPC_ADDR";
/// connect-manager's Kafka-Connect REST listener.
pub const REST_ADDR: &str = "ETL_REST_ADDR";
/// The gateway's SFTP listener, and where the extractor uploads.
pub const SFTP_ADDR: &str = "ETL_SFTP_ADDR";
pub const KAFKA_BROKERS: &str = "ETL_KAFKA_BROKERS";
pub const DATABASE_URL: &str = "ETL_DATABASE_URL";
pub const VERIFIER_URL: &str = "ETL_VERIFIER_URL";
pub const GATEWAY_URL: &str = "ETL_GATEWAY_URL";
pub const TOPIC: &str = "ETL_TOPIC";
pub const DATA_DIR: &str = "ETL_DATA_DIR";
/// The extractor's StartRun reads below these directories only.
pub const INPUT_DIRS: &str = "ETL_INPUT_DIRS";

// connect-manager's cluster.
/// `standalone` or `distributed` (connect-manager's `--mode`). Set either way, so a
/// value in the caller's environment cannot turn a one-worker stack distributed.
pub const MODE: &str = "ETL_MODE";
/// The distributed cluster's name (Kafka Connect's `group.id`): the same for every
/// worker of a stack.
pub const GROUP_ID: &str = "ETL_GROUP_ID";

// SFTP accounts.
/// The gateway: its default user. The extractor: who it uploads as. The verifier: whose
/// rejected files it watches. connect-manager: its own account (informational; the
/// source connector logs in with its config's `sftp.username`).
pub const SFTP_USER: &str = "ETL_SFTP_USER";
/// The password of [`SFTP_USER`]. In connect-manager's environment it is what the source
/// connector's `sftp.password` refers to (`${env:ETL_SFTP_PASSWORD}`), so the stored
/// connector config holds a reference, never the password.
pub const SFTP_PASSWORD: &str = "ETL_SFTP_PASSWORD";
/// The gateway's further users, `NAME:PASSWORD,…`.
pub const SFTP_USERS: &str = "ETL_SFTP_USERS";
/// The gateway's permission profiles, `NAME:PROFILE,…`.
pub const SFTP_PERMISSIONS: &str = "ETL_SFTP_PERMISSIONS";
/// The gateway's users' roots, `NAME:ROOT,…`: both users get the one tree.
pub const SFTP_ROOTS: &str = "ETL_SFTP_ROOTS";
/// The gateway's users file; removed, so no user from the caller's environment exists.
pub const SFTP_USERS_FILE: &str = "ETL_SFTP_USERS_FILE";
/// The gateway's public-key users; removed like [`SFTP_USERS_FILE`].
pub const SFTP_AUTHORIZED_KEYS: &str = "ETL_SFTP_AUTHORIZED_KEYS";
/// The gateway's host key path; removed, so the key is the one in its data directory,
/// whose fingerprint the stack publishes to the clients.
pub const SFTP_HOST_KEY: &str = "ETL_SFTP_HOST_KEY";
/// The gateway's host key fingerprint (`SHA256:…`) that the extractor is to pin, and the
/// connector placeholder of the same value.
pub const SFTP_HOST_KEY_FINGERPRINT: &str = "ETL_SFTP_HOST_KEY_FINGERPRINT";

// Logs and traces.
pub const LOG_FORMAT: &str = "LOG_FORMAT";
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
/// What `--no-tracing` removes from the environment the services inherit.
const OTEL_EXPORT: [&str; 4] = [
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_SERVICE_NAME,
    OTEL_RESOURCE_ATTRIBUTES,
];

// Connector file placeholders that are no service's variable.
pub const SFTP_HOST: &str = "ETL_SFTP_HOST";
pub const SFTP_PORT: &str = "ETL_SFTP_PORT";
pub const PG_HOST: &str = "ETL_PG_HOST";
pub const PG_PORT: &str = "ETL_PG_PORT";
pub const PG_DATABASE: &str = "ETL_PG_DATABASE";
pub const PG_USER: &str = "ETL_PG_USER";
/// The sink's `tasks.max`: one task per connect-manager worker of the stack.
pub const SINK_TASKS_MAX: &str = "ETL_SINK_TASKS_MAX";
/// The source's `tasks.max`: one task per worker, and never fewer than 2 (what it
/// was before workers: in standalone mode, how many files the source sends at once).
pub const SOURCE_TASKS_MAX: &str = "ETL_SOURCE_TASKS_MAX";

impl StackPlan {
    /// The environment of one process: its listeners, its peers, its data directory,
    /// the stack's API token file, and its SFTP account (see `secrets`): the gateway
    /// gets both users with their profiles and their one root, the extractor its
    /// uploader login and the gateway's host key to pin, connect-manager the password
    /// its source connector refers to (and, per worker, its own listeners and data
    /// directory, the cluster's mode and group), the verifier the user whose rejected
    /// files it watches.
    pub fn instance_env(
        &self,
        instance: Instance,
        secrets: &StackSecrets,
    ) -> Vec<(&'static str, String)> {
        let service = instance.service;
        let mut env = vec![
            (
                API_TOKEN_FILE,
                self.dir.api_token_file().display().to_string(),
            ),
            (API_TOKEN, String::new()),
            (GRPC_ADDR, self.instance_grpc_addr(instance)),
            (SFTP_ADDR, self.sftp_addr()),
            (KAFKA_BROKERS, self.kafka_bootstrap()),
            (DATABASE_URL, self.postgres_url()),
            (VERIFIER_URL, self.grpc_url(Service::SinkVerifier)),
            (GATEWAY_URL, self.grpc_url(Service::SftpGateway)),
            (TOPIC, self.topic.clone()),
            (
                DATA_DIR,
                self.dir.instance_data(instance).display().to_string(),
            ),
            (LOG_FORMAT, "json".to_owned()),
        ];
        let login = |account: SftpAccount| {
            [
                (SFTP_USER, account.user().to_owned()),
                (SFTP_PASSWORD, secrets.password(account).to_owned()),
            ]
        };
        match service {
            Service::SftpGateway => {
                let (default, further) = (SftpAccount::Extractor, SftpAccount::Connect);
                env.extend(login(default));
                env.push((
                    SFTP_USERS,
                    format!("{}:{}", further.user(), secrets.password(further)),
                ));
                let each = |field: fn(SftpAccount) -> &'static str| {
                    SftpAccount::ALL
                        .iter()
                        .map(|&a| format!("{}:{}", a.user(), field(a)))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                env.push((SFTP_PERMISSIONS, each(SftpAccount::profile)));
                env.push((SFTP_ROOTS, each(SftpAccount::root)));
            }
            Service::Extractor => {
                env.extend(login(SftpAccount::Extractor));
                env.push((
                    SFTP_HOST_KEY_FINGERPRINT,
                    secrets.sftp_host_key.clone().unwrap_or_default(),
                ));
                // StartRun reads the demo's input, and nothing else on the host.
                env.push((INPUT_DIRS, self.dir.input().display().to_string()));
            }
            Service::ConnectManager => {
                env.extend(login(SftpAccount::Connect));
                env.push((
                    REST_ADDR,
                    self.instance_rest_addr(instance)
                        .unwrap_or_else(|| self.rest_addr()),
                ));
                if self.distributed() {
                    env.push((MODE, "distributed".to_owned()));
                    env.push((GROUP_ID, CONNECT_GROUP_ID.to_owned()));
                } else {
                    env.push((MODE, "standalone".to_owned()));
                }
            }
            Service::SinkVerifier => {
                // Whose root's rejected files it watches (the gateway streams a root's
                // notices to any of its users): the connector's, which moves them.
                env.push((SFTP_USER, SftpAccount::Connect.user().to_owned()));
            }
        }
        if let Some(endpoint) = self.otlp_endpoint() {
            env.push((OTEL_EXPORTER_OTLP_ENDPOINT, endpoint));
            env.push((OTEL_SERVICE_NAME, service.name().to_owned()));
            // Spans are exported in batches; the SDK's default 5 s delay would keep a
            // file's trace out of Jaeger for that long after its rows committed.
            if std::env::var_os(OTEL_BSP_SCHEDULE_DELAY).is_none() {
                env.push((OTEL_BSP_SCHEDULE_DELAY, "1000".to_owned()));
            }
            // The embedded collector keys Jaeger's "processes" by service.instance.id:
            // without one, every service is "unknown" and all spans of a trace show
            // the same service name. One instance per process and stack port (each
            // connect-manager worker its own; all of them the service connect-manager).
            let instance_id = format!(
                "service.instance.id={}-{}",
                service.name(),
                self.instance_grpc_port(instance)
            );
            let attributes = match std::env::var(OTEL_RESOURCE_ATTRIBUTES) {
                Ok(theirs) if !theirs.trim().is_empty() => format!("{theirs},{instance_id}"),
                _ => instance_id,
            };
            env.push((OTEL_RESOURCE_ATTRIBUTES, attributes));
        }
        env
    }

    /// Variables removed from the environment a service inherits from the supervisor
    /// (whoever ran `up`), where the stack's own choice is "not set": an empty value
    /// would not do, the services' flags take it for a value. The gateway accepts no
    /// user and no host key but the stack's; no password reaches a service that needs
    /// none; with `--no-tracing` nothing may switch exporting back on.
    pub fn service_env_removed(&self, service: Service) -> Vec<&'static str> {
        let mut removed = match service {
            Service::SftpGateway => vec![SFTP_USERS_FILE, SFTP_AUTHORIZED_KEYS, SFTP_HOST_KEY],
            Service::SinkVerifier => vec![SFTP_PASSWORD],
            Service::Extractor | Service::ConnectManager => Vec::new(),
        };
        if self.tracing == Tracing::Off {
            removed.extend(OTEL_EXPORT);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::plan::test_plan;

    fn secrets() -> StackSecrets {
        StackSecrets {
            extractor_password: "up-pw".to_owned(),
            connect_password: "cm-pw".to_owned(),
            sftp_host_key: Some("SHA256:key".to_owned()),
        }
    }

    fn get(env: &[(&str, String)], name: &str) -> Option<String> {
        env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    }

    fn one(service: Service) -> Instance {
        Instance::single(service)
    }

    #[test]
    fn each_service_gets_its_listeners_peers_and_data() {
        let mut p = test_plan("/x");
        p.ports.grpc_base = 40000;
        let env = p.instance_env(one(Service::ConnectManager), &secrets());
        assert_eq!(get(&env, GRPC_ADDR).as_deref(), Some("127.0.0.1:40002"));
        assert_eq!(get(&env, REST_ADDR).as_deref(), Some("127.0.0.1:8083"));
        assert_eq!(get(&env, DATA_DIR).as_deref(), Some("/x/connect"));
        assert_eq!(get(&env, MODE).as_deref(), Some("standalone"));
        assert_eq!(get(&env, GROUP_ID), None);
        assert!(env.contains(&(
            OTEL_EXPORTER_OTLP_ENDPOINT,
            "http://127.0.0.1:4317".to_owned()
        )));
        assert!(env.contains(&(OTEL_SERVICE_NAME, "connect-manager".to_owned())));
        assert!(
            get(&env, OTEL_RESOURCE_ATTRIBUTES)
                .is_some_and(|a| a.ends_with("service.instance.id=connect-manager-40002")),
            "{env:?}"
        );
        assert!(p.service_env_removed(Service::ConnectManager).is_empty());
        p.tracing = Tracing::Off;
        let off = p.instance_env(one(Service::ConnectManager), &secrets());
        assert!(!off.iter().any(|(k, _)| k.starts_with("OTEL_")), "{off:?}");
        assert!(
            p.service_env_removed(Service::ConnectManager)
                .contains(&OTEL_EXPORTER_OTLP_ENDPOINT)
        );
        p.tracing = Tracing::Endpoint("http://jaeger:4317".to_owned());
        assert!(
            p.instance_env(one(Service::Extractor), &secrets())
                .contains(&(OTEL_EXPORTER_OTLP_ENDPOINT, "http://jaeger:4317".to_owned()))
        );
        let gw = p.instance_env(one(Service::SftpGateway), &secrets());
        assert_eq!(get(&gw, DATA_DIR).as_deref(), Some("/x/sftp"));
        assert_eq!(get(&gw, REST_ADDR), None);
        for service in Service::ALL {
            let env = p.instance_env(one(service), &secrets());
            assert_eq!(
                get(&env, API_TOKEN_FILE).as_deref(),
                Some("/x/api-token"),
                "{service}"
            );
            assert_eq!(get(&env, API_TOKEN).as_deref(), Some(""), "{service}");
            // Each variable once: a second entry would silently win or lose.
            let mut names: Vec<&str> = env.iter().map(|(n, _)| *n).collect();
            names.sort_unstable();
            let count = names.len();
            names.dedup();
            assert_eq!(names.len(), count, "{service}: {env:?}");
        }
        assert_eq!(
            get(
                &p.instance_env(one(Service::Extractor), &secrets()),
                INPUT_DIRS
            )
            .as_deref(),
            Some("/x/input")
        );
    }

    #[test]
    fn each_sftp_client_logs_in_as_its_own_user() {
        let p = test_plan("/x");
        let s = secrets();
        let gw = p.instance_env(one(Service::SftpGateway), &s);
        assert_eq!(get(&gw, SFTP_USER).as_deref(), Some("extractor"));
        assert_eq!(get(&gw, SFTP_PASSWORD).as_deref(), Some("up-pw"));
        assert_eq!(get(&gw, SFTP_USERS).as_deref(), Some("connect:cm-pw"));
        assert_eq!(
            get(&gw, SFTP_PERMISSIONS).as_deref(),
            Some("extractor:upload,connect:full")
        );
        // One tree for both, named, not linked on disk.
        assert_eq!(
            get(&gw, SFTP_ROOTS).as_deref(),
            Some("extractor:etl,connect:etl")
        );
        for removed in [SFTP_USERS_FILE, SFTP_AUTHORIZED_KEYS, SFTP_HOST_KEY] {
            assert_eq!(get(&gw, removed), None, "{removed}");
            assert!(
                p.service_env_removed(Service::SftpGateway)
                    .contains(&removed)
            );
        }

        let ex = p.instance_env(one(Service::Extractor), &s);
        assert_eq!(get(&ex, SFTP_USER).as_deref(), Some("extractor"));
        assert_eq!(get(&ex, SFTP_PASSWORD).as_deref(), Some("up-pw"));
        assert_eq!(
            get(&ex, SFTP_HOST_KEY_FINGERPRINT).as_deref(),
            Some("SHA256:key")
        );

        let cm = p.instance_env(one(Service::ConnectManager), &s);
        assert_eq!(get(&cm, SFTP_USER).as_deref(), Some("connect"));
        assert_eq!(get(&cm, SFTP_PASSWORD).as_deref(), Some("cm-pw"));

        let verifier = p.instance_env(one(Service::SinkVerifier), &s);
        assert_eq!(get(&verifier, SFTP_USER).as_deref(), Some("connect"));
        assert_eq!(get(&verifier, SFTP_PASSWORD), None);
        assert_eq!(
            p.service_env_removed(Service::SinkVerifier),
            [SFTP_PASSWORD]
        );
    }

    #[test]
    fn each_worker_gets_its_own_listeners_and_data_and_the_one_group() {
        let mut p = test_plan("/x");
        p.connect_workers = 3;
        let envs: Vec<Vec<(&str, String)>> = (0..3)
            .map(|k| p.instance_env(Instance::connect_worker(k), &secrets()))
            .collect();
        let of = |name: &str| -> Vec<String> {
            envs.iter()
                .map(|env| get(env, name).unwrap_or_default())
                .collect()
        };
        assert_eq!(
            of(GRPC_ADDR),
            ["127.0.0.1:50053", "127.0.0.1:50055", "127.0.0.1:50056"]
        );
        assert_eq!(
            of(REST_ADDR),
            ["127.0.0.1:8083", "127.0.0.1:8084", "127.0.0.1:8085"]
        );
        assert_eq!(
            of(DATA_DIR),
            ["/x/connect-0", "/x/connect-1", "/x/connect-2"]
        );
        assert_eq!(of(MODE), ["distributed"; 3]);
        assert_eq!(of(GROUP_ID), [CONNECT_GROUP_ID; 3]);
        assert_eq!(of(OTEL_SERVICE_NAME), ["connect-manager"; 3]);
        let ids: std::collections::BTreeSet<String> =
            of(OTEL_RESOURCE_ATTRIBUTES).into_iter().collect();
        assert_eq!(ids.len(), 3, "one service.instance.id per worker: {ids:?}");
        // The other services do not change with the workers.
        let verifier = p.instance_env(one(Service::SinkVerifier), &secrets());
        assert_eq!(get(&verifier, MODE), None);
        assert_eq!(
            get(&verifier, GRPC_ADDR).as_deref(),
            Some("127.0.0.1:50054")
        );
    }
}
