//! What a connector is: a name and a flat string config whose
//! `connector.class` picks the kind. Parsing validates everything that can be
//! checked without a network, so a bad config fails at create time with an
//! error that names the option.

use std::{collections::BTreeMap, sync::Arc};

use etl_service::Shutdown;
use tokio::task::JoinHandle;

use crate::{Error, options::Options, sink::SinkConfig, source::SourceConfig, status::Status};

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

/// A validated connector config, ready to be turned into a running task.
#[derive(Clone, Debug)]
pub(crate) enum ConnectorConfig {
    Source(SourceConfig),
    Sink(SinkConfig),
}

impl ConnectorConfig {
    pub(crate) fn parse(name: &str, config: &BTreeMap<String, String>) -> Result<Self, Error> {
        check_name(name)?;
        let options = Options::new(name, config);
        let class = options.required("connector.class")?;
        let parsed = if SOURCE_CLASSES.contains(&class) {
            ConnectorConfig::Source(SourceConfig::from_options(name, &options)?)
        } else if SINK_CLASSES.contains(&class) {
            ConnectorConfig::Sink(SinkConfig::from_options(name, &options)?)
        } else {
            return Err(options.error(format!(
                "unknown connector.class {class:?}: expected one of {}",
                SOURCE_CLASSES
                    .iter()
                    .chain(SINK_CLASSES)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        options.log_unused();
        Ok(parsed)
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            ConnectorConfig::Source(_) => Kind::Source,
            ConnectorConfig::Sink(_) => Kind::Sink,
        }
    }

    /// Config in, task out: starts the connector's task, which runs until
    /// `ctx.shutdown` trips.
    pub(crate) fn spawn(self, ctx: TaskContext) -> JoinHandle<()> {
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
    pub(crate) brokers: String,
    pub(crate) status: Arc<Status>,
    /// Stops this connector alone (delete, replace) or with the service.
    pub(crate) shutdown: Shutdown,
    /// This worker's stable identity (from its data directory): the same after a
    /// restart, different for another worker. Part of the sink's `group.instance.id`.
    pub(crate) instance: String,
    /// The worker's data directory: where a connector keeps state that must survive
    /// a restart (the source's processed files).
    pub(crate) data_dir: std::path::PathBuf,
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
        assert_eq!(
            ConnectorConfig::parse("s", &src).expect("source").kind(),
            Kind::Source
        );
        let sink = map(&[
            ("connector.class", "JdbcSinkConnector"),
            ("topics", "t"),
            ("connection.url", "jdbc:postgresql://db:5432/x"),
        ]);
        assert_eq!(
            ConnectorConfig::parse("k", &sink).expect("sink").kind(),
            Kind::Sink
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
}
