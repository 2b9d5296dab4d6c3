//! The source's config: Confluent `SftpCsvSourceConnector` option names,
//! validated at create time.

use std::time::Duration;

use etl_core::{Field, FieldType, Schema};
use etl_sftp::{HostKeyPolicy, SftpAuth, SftpConfig};
use regex::Regex;
use serde::Deserialize;

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

/// `behavior.on.error`: what a file that cannot be sent (does not parse, does
/// not fit the schema) does besides moving to `error/` with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnError {
    /// The task stops (FAILED, naming the file and why) until it is restarted.
    Fail,
    /// The next files go on; the rejection is logged at debug level only.
    Ignore,
    /// The next files go on; the rejection is logged at warn level (our default).
    Log,
}

#[derive(Clone, Debug)]
pub(crate) struct SourceConfig {
    pub(crate) topic: String,
    pub(crate) sftp: SftpConfig,
    /// Which SFTP host keys to trust.
    pub(crate) host_keys: HostKeyPolicy,
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
    /// `value.schema`: the record schema, declared; no inference, no pinning.
    pub(crate) value_schema: Option<Schema>,
    pub(crate) on_error: OnError,
    /// `csv.skip.lines`: lines before the header that are not read.
    pub(crate) skip_lines: usize,
    /// `csv.null.field.indicator=BOTH`: every empty field is null, in text columns too.
    pub(crate) empty_is_null: bool,
    /// `batch.size`: records of a file awaiting acknowledgement at once, at most.
    pub(crate) in_flight: Option<usize>,
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
        let passphrase = o.get("tls.passphrase").map(str::to_string);
        let auth = match o.get("tls.private.key").map(str::trim) {
            None | Some("") => SftpAuth::Password(password),
            Some(key) if key.contains("-----BEGIN") => SftpAuth::KeyPem {
                pem: key.to_string(),
                passphrase,
            },
            Some(path) => SftpAuth::key(path, passphrase),
        };
        let host_keys = HostKeyPolicy::from_settings(
            o.get("sftp.host.key.fingerprint"),
            o.get("sftp.known.hosts.file").map(std::path::Path::new),
            o.boolean("sftp.host.key.trust.on.first.use", false)?,
        )
        .map_err(|e| o.error(e.to_string()))?;
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
            // empty.poll.wait.ms is Confluent's name for the wait after a listing
            // that found nothing; here every listing waits it (files found are
            // taken at once), so it stands in for file.poll.interval.ms.
            poll_interval: Duration::from_millis(match o.get("file.poll.interval.ms") {
                Some(_) => o.number("file.poll.interval.ms", 1000, 10, 86_400_000)?,
                None => o.number("empty.poll.wait.ms", 1000, 10, 86_400_000)?,
            }),
            partitions: o.number("topic.creation.default.partitions", 3, 1, 10_000)?,
            tasks: o.number("tasks.max", 2, 1, 64)?,
            gateway_url,
            schema_name: o.string("schema.name", "review"),
            schema_evolve: o.boolean("etl.schema.evolve", false)?,
            value_schema: match o.get("value.schema") {
                None => None,
                Some(json) => Some(
                    parse_value_schema(json, &o.string("schema.name", "review"))
                        .map_err(|e| o.error(format!("value.schema: {e}")))?,
                ),
            },
            on_error: match o
                .string("behavior.on.error", "LOG")
                .to_ascii_uppercase()
                .as_str()
            {
                "FAIL" => OnError::Fail,
                "IGNORE" => OnError::Ignore,
                "LOG" => OnError::Log,
                other => {
                    return Err(o.error(format!(
                        "behavior.on.error must be FAIL, IGNORE or LOG, got {other:?}"
                    )));
                }
            },
            skip_lines: o.number("csv.skip.lines", 0, 0, 1_000_000)?,
            empty_is_null: match o
                .string("csv.null.field.indicator", "NEITHER")
                .to_ascii_uppercase()
                .as_str()
            {
                "NEITHER" => false,
                "BOTH" => true,
                other @ ("EMPTY_SEPARATORS" | "EMPTY_QUOTES") => {
                    return Err(o.error(format!(
                        "csv.null.field.indicator={other} is not supported: the CSV reader does not tell a quoted empty field from an unquoted one; use BOTH (every empty field is null) or NEITHER"
                    )));
                }
                other => {
                    return Err(o.error(format!(
                        "csv.null.field.indicator must be NEITHER, BOTH, EMPTY_SEPARATORS or EMPTY_QUOTES, got {other:?}"
                    )));
                }
            },
            in_flight: match o.get("batch.size") {
                None => None,
                Some(_) => Some(o.number("batch.size", 1000, 1, 10_000_000)?),
            },
            sftp: SftpConfig {
                host,
                port,
                user,
                auth,
            },
            host_keys,
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

/// The field schemas of a `value.schema`, in the order written (a JSON object
/// read in order: the order of the record's fields).
struct OrderedFields(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = OrderedFields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of field schemas")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<OrderedFields, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(OrderedFields(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Confluent's JSON form of a Connect schema (`value.schema`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectSchema {
    name: Option<String>,
    #[serde(rename = "type")]
    ty: String,
    field_schemas: Option<OrderedFields>,
}

/// Parses `value.schema`: `{"name": …, "type": "STRUCT", "fieldSchemas": {"col":
/// {"type": "BOOLEAN", "isOptional": true}, …}}`. Field types: BOOLEAN, INT8,
/// INT16, INT32, INT64, FLOAT32, FLOAT64, STRING, and the logical Timestamp
/// (`{"name": "org.apache.kafka.connect.data.Timestamp", "type": "INT64"}`).
/// `isOptional` defaults to false, as in Kafka Connect.
pub(crate) fn parse_value_schema(json: &str, default_name: &str) -> Result<Schema, String> {
    let s: ConnectSchema =
        serde_json::from_str(json).map_err(|e| format!("not a Connect schema in JSON: {e}"))?;
    if !s.ty.eq_ignore_ascii_case("STRUCT") {
        return Err(format!(
            "type must be STRUCT (one field per CSV column), got {:?}",
            s.ty
        ));
    }
    let fields = s.field_schemas.ok_or("a STRUCT needs \"fieldSchemas\"")?.0;
    if fields.is_empty() {
        return Err("\"fieldSchemas\" is empty".into());
    }
    let fields = fields
        .into_iter()
        .map(|(name, f)| {
            let ty = f.get("type").and_then(|t| t.as_str()).unwrap_or("");
            let logical = f.get("name").and_then(|t| t.as_str());
            let ty = match (ty.to_ascii_uppercase().as_str(), logical) {
                ("INT64", Some(etl_core::schema::CONNECT_TIMESTAMP)) => FieldType::Timestamp,
                (_, Some(other)) if other.starts_with("org.apache.kafka.connect.data.") => {
                    return Err(format!(
                        "field {name:?}: logical type {other} is not supported (only Timestamp)"
                    ));
                }
                ("BOOLEAN", _) => FieldType::Boolean,
                ("INT8" | "INT16" | "INT32", _) => FieldType::Int32,
                ("INT64", _) => FieldType::Int64,
                ("FLOAT32", _) => FieldType::Float,
                ("FLOAT64", _) => FieldType::Double,
                ("STRING", _) => FieldType::String,
                _ => {
                    return Err(format!(
                        "field {name:?}: type {ty:?} is not supported: a CSV field is a BOOLEAN, INT8-INT64, FLOAT32, FLOAT64, STRING or a Timestamp"
                    ));
                }
            };
            let optional = match f.get("isOptional") {
                None => false,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| format!("field {name:?}: isOptional must be true or false"))?,
            };
            Ok(Field { name, ty, optional })
        })
        .collect::<Result<Vec<_>, String>>()?;
    for (i, f) in fields.iter().enumerate() {
        if fields[..i].iter().any(|g| g.name == f.name) {
            return Err(format!("field {:?} appears twice", f.name));
        }
    }
    Ok(Schema {
        name: s.name.unwrap_or_else(|| default_name.to_string()),
        fields,
    })
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
    fn kafka_connect_source_options() {
        let c = parse(&[
            ("kafka.topic", "t"),
            ("behavior.on.error", "fail"),
            ("csv.skip.lines", "2"),
            ("csv.null.field.indicator", "BOTH"),
            ("batch.size", "100"),
            ("empty.poll.wait.ms", "250"),
        ])
        .expect("valid");
        assert_eq!(c.on_error, OnError::Fail);
        assert_eq!(c.skip_lines, 2);
        assert!(c.empty_is_null);
        assert_eq!(c.in_flight, Some(100));
        assert_eq!(c.poll_interval, Duration::from_millis(250));
        let d = parse(&[("kafka.topic", "t")]).expect("defaults");
        assert_eq!(d.on_error, OnError::Log);
        assert_eq!(
            (d.skip_lines, d.empty_is_null, d.in_flight),
            (0, false, None)
        );
        assert!(d.value_schema.is_none());
        // file.poll.interval.ms wins over empty.poll.wait.ms.
        let c = parse(&[
            ("kafka.topic", "t"),
            ("file.poll.interval.ms", "500"),
            ("empty.poll.wait.ms", "250"),
        ])
        .expect("valid");
        assert_eq!(c.poll_interval, Duration::from_millis(500));
    }

