//! What a connector is: a name and a flat string config whose
//! `connector.class` picks the kind. Parsing validates everything that can be
//! checked without a network, so a bad config fails at create time with an
//! error that names the option; an option the connector would ignore is
//! refused the same way (see `options`). Values may reference a secret
//! (`${env:VAR}`, `${file:/path:key}`): resolved here, each time the config is
//! parsed (at create and at every start), never stored resolved.

use std::{collections::BTreeMap, sync::Arc};

use etl_service::Shutdown;
use tokio::task::JoinHandle;

use etl_core::config_provider;

use crate::{
    Error,
    options::{self, Finding, Options, Verdict},
    secrets::Scrubber,
    sink::SinkConfig,
    source::SourceConfig,
    status::Status,
};

/// Class names (short and Confluent's full names) of the two kinds.
pub(crate) const SOURCE_CLASSES: &[&str] = &[
    "SftpCsvSourceConnector",
    "io.confluent.connect.sftp.SftpCsvSourceConnector",
];
pub(crate) const SINK_CLASSES: &[&str] = &[
    "JdbcSinkConnector",
    "io.confluent.connect.jdbc.JdbcSinkConnector",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Source,
    Sink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Sink => "sink",
        }
    }
}

/// A validated connector config, ready to be turned into running tasks.
#[derive(Clone, Debug)]
pub(crate) enum ConnectorConfig {
    Source(SourceConfig),
    Sink(SinkConfig),
}

/// A config that passed [`ConnectorConfig::parse`]: what to run, and how many tasks.
#[derive(Clone, Debug)]
pub(crate) struct Parsed {
    pub(crate) config: ConnectorConfig,
    /// Tasks to run: the source runs one (its `tasks.max` is the files it
    /// processes at once); the sink runs `tasks.max`, members of one consumer
    /// group that share the topics' partitions.
    pub(crate) tasks: u32,
    /// The config's secrets (as written and as resolved), to keep them out
    /// of the task's status and errors.
    pub(crate) secrets: Scrubber,
}

/// Everything known about a config: the parser's verdict and what
/// [`options::review`] found about its keys. `validate` shows all of it;
/// create refuses on a parse error or an unsupported option.
pub(crate) struct Review {
    pub(crate) kind: Option<Kind>,
    pub(crate) parsed: Result<Parsed, Error>,
    pub(crate) findings: Vec<Finding>,
}

/// The kind a `connector.class` names, if any.
pub(crate) fn kind_of_class(class: &str) -> Option<Kind> {
    let class = class.trim();
    if SOURCE_CLASSES.contains(&class) {
        Some(Kind::Source)
    } else if SINK_CLASSES.contains(&class) {
        Some(Kind::Sink)
    } else {
        None
    }
}

/// The most tasks a connector may run.
pub(crate) const MAX_TASKS: u32 = 64;

impl ConnectorConfig {
    /// Parses and reviews a config without acting on the findings.
    /// `${env:…}` and `${file:…}` references are resolved first (the
    /// parsers see the values; the caller keeps the references), and every
    /// message is cleaned of the config's secrets.
    pub(crate) fn review(name: &str, config: &BTreeMap<String, String>) -> Review {
        let resolved = match config_provider::resolve(
            config,
            |var| std::env::var(var).ok(),
            |path| std::fs::read_to_string(path).map_err(|e| e.to_string()),
        ) {
            Ok(resolved) => resolved,
            Err(e) => {
                let secrets = Scrubber::new([config]);
                return Review {
                    kind: config.get("connector.class").and_then(|c| kind_of_class(c)),
                    parsed: Err(Error::config(name, secrets.scrub(&e.to_string()))),
                    findings: Vec::new(),
                };
            }
        };
        let secrets = Scrubber::new([config, &resolved]);
        let mut review = Self::review_resolved(name, &resolved);
        review.parsed = match review.parsed {
            Ok(mut parsed) => {
                parsed.secrets = secrets.clone();
                Ok(parsed)
            }
            Err(Error::InvalidConfig { name, message }) => Err(Error::InvalidConfig {
                name,
                message: secrets.scrub(&message),
            }),
            Err(Error::InvalidRequest(message)) => {
                Err(Error::InvalidRequest(secrets.scrub(&message)))
            }
            Err(other) => Err(other),
        };
        for f in &mut review.findings {
            f.message = secrets.scrub(&f.message);
        }
        review
    }

