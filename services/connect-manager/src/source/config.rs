//! The source's config: Confluent `SftpCsvSourceConnector` option names,
//! validated at create time.

use std::time::Duration;

use etl_sftp::{SftpAuth, SftpConfig};
use regex::Regex;

use crate::{Error, options::Options};

/// What happens to a file once all its records are in Kafka.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cleanup {
    /// Rename into `finished.path` (the default).
    Move,
    Delete,
    /// Leave it; remembered in the connector's state file so it is not sent again
    /// until it changes.
    None,
}

#[derive(Clone, Debug)]
pub(crate) struct SourceConfig {
    pub(crate) topic: String,
    pub(crate) sftp: SftpConfig,
    pub(crate) input_path: String,
    pub(crate) finished_path: String,
    pub(crate) error_path: String,
    pub(crate) pattern: Regex,
    /// `None`: detect from the header line of each file.
    pub(crate) delimiter: Option<u8>,
    pub(crate) cleanup: Cleanup,
    pub(crate) min_age: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) partitions: i32,
    /// Files processed at once.
    pub(crate) tasks: usize,
    pub(crate) gateway_url: Option<String>,
    /// The record schema's name.
    pub(crate) schema_name: String,
    /// `etl.schema.evolve`: send each file with its own inferred schema instead of
    /// requiring the schema the first file pinned.
    pub(crate) schema_evolve: bool,
}

pub(crate) const DEFAULT_PATTERN: &str = r".*\.(csv|tsv)$";

impl SourceConfig {
    pub(crate) fn from_options(name: &str, o: &Options<'_>) -> Result<Self, Error> {
        let topic = o.required("kafka.topic")?.to_string();
        check_topic(&topic).map_err(|m| o.error(m))?;
        if !o.boolean("csv.first.row.as.header", true)? {
            return Err(o.error(
                "csv.first.row.as.header=false is not supported: files must start with a header row",
            ));
        }
        if !o.boolean("schema.generation.enabled", true)? {
            return Err(o.error(
                "schema.generation.enabled=false is not supported: the schema is inferred from each file",
            ));
        }
        let pattern_src = o.string("input.file.pattern", DEFAULT_PATTERN);
        // Kafka Connect matches the whole file name (Java's Matcher.matches).
        let pattern = Regex::new(&format!("^(?:{pattern_src})$")).map_err(|e| {
            o.error(format!(
                "input.file.pattern {pattern_src:?} is not a valid regular expression: {e}"
            ))
        })?;
        let delimiter = match o.get("csv.separator.char") {
            None => None,
            Some(_) => {
                let code: u32 = o.number("csv.separator.char", 44, 1, 127)?;
                let c = code as u8;
                if c == b'"' || c == b'\n' || c == b'\r' {
                    return Err(o.error(format!(
                        "csv.separator.char {code} cannot be a quote or a line break"
                    )));
                }
                Some(c)
            }
        };
        let cleanup = match o
            .string("cleanup.policy", "MOVE")
            .to_ascii_uppercase()
            .as_str()
        {
            "MOVE" => Cleanup::Move,
            "DELETE" => Cleanup::Delete,
            "NONE" => Cleanup::None,
            other => {
                return Err(o.error(format!(
                    "cleanup.policy must be MOVE, DELETE or NONE, got {other:?}"
                )));
            }
        };
        let host = o.string("sftp.host", "127.0.0.1");
        let port: u16 = o.number("sftp.port", 22, 1, u16::MAX)?;
        let user = o.string("sftp.username", "etl");
        let password = o.raw("sftp.password").to_string();
        let gateway_url = match o.get("etl.gateway.url") {
            None => None,
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u.to_string()),
            Some(u) => {
                return Err(o.error(format!(
                    "etl.gateway.url must be an http:// URL of sftp-gateway's gRPC listener, got {u:?}"
                )));
            }
        };
        let path = |key, default: &str| -> Result<String, Error> {
            let p = o.string(key, default);
            let p = p.trim_end_matches('/').to_string();
            if p.is_empty() {
                return Err(o.error(format!("{key} must not be empty or '/'")));
            }
            Ok(p)
        };
        let config = SourceConfig {
            input_path: path("input.path", "input")?,
            finished_path: path("finished.path", "finished")?,
            error_path: path("error.path", "error")?,
            pattern,
            delimiter,
            cleanup,
            min_age: Duration::from_millis(o.number("file.minimum.age.ms", 0, 0, u64::MAX)?),
            poll_interval: Duration::from_millis(o.number(
                "file.poll.interval.ms",
                1000,
                10,
                86_400_000,
            )?),
            partitions: o.number("topic.creation.default.partitions", 3, 1, 10_000)?,
            tasks: o.number("tasks.max", 2, 1, 64)?,
            gateway_url,
            schema_name: o.string("schema.name", "review"),
            schema_evolve: o.boolean("etl.schema.evolve", false)?,
            sftp: SftpConfig {
                host,
                port,
                user,
                auth: SftpAuth::Password(password),
            },
            topic,
        };
        if config.input_path == config.finished_path || config.input_path == config.error_path {
            return Err(o.error(format!(
                "input.path {:?} must differ from finished.path and error.path",
                config.input_path
            )));
        }
        tracing::debug!(connector = name, ?config, "source config");
        Ok(config)
    }
}