    #[test]
    fn value_schema_in_confluents_form_keeps_field_order() {
        let json = r#"{"name": "com.example.Review", "type": "STRUCT", "isOptional": false,
            "fieldSchemas": {
                "zeta": {"type": "STRING", "isOptional": true},
                "is_streaming": {"type": "BOOLEAN", "isOptional": true},
                "n": {"type": "INT32"},
                "big": {"type": "INT64", "isOptional": true},
                "score": {"type": "FLOAT64", "isOptional": true},
                "at": {"name": "org.apache.kafka.connect.data.Timestamp", "type": "INT64", "version": 1, "isOptional": true}
            }}"#;
        let c = parse(&[("kafka.topic", "t"), ("value.schema", json)]).expect("valid");
        let schema = c.value_schema.expect("schema");
        assert_eq!(schema.name, "com.example.Review");
        let got: Vec<(&str, FieldType, bool)> = schema
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.ty, f.optional))
            .collect();
        assert_eq!(
            got,
            vec![
                ("zeta", FieldType::String, true),
                ("is_streaming", FieldType::Boolean, true),
                ("n", FieldType::Int32, false),
                ("big", FieldType::Int64, true),
                ("score", FieldType::Double, true),
                ("at", FieldType::Timestamp, true),
            ]
        );
        let unnamed = parse_value_schema(
            r#"{"type":"STRUCT","fieldSchemas":{"a":{"type":"STRING"}}}"#,
            "review",
        )
        .expect("valid");
        assert_eq!(unnamed.name, "review");
        for (bad, want) in [
            (r#"{"type":"STRING"}"#, "type must be STRUCT"),
            (r#"{"type":"STRUCT"}"#, "fieldSchemas"),
            (
                r#"{"type":"STRUCT","fieldSchemas":{"a":{"type":"BYTES"}}}"#,
                "\"BYTES\" is not supported",
            ),
            (
                r#"{"type":"STRUCT","fieldSchemas":{"d":{"type":"INT32","name":"org.apache.kafka.connect.data.Date"}}}"#,
                "Date is not supported",
            ),
            (
                r#"{"type":"STRUCT","fieldSchemas":{"a":{"type":"STRING"},"a":{"type":"INT64"}}}"#,
                "twice",
            ),
            ("not json", "not a Connect schema"),
        ] {
            let err = parse_value_schema(bad, "r").expect_err(bad);
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
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
            (
                &[("kafka.topic", "t"), ("behavior.on.error", "RETRY")],
                "behavior.on.error must be FAIL, IGNORE or LOG",
            ),
            (
                &[
                    ("kafka.topic", "t"),
                    ("csv.null.field.indicator", "EMPTY_QUOTES"),
                ],
                "EMPTY_QUOTES is not supported",
            ),
            (
                &[("kafka.topic", "t"), ("value.schema", "{}")],
                "value.schema: not a Connect schema",
            ),
            (
                &[("kafka.topic", "t"), ("batch.size", "0")],
                "\"batch.size\"",
            ),
        ];
        for (pairs, want) in cases {
            let err = parse(pairs).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert!(err.starts_with("connector \"src\""), "{err}");
        }
    }
}