    fn review_resolved(name: &str, config: &BTreeMap<String, String>) -> Review {
        let options = Options::new(name, config);
        let class = match check_name(name).and_then(|()| options.required("connector.class")) {
            Ok(class) => class,
            Err(e) => {
                return Review {
                    kind: None,
                    parsed: Err(e),
                    findings: Vec::new(),
                };
            }
        };
        let Some(kind) = kind_of_class(class) else {
            return Review {
                kind: None,
                parsed: Err(options.error(format!(
                    "unknown connector.class {class:?}: expected one of {}",
                    SOURCE_CLASSES
                        .iter()
                        .chain(SINK_CLASSES)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
                findings: Vec::new(),
            };
        };
        let parsed = match kind {
            Kind::Source => {
                SourceConfig::from_options(name, &options).map(|c| (ConnectorConfig::Source(c), 1))
            }
            Kind::Sink => SinkConfig::from_options(name, &options).and_then(|c| {
                let tasks = options.number("tasks.max", 1, 1, MAX_TASKS)?;
                Ok((ConnectorConfig::Sink(c), tasks))
            }),
        }
        .map(|(config, tasks)| Parsed {
            config,
            tasks,
            secrets: Scrubber::default(),
        });
        let findings = options::review(kind, &options);
        Review {
            kind: Some(kind),
            parsed,
            findings,
        }
    }

    /// Validates a config for create: the parser's error, else every option
    /// that is refused, in one error naming each; unknown keys and options
    /// without effect are logged at warn level and accepted.
    pub(crate) fn parse(name: &str, config: &BTreeMap<String, String>) -> Result<Parsed, Error> {
        let review = Self::review(name, config);
        let parsed = review.parsed?;
        let refused: Vec<&str> = review
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Unsupported)
            .map(|f| f.message.as_str())
            .collect();
        if !refused.is_empty() {
            return Err(Error::config(name, refused.join("; ")));
        }
        for f in &review.findings {
            tracing::warn!(connector = name, option = %f.key, "{}", f.message);
        }
        Ok(parsed)
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            ConnectorConfig::Source(_) => Kind::Source,
            ConnectorConfig::Sink(_) => Kind::Sink,
        }
    }

    /// The Kafka topics the connector writes (source) or reads (sink).
    pub(crate) fn topics(&self) -> Vec<String> {
        match self {
            ConnectorConfig::Source(c) => vec![c.topic.clone()],
            ConnectorConfig::Sink(c) => c.topics.clone(),
        }
    }

    /// Config in, task out: starts one task of the connector, which runs until
    /// `ctx.shutdown` trips.
    pub(crate) fn spawn(self, ctx: TaskContext) -> JoinHandle<()> {
        tracing::debug!(connector = %ctx.name, task = ctx.task, kind = self.kind().as_str(), api_token = ctx.client.has_token(), "task starting");
        match self {
            ConnectorConfig::Source(c) => tokio::spawn(crate::source::run(c, ctx)),
            ConnectorConfig::Sink(c) => tokio::spawn(crate::sink::run(c, ctx)),
        }
    }
}

/// What every connector task gets besides its config.
#[derive(Clone)]
pub(crate) struct TaskContext {
    pub(crate) name: String,
    /// The task's id, 0-based (Kafka Connect's `{connector}-{task}`).
    pub(crate) task: u32,
    pub(crate) brokers: String,
    pub(crate) status: Arc<Status>,
    /// Stops this task alone (pause, stop, restart, delete, replace) or with
    /// the service.
    pub(crate) shutdown: Shutdown,
    /// This task's stable identity on this worker (from the data directory and
    /// the task id): the same after a restart, different for another worker or
    /// task. Part of the sink's `group.instance.id`, so every sink task is its
    /// own static member of the group.
    pub(crate) instance: String,
    /// The worker's data directory: where a connector keeps state that must survive
    /// a restart (the source's processed files).
    pub(crate) data_dir: std::path::PathBuf,
    /// What the task's own gRPC calls carry (the API token, the CA of
    /// `https://` peers): the source's `WatchFiles` to the gateway.
    pub(crate) client: etl_service::ClientAuth,
    /// The cluster this worker belongs to, in distributed mode; None in standalone.
    pub(crate) cluster: Option<crate::cluster::TaskCluster>,
}

/// Names appear in URLs (`/connectors/{name}`), consumer group ids and the
/// store file: printable, no '/', not too long.
pub(crate) fn check_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::InvalidRequest(format!("connector name {name:?} {why}"));
    if name.trim().is_empty() {
        return Err(bad("is empty"));
    }
    if name.len() > 200 {
        return Err(bad("is longer than 200 bytes"));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(bad("contains '/' or a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn class_picks_the_kind() {
        let src = map(&[
            (
                "connector.class",
                "io.confluent.connect.sftp.SftpCsvSourceConnector",
            ),
            ("kafka.topic", "t"),
            ("some.unknown.option", "x"),
        ]);
        let parsed = ConnectorConfig::parse("s", &src).expect("source");
        assert_eq!((parsed.config.kind(), parsed.tasks), (Kind::Source, 1));
        let sink = map(&[
            ("connector.class", "JdbcSinkConnector"),
            ("topics", "t"),
            ("connection.url", "jdbc:postgresql://db:5432/x"),
        ]);
        let parsed = ConnectorConfig::parse("k", &sink).expect("sink");
        assert_eq!((parsed.config.kind(), parsed.tasks), (Kind::Sink, 1));
    }

    #[test]
    fn the_sink_runs_tasks_max_tasks() {
        let sink = map(&[
            ("connector.class", "JdbcSinkConnector"),
            ("topics", "t"),
            ("connection.url", "jdbc:postgresql://db:5432/x"),
            ("tasks.max", "3"),
        ]);
        assert_eq!(ConnectorConfig::parse("k", &sink).expect("sink").tasks, 3);
    }

    #[test]
    fn refused_options_are_all_named_in_one_error() {
        let sink = map(&[
            ("connector.class", "JdbcSinkConnector"),
            ("topics", "t"),
            (
                "connection.url",
                "jdbc:postgresql://db:5432/x?sslmode=verify-full",
            ),
            ("table.types", "VIEW"),
            ("not.an.option", "x"),
        ]);
        let err = ConnectorConfig::parse("k", &sink)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("\"table.types\"=\"VIEW\" is not supported"),
            "{err}"
        );
        assert!(err.contains("sslmode=verify-full"), "{err}");
        assert!(
            !err.contains("not.an.option"),
            "unknown keys are only warned about: {err}"
        );
        let review = ConnectorConfig::review("k", &sink);
        assert!(
            review
                .findings
                .iter()
                .any(|f| f.key == "not.an.option" && f.verdict == Verdict::Unknown)
        );
    }

    #[test]
    fn unknown_or_missing_class_is_an_error() {
        let err = ConnectorConfig::parse("x", &map(&[("connector.class", "FileStreamSource")]))
            .expect_err("unknown")
            .to_string();
        assert!(
            err.contains("unknown connector.class \"FileStreamSource\""),
            "{err}"
        );
        assert!(err.contains("JdbcSinkConnector"), "{err}");
        let err = ConnectorConfig::parse("x", &map(&[]))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("\"connector.class\" is missing"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("postgres-sink").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("a\nb").is_err());
    }

    mod prop {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::super::{ConnectorConfig, SINK_CLASSES, SOURCE_CLASSES};
        use crate::{Kind, options, secrets::is_secret_key};

        /// Values that parsers trip on: numbers out of range, booleans in odd
        /// spellings, lists, URLs, config references, and arbitrary text.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                any::<i64>().prop_map(|n| n.to_string()),
                prop::sample::select(vec![
                    "true",
                    "False",
                    "",
                    " ",
                    ",",
                    "a,,b",
                    "0",
                    "-1",
                    "99999999999999999999",
                    "jdbc:postgresql://h:5432/db?user=u&password=x",
                    "postgresql://u:p@[::1]:5432/db",
                    "jdbc:postgresql://",
                    "h:",
                    "[::1]:22",
                    "${env:NOPE}",
                    "${file:/nonexistent:k}",
                    "${",
                    "NONE",
                    "DELETE",
                    "MOVE",
                ])
                .prop_map(str::to_string),
                "[a-z0-9_.:/@?&=%-]{0,30}",
            ]
        }