/// Kafka's rule: 1–249 of `[a-zA-Z0-9._-]`.
pub(crate) fn check_topic(topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "kafka.topic {topic:?} is not a valid topic name (1-249 of letters, digits, '.', '_', '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<SourceConfig, Error> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SourceConfig::from_options("src", &Options::new("src", &m))
    }

    #[test]
    fn defaults() {
        let c = parse(&[("kafka.topic", "review-etl")]).expect("valid");
        assert_eq!(c.topic, "review-etl");
        assert_eq!(c.sftp.port, 22);
        assert_eq!(
            (&*c.input_path, &*c.finished_path, &*c.error_path),
            ("input", "finished", "error")
        );
        assert_eq!(c.delimiter, None);
        assert_eq!(c.cleanup, Cleanup::Move);
        assert_eq!(c.poll_interval, Duration::from_millis(1000));
        assert_eq!((c.partitions, c.tasks), (3, 2));
        assert!(c.pattern.is_match("a.csv") && c.pattern.is_match("b.tsv"));
        assert!(!c.pattern.is_match("a.csv.part") && !c.pattern.is_match("a.txt"));
    }

    #[test]
    fn confluent_options() {
        let c = parse(&[
            ("kafka.topic", "t"),
            ("sftp.host", "sftp.example"),
            ("sftp.port", "2222"),
            ("sftp.username", "u"),
            ("sftp.password", "p w"),
            ("input.path", "in/"),
            ("csv.separator.char", "9"),
            ("cleanup.policy", "delete"),
            ("file.minimum.age.ms", "500"),
            ("input.file.pattern", "data_.*"),
            ("etl.gateway.url", "http://127.0.0.1:50052"),
        ])
        .expect("valid");
        assert_eq!(c.sftp.server(), "sftp.example:2222");
        assert!(matches!(&c.sftp.auth, SftpAuth::Password(p) if p == "p w"));
        assert_eq!(c.input_path, "in");
        assert_eq!(c.delimiter, Some(b'\t'));
        assert_eq!(c.cleanup, Cleanup::Delete);
        assert_eq!(c.min_age, Duration::from_millis(500));
        assert!(c.pattern.is_match("data_1") && !c.pattern.is_match("xdata_1"));
        assert_eq!(c.gateway_url.as_deref(), Some("http://127.0.0.1:50052"));
    }

    #[test]
    fn errors_name_the_option() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "\"kafka.topic\" is missing"),
            (&[("kafka.topic", "bad topic")], "not a valid topic name"),
            (
                &[("kafka.topic", "t"), ("csv.first.row.as.header", "false")],
                "csv.first.row.as.header=false",
            ),
            (
                &[("kafka.topic", "t"), ("sftp.port", "70000")],
                "\"sftp.port\" must be a whole number",
            ),
            (
                &[("kafka.topic", "t"), ("tasks.max", "two")],
                "\"tasks.max\"",
            ),
            (
                &[("kafka.topic", "t"), ("input.file.pattern", "(")],
                "input.file.pattern",
            ),
            (
                &[("kafka.topic", "t"), ("cleanup.policy", "ARCHIVE")],
                "cleanup.policy",
            ),
            (
                &[("kafka.topic", "t"), ("csv.separator.char", "34")],
                "csv.separator.char 34",
            ),
            (
                &[("kafka.topic", "t"), ("finished.path", "input")],
                "must differ",
            ),
            (
                &[("kafka.topic", "t"), ("etl.gateway.url", "127.0.0.1:50052")],
                "etl.gateway.url",
            ),
        ];
        for (pairs, want) in cases {
            let err = parse(pairs).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(err.starts_with("connector \"src\""), "{err}");
        }
    }
}