        /// A config of known keys of one kind (and a few unknown ones).
        fn config() -> impl Strategy<Value = BTreeMap<String, String>> {
            let keys: Vec<&'static str> = options::catalog(Kind::Source)
                .chain(options::catalog(Kind::Sink))
                .map(|d| d.key)
                .chain(["some.unknown.option", "transforms"])
                .collect();
            let classes: Vec<&'static str> = SOURCE_CLASSES
                .iter()
                .chain(SINK_CLASSES)
                .copied()
                .chain(["x.Y"])
                .collect();
            (
                prop::sample::select(classes),
                prop::collection::btree_map(prop::sample::select(keys), value(), 0..24),
            )
                .prop_map(|(class, m)| {
                    let mut config: BTreeMap<String, String> =
                        m.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
                    config.insert("connector.class".into(), class.to_string());
                    config
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Arbitrary configs never panic the parser, and no message
            /// (error or finding) shows a secret's value.
            #[test]
            fn configs_never_panic_and_never_echo_secrets(
                mut config in config(),
                secret in "S3cr3t[A-Za-z0-9]{10}",
                scheme in prop::sample::select(vec!["jdbc:postgresql://", "postgresql://", "postgres://", "jdbc:mysql://", "", "jdbc:"]),
                userinfo in prop::sample::select(vec!["", "u:SECRET@", "u@", ":SECRET@", "u:SECRET:x@"]),
                host in prop::sample::select(vec!["h", "h:5432", "[::1]:5432", "h:99999999", "h:port", "", "[::1", "h:5432,h2:5432"]),
                query in prop::sample::select(vec!["", "user=u&password=SECRET", "password=SECRET&sslmode=bogus", "password=%zzSECRET", "password"]),
                junk in prop::sample::select(vec!["", "&x", "&=", "&sslmode=verify-full", "#frag", " "]),
            ) {
                for key in ["connection.password", "sftp.password", "tls.passphrase"] {
                    config.insert(key.to_string(), secret.clone());
                }
                // The secret also hides inside the URL, as users write them,
                // in URLs that are often malformed.
                let url = format!("{scheme}{userinfo}{host}/db?{query}{junk}")
                    .replace("SECRET", &secret);
                config.insert("connection.url".into(), url);
                prop_assume!(config.iter().all(|(k, v)| is_secret_key(k) || k == "connection.url" || !v.contains(&secret)));
                let review = ConnectorConfig::review("c", &config);
                if let Err(e) = &review.parsed {
                    prop_assert!(!e.to_string().contains(&secret), "{e}");
                }
                for f in &review.findings {
                    prop_assert!(!f.message.contains(&secret), "{}", f.message);
                }
                if let Err(e) = ConnectorConfig::parse("c", &config) {
                    prop_assert!(!e.to_string().contains(&secret), "{e}");
                }
            }
        }
    }
}
