//! Typed reads of a connector's flat string map, with errors that name the
//! option and say what was expected; and the catalog of every option a Kafka
//! Connect user may bring, with what this service does with it.
//!
//! # Honesty about options
//! An option that is accepted and then ignored is worse than one refused: the
//! user believes it works. So after a connector's parser has read its options,
//! [`review`] sorts every key the config holds:
//! - read by the parser, or set to the one value that matches what the
//!   connector does anyway: fine;
//! - a Kafka Connect or Confluent option the connector does not honour
//!   ([`Support::NotYet`], [`Support::Only`]): refused, naming the option and
//!   why (a 400 from create and validate). A `NotYet` option is accepted as
//!   soon as the parser reads it, so honouring one needs no change here
//!   beyond its documentation;
//! - a tuning knob that means nothing here ([`Support::NoEffect`]): accepted,
//!   with a warning;
//! - a key nobody knows (a typo, an option of another connector): accepted
//!   with a warning at create, an error in validate.

use std::{cell::RefCell, collections::BTreeMap, collections::BTreeSet, str::FromStr};

use crate::{Error, connector::Kind};

/// A connector's options, remembering which ones were read.
pub(crate) struct Options<'a> {
    name: &'a str,
    map: &'a BTreeMap<String, String>,
    read: RefCell<BTreeSet<&'a str>>,
}

impl<'a> Options<'a> {
    pub(crate) fn new(name: &'a str, map: &'a BTreeMap<String, String>) -> Self {
        Self {
            name,
            map,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
        Error::config(self.name, message)
    }

    /// The trimmed value of `key`; an empty value counts as absent.
    pub(crate) fn get(&self, key: &'a str) -> Option<&'a str> {
        self.read.borrow_mut().insert(key);
        self.map
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `key` as given (not trimmed), e.g. a password; empty when absent.
    pub(crate) fn raw(&self, key: &'a str) -> &'a str {
        self.read.borrow_mut().insert(key);
        self.map.get(key).map(String::as_str).unwrap_or("")
    }

    pub(crate) fn string(&self, key: &'a str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    pub(crate) fn required(&self, key: &'a str) -> Result<&'a str, Error> {
        self.get(key)
            .ok_or_else(|| self.error(format!("required option {key:?} is missing")))
    }

    /// A whole number within `min..=max`.
    pub(crate) fn number<T>(&self, key: &'a str, default: T, min: T, max: T) -> Result<T, Error>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(self.error(format!(
                "option {key:?} must be a whole number from {min} to {max}, got {v:?}"
            ))),
        }
    }

    pub(crate) fn boolean(&self, key: &'a str, default: bool) -> Result<bool, Error> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(self.error(format!(
                "option {key:?} must be true or false, got {other:?}"
            ))),
        }
    }

    fn was_read(&self, key: &str) -> bool {
        self.read.borrow().contains(key)
    }
}

/// What the connectors do with an option of the catalog.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Support {
    /// Read and honoured (or, for framework options, honoured by the registry).
    Honoured,
    /// Only these values (compared without case) match what the connector does;
    /// any other value is refused with the reason, whether or not a parser reads
    /// the option (it is read only to be ignored).
    Only(&'static [&'static str], &'static str),
    /// Not honoured yet: refused when set to anything but the `accepted` values
    /// (the connector's fixed behaviour), until the connector's parser reads it.
    NotYet {
        accepted: &'static [&'static str],
        reason: &'static str,
    },
    /// A tuning knob without meaning here: accepted, with a warning saying why.
    NoEffect(&'static str),
    /// Configures something that does not exist here (Confluent's licence topic):
    /// accepted silently.
    Irrelevant(&'static str),
}

/// Which connectors an option belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Applies {
    Both,
    Source,
    Sink,
}

impl Applies {
    fn to(self, kind: Kind) -> bool {
        matches!(
            (self, kind),
            (Applies::Both, _) | (Applies::Source, Kind::Source) | (Applies::Sink, Kind::Sink)
        )
    }
}

/// One option, as `GET /connector-plugins/{class}/config` describes it
/// (Kafka Connect's `ConfigKeyInfo`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct OptionDef {
    pub(crate) key: &'static str,
    pub(crate) applies: Applies,
    /// Kafka Connect's type names: STRING, INT, LONG, BOOLEAN, LIST, PASSWORD, CLASS.
    pub(crate) ty: &'static str,
    pub(crate) required: bool,
    pub(crate) default: Option<&'static str>,
    /// HIGH, MEDIUM or LOW.
    pub(crate) importance: &'static str,
    pub(crate) group: &'static str,
    pub(crate) doc: &'static str,
    pub(crate) support: Support,
}

#[allow(clippy::too_many_arguments)] // a table row: one argument per column
const fn opt(
    key: &'static str,
    applies: Applies,
    ty: &'static str,
    default: Option<&'static str>,
    importance: &'static str,
    group: &'static str,
    doc: &'static str,
    support: Support,
) -> OptionDef {
    OptionDef {
        key,
        applies,
        ty,
        required: false,
        default,
        importance,
        group,
        doc,
        support,
    }
}

const fn required(mut d: OptionDef) -> OptionDef {
    d.required = true;
    d
}

use Applies::{Both, Sink, Source};
use Support::{Honoured, Irrelevant, NoEffect, NotYet, Only};

pub(crate) const STRING_CONVERTER: &str = "org.apache.kafka.connect.storage.StringConverter";
pub(crate) const JSON_CONVERTER: &str = "org.apache.kafka.connect.json.JsonConverter";
pub(crate) const HEADER_CONVERTER: &str = "org.apache.kafka.connect.storage.SimpleHeaderConverter";

const NO_TRANSFORMS: &str = "single message transforms are not supported: records reach Kafka and Postgres as the connectors build them";
const OWN_BACKOFF: &str =
    "retries use the service's own backoff (100 ms doubling up to 5 s), not this setting";

#[rustfmt::skip]
/// Every option a connector config may carry: Kafka Connect's framework
/// options, Confluent's `SftpCsvSourceConnector` and `JdbcSinkConnector`
/// options, and ours (`etl.*`).
pub(crate) const CATALOG: &[OptionDef] = &[
    // Kafka Connect's framework options.
    required(opt("name", Both, "STRING", None, "HIGH", "Common",
        "Globally unique name of the connector.", Honoured)),
    required(opt("connector.class", Both, "STRING", None, "HIGH", "Common",
        "SftpCsvSourceConnector or JdbcSinkConnector (short or Confluent's full class name).", Honoured)),
    opt("tasks.max", Source, "INT", Some("2"), "HIGH", "Common",
        "Files the source's one task processes at once (1-64). The source runs one task, as Confluent's does.", Honoured),
    opt("tasks.max", Sink, "INT", Some("1"), "HIGH", "Common",
        "Sink tasks (1-64), each a member of the sink's consumer group: the topics' partitions are shared among them.", Honoured),
    opt("tasks.max.enforce", Both, "BOOLEAN", Some("true"), "LOW", "Common",
        "A connector never runs more than tasks.max tasks here.", Honoured),
    opt("key.converter", Both, "CLASS", Some(STRING_CONVERTER), "LOW", "Common",
        "Record keys are the text {file}:{row}.",
        Only(&[STRING_CONVERTER], "record keys are the text {file}:{row}: only org.apache.kafka.connect.storage.StringConverter reads and writes them")),
    opt("value.converter", Both, "CLASS", Some(JSON_CONVERTER), "LOW", "Common",
        "Record values are Kafka Connect's JSON envelope with its schema.",
        Only(&[JSON_CONVERTER], "record values are Kafka Connect's JSON envelope {schema, payload}: only org.apache.kafka.connect.json.JsonConverter matches them")),
    opt("header.converter", Both, "CLASS", Some(HEADER_CONVERTER), "LOW", "Common",
        "Headers (traceparent, etl.file, etl.row, etl.run) are UTF-8 text.",
        Only(&[HEADER_CONVERTER, STRING_CONVERTER], "headers are UTF-8 text: only SimpleHeaderConverter or StringConverter reads them as written")),
    opt("key.converter.schemas.enable", Both, "BOOLEAN", None, "LOW", "Common",
        "Ignored by StringConverter, as in Kafka Connect.", Honoured),
    opt("value.converter.schemas.enable", Both, "BOOLEAN", Some("true"), "LOW", "Common",
        "The envelope always carries its schema.",
        Only(&["true"], "every record value carries its schema (the envelope {schema, payload}), which the sink needs to create and type its columns")),
    opt("config.action.reload", Both, "STRING", Some("restart"), "LOW", "Common",
        "A changed config always restarts the connector's tasks.", Honoured),
    opt("transforms", Both, "LIST", Some(""), "LOW", "Transforms",
        "Not supported.", Only(&[""], NO_TRANSFORMS)),
    opt("predicates", Both, "LIST", Some(""), "LOW", "Predicates",
        "Not supported.", Only(&[""], NO_TRANSFORMS)),
    opt("errors.retry.timeout", Both, "LONG", Some("0"), "MEDIUM", "Error Handling",
        "The sink retries a failed write until it succeeds; the source retries a file at the next poll.",
        Only(&["0", "-1"], "the sink retries a failed Postgres write with backoff until it succeeds, and the source retries a file at the next poll; no other stage retries")),
    opt("errors.retry.delay.max.ms", Both, "LONG", Some("60000"), "MEDIUM", "Error Handling",
        "Retries use the service's own backoff.", NoEffect(OWN_BACKOFF)),
    opt("errors.tolerance", Sink, "STRING", Some("none"), "MEDIUM", "Error Handling",
        "none: a record that cannot be decoded stops the task (FAILED), the record stays in Kafka. all: it goes to the dead letter queue, or is skipped and counted.", Honoured),
    opt("errors.tolerance", Source, "STRING", Some("none"), "MEDIUM", "Error Handling",
        "The source has no per-record conversion to tolerate: a file that does not parse goes to error/ (see behavior.on.error).",
        NotYet { accepted: &["none"], reason: "the source has no per-record conversion stage to tolerate errors in: a file that does not parse moves to error/ (see behavior.on.error)" }),
    opt("errors.log.enable", Both, "BOOLEAN", Some("false"), "MEDIUM", "Error Handling",
        "Sink: log each tolerated record (topic, partition, offset, reason) at warn level. Source: rejected files are always logged.", Honoured),
    opt("errors.log.include.messages", Both, "BOOLEAN", Some("false"), "LOW", "Error Handling",
        "Records are never written to the log.",
        Only(&["false"], "records are never written to the log (they hold user data); the log names topic, partition, offset and reason")),
    opt("errors.deadletterqueue.topic.name", Sink, "STRING", Some(""), "MEDIUM", "Error Handling",
        "Topic for records that cannot be decoded (needs errors.tolerance=all).", Honoured),
    opt("errors.deadletterqueue.topic.replication.factor", Sink, "SHORT", Some("1"), "LOW", "Error Handling",
        "The dead letter queue topic is created with replication factor 1.",
        Only(&["1"], "the dead letter queue topic is created with replication factor 1")),
    opt("errors.deadletterqueue.context.headers.enable", Sink, "BOOLEAN", Some("true"), "LOW", "Error Handling",
        "Add Kafka Connect's __connect.errors.* headers to dead-lettered records.", Honoured),
    opt("exactly.once.support", Source, "STRING", Some("requested"), "MEDIUM", "Exactly Once Support",
        "The source is at least once (idempotent producer; the sink's upsert makes replays harmless).",
        Only(&["requested"], "the source is at least once: a file re-sent after a crash is de-duplicated by the sink's upsert, not by Kafka transactions")),
    opt("transaction.boundary", Source, "STRING", Some("poll"), "MEDIUM", "Exactly Once Support",
        "The source does not use Kafka transactions.",
        Only(&["poll"], "the source does not use Kafka transactions")),
    opt("offsets.storage.topic", Source, "STRING", Some(""), "LOW", "Offsets Topic",
        "Source offsets are kept in <data-dir>/source-state/<name>.json.",
        Only(&[""], "source offsets are kept in <data-dir>/source-state/<name>.json, not in a topic")),
    opt("topic.creation.groups", Source, "LIST", Some(""), "LOW", "Topic Creation",
        "Only the default group.",
        Only(&[""], "only topic.creation.default.* is supported")),
    opt("topic.creation.default.partitions", Source, "INT", Some("3"), "LOW", "Topic Creation",
        "Partitions of kafka.topic when the source creates it.", Honoured),
    opt("topic.creation.default.replication.factor", Source, "SHORT", Some("1"), "LOW", "Topic Creation",
        "kafka.topic is created with replication factor 1.",
        NotYet { accepted: &["1"], reason: "kafka.topic is created with replication factor 1" }),
    opt("confluent.license", Both, "PASSWORD", Some(""), "LOW", "Confluent Licensing",
        "Not needed.", Irrelevant("no licence is needed")),
    opt("confluent.topic.bootstrap.servers", Both, "LIST", None, "LOW", "Confluent Licensing",
        "Not needed.", Irrelevant("no licence topic is used")),
    opt("confluent.topic.replication.factor", Both, "INT", Some("3"), "LOW", "Confluent Licensing",
        "Not needed.", Irrelevant("no licence topic is used")),
    // The source: Confluent's SftpCsvSourceConnector.
    required(opt("kafka.topic", Source, "STRING", None, "HIGH", "General",
        "The topic the records go to.", Honoured)),
    opt("batch.size", Source, "INT", None, "LOW", "General",
        "Records of a file awaiting the broker's acknowledgement at once, at most (Confluent: records per poll). Unset: bounded only by the producer's queue. A file still moves to finished/ only once all its records are acknowledged.", Honoured),
    opt("empty.poll.wait.ms", Source, "LONG", None, "LOW", "General",
        "How long to wait before listing the input directory again, when file.poll.interval.ms is not set (files found are taken at once; sftp-gateway's notices, with etl.gateway.url, arrive at once).", Honoured),
    opt("sftp.max.record.size", Source, "LONG", Some("0"), "LOW", "General",
        "Records are not limited in size (beyond the broker's message.max.bytes).",
        NotYet { accepted: &["0"], reason: "records are not limited in size here: a file with a larger record is sent, not moved to error/" }),
    opt("sftp.host", Source, "STRING", Some("127.0.0.1"), "HIGH", "Connection",
        "SFTP server host.", Honoured),
    opt("sftp.port", Source, "INT", Some("22"), "MEDIUM", "Connection",
        "SFTP server port.", Honoured),
    opt("sftp.username", Source, "STRING", Some("etl"), "HIGH", "Connection",
        "SFTP user.", Honoured),
    opt("sftp.password", Source, "PASSWORD", Some(""), "HIGH", "Connection",
        "SFTP password (not needed with tls.private.key).", Honoured),
    opt("tls.private.key", Source, "PASSWORD", None, "HIGH", "Connection",
        "Private key for SFTP key login: the key itself (OpenSSH or PEM text) or the path of a key file on the connect-manager's host.", Honoured),
    opt("tls.passphrase", Source, "PASSWORD", None, "MEDIUM", "Connection",
        "Passphrase of tls.private.key, if it is encrypted.", Honoured),
    opt("sftp.host.key.fingerprint", Source, "STRING", None, "HIGH", "Connection",
        "Trust only the SFTP server whose host key has this SHA-256 fingerprint (SHA256:..., as `ssh-keygen -lf` and `sftp-gateway host-key` print it). Without it or sftp.known.hosts.file, any host key is accepted (with a warning).", Honoured),
    opt("sftp.known.hosts.file", Source, "STRING", None, "MEDIUM", "Connection",
        "OpenSSH known_hosts file listing the SFTP server's host key; a server missing from it, or with another key, is refused.", Honoured),
    opt("sftp.host.key.trust.on.first.use", Source, "BOOLEAN", Some("false"), "LOW", "Connection",
        "With sftp.known.hosts.file: a server missing from the file is trusted and added to it (a changed key is still refused).", Honoured),
    opt("etl.gateway.url", Source, "STRING", None, "MEDIUM", "Connection",
        "http:// URL of sftp-gateway's gRPC listener: its WatchFiles notices announce uploads at once, with their trace context.", Honoured),
    opt("input.path", Source, "STRING", Some("input"), "HIGH", "Files",
        "Directory of new files.", Honoured),
    opt("finished.path", Source, "STRING", Some("finished"), "HIGH", "Files",
        "Where sent files move (cleanup.policy=MOVE).", Honoured),
    opt("error.path", Source, "STRING", Some("error"), "HIGH", "Files",
        "Where files that do not parse move, beside <name>.error.txt.", Honoured),
    opt("input.file.pattern", Source, "STRING", Some(r".*\.(csv|tsv)$"), "HIGH", "Files",
        "Regular expression the whole file name must match.", Honoured),
    opt("cleanup.policy", Source, "STRING", Some("MOVE"), "MEDIUM", "Files",
        "MOVE, DELETE or NONE (sent files are remembered in the source's state file).", Honoured),
    opt("behavior.on.error", Source, "STRING", Some("LOG"), "HIGH", "Files",
        "A file that cannot be sent moves to error/ beside <name>.error.txt in every case. FAIL: the task then stops, FAILED naming the file, until restarted. LOG: the next files go on, the rejection is logged at warn level. IGNORE: the same, logged at debug level. (Confluent's default is FAIL.)", Honoured),
    opt("file.minimum.age.ms", Source, "LONG", Some("0"), "LOW", "Files",
        "A file younger than this is left for a later poll.", Honoured),
    opt("file.poll.interval.ms", Source, "LONG", Some("1000"), "LOW", "Files",
        "How often the input directory is listed.", Honoured),
    opt("csv.first.row.as.header", Source, "BOOLEAN", Some("true"), "MEDIUM", "CSV",
        "Files start with a header row (false is refused).", Honoured),
    opt("csv.separator.char", Source, "INT", None, "LOW", "CSV",
        "Field separator as a character code (9 is tab); unset: detected from each file's header.", Honoured),
    opt("csv.quote.char", Source, "INT", Some("34"), "LOW", "CSV",
        "Fields are quoted with '\"'.",
        NotYet { accepted: &["34", "\""], reason: "fields are quoted with '\"' (34), RFC 4180" }),
    opt("csv.escape.char", Source, "INT", Some("34"), "LOW", "CSV",
        "Quotes inside a quoted field are doubled (Confluent's default is 92, a backslash).",
        NotYet { accepted: &["34", "\""], reason: "a quote inside a quoted field is doubled (RFC 4180); a backslash is an ordinary character" }),
    opt("csv.skip.lines", Source, "INT", Some("0"), "LOW", "CSV",
        "Lines at the start of each file that are not read; the header comes after them. Line numbers in rejection reasons count from the first line read.", Honoured),
    opt("csv.null.field.indicator", Source, "STRING", Some("NEITHER"), "LOW", "CSV",
        "NEITHER: an empty field is null in a typed column and an empty string in a text column. BOTH: every empty field is null. EMPTY_SEPARATORS and EMPTY_QUOTES are refused: the CSV reader does not tell a quoted empty field from an unquoted one.", Honoured),
    opt("csv.file.charset", Source, "STRING", Some("UTF-8"), "LOW", "CSV",
        "Files are UTF-8.",
        NotYet { accepted: &["UTF-8", "UTF8"], reason: "files are read as UTF-8; one that is not valid UTF-8 moves to error/" }),
    opt("schema.generation.enabled", Source, "BOOLEAN", Some("true"), "MEDIUM", "Schema",
        "The schema is inferred from each file (false is refused).", Honoured),
    opt("schema.name", Source, "STRING", Some("review"), "LOW", "Schema",
        "Name of the record schema.", Honoured),
    opt("etl.schema.evolve", Source, "BOOLEAN", Some("false"), "LOW", "Schema",
        "true: each file is sent with its own inferred schema instead of the one the first file pinned.", Honoured),
    opt("key.schema", Source, "STRING", Some(""), "MEDIUM", "Schema",
        "The key is always the text {file}:{row}.",
        NotYet { accepted: &[""], reason: "the record key is always the text {file}:{row}" }),
    opt("value.schema", Source, "STRING", Some(""), "MEDIUM", "Schema",
        "The record schema in Confluent's JSON form ({\"name\": ..., \"type\": \"STRUCT\", \"fieldSchemas\": {\"col\": {\"type\": \"BOOLEAN\", \"isOptional\": true}, ...}}); it wins over inference and pinning. Types: BOOLEAN, INT8-INT64, FLOAT32, FLOAT64, STRING, the Timestamp logical type. Each field is read from the column of its name; columns it does not name are not sent; a value that does not convert sends its file to error/. Unset: inferred from each file, pinned by the first.", Honoured),
    opt("schema.generation.key.fields", Source, "LIST", Some(""), "MEDIUM", "Schema",
        "The key is always {file}:{row}.",
        NotYet { accepted: &[""], reason: "the record key is always the text {file}:{row}" }),
    opt("timestamp.mode", Source, "STRING", Some("PROCESS_TIME"), "MEDIUM", "Timestamps",
        "Records carry the time they were produced.",
        NotYet { accepted: &["PROCESS_TIME"], reason: "records carry the time they were produced; FIELD is not supported yet" }),
    opt("timestamp.field", Source, "STRING", Some(""), "MEDIUM", "Timestamps",
        "See timestamp.mode.",
        NotYet { accepted: &[""], reason: "timestamp.mode FIELD is not supported yet" }),
    // The sink: Confluent's JdbcSinkConnector.
    opt("topics", Sink, "LIST", None, "HIGH", "Common",
        "Topics to read (comma-separated); give this or topics.regex.", Honoured),
    opt("topics.regex", Sink, "STRING", Some(""), "HIGH", "Common",
        "Read every topic whose whole name matches this regular expression (instead of topics). Topics created later are picked up at the consumer's next metadata refresh; the lag in the status covers the topics that matched when the task started.", Honoured),
    opt("consumer.override.group.id", Sink, "STRING", None, "LOW", "Common",
        "Consumer group of the sink (default connect-<name>).", Honoured),
    required(opt("connection.url", Sink, "STRING", None, "HIGH", "Connection",
        "jdbc:postgresql://host:port/db or postgres://user@host:port/db. sslmode must be disable, allow or prefer: connections run without TLS.", Honoured)),
    opt("connection.user", Sink, "STRING", None, "HIGH", "Connection",
        "Postgres user.", Honoured),
    opt("connection.password", Sink, "PASSWORD", None, "HIGH", "Connection",
        "Postgres password.", Honoured),
    opt("connection.attempts", Sink, "INT", None, "LOW", "Connection",
        "Attempts to connect to Postgres before the task stops, FAILED (until restarted). Unset: it reconnects until it succeeds, UNASSIGNED meanwhile (Confluent's default is 3).", Honoured),
    opt("connection.backoff.ms", Sink, "LONG", None, "LOW", "Connection",
        "Wait between connection attempts. Unset: the service's backoff, 100 ms doubling up to 5 s (Confluent's default is 10000).", Honoured),
    opt("dialect.name", Sink, "STRING", Some(""), "LOW", "Connection",
        "PostgreSQL only.",
        NotYet { accepted: &["", "PostgreSqlDatabaseDialect"], reason: "the sink writes to PostgreSQL only" }),
    opt("table.name.format", Sink, "STRING", Some("${topic}"), "MEDIUM", "Data Mapping",
        "Table of each record; ${topic} is replaced by the record's topic.", Honoured),
    opt("fields.whitelist", Sink, "LIST", Some(""), "MEDIUM", "Data Mapping",
        "Value fields to write (comma-separated); the key fields of pk.mode=record_value are written too. Empty: every field.", Honoured),
    opt("db.timezone", Sink, "STRING", Some("UTC"), "MEDIUM", "Data Mapping",
        "Timestamps are written as UTC instants.",
        Only(&["UTC", "Etc/UTC"], "timestamps are written as UTC instants: a timestamptz column holds the instant, a timestamp column (without time zone) receives its UTC wall-clock time; other zones are not supported")),
    opt("insert.mode", Sink, "STRING", Some("upsert"), "HIGH", "Writes",
        "upsert: INSERT ... ON CONFLICT (key) DO UPDATE, only when a value differs. insert: ON CONFLICT (key) DO NOTHING, or a plain INSERT with pk.mode=none (Confluent's insert fails on a duplicate key instead; ours makes a replay harmless). update: UPDATE the rows whose key matches; a record whose key matches no row is not inserted. upsert and update need a key (not pk.mode=none).", Honoured),
    opt("batch.size", Sink, "INT", Some("2000"), "MEDIUM", "Writes",
        "Records written per transaction, at most.", Honoured),
    opt("delete.enabled", Sink, "BOOLEAN", Some("false"), "MEDIUM", "Writes",
        "true: a record without a value (a tombstone) deletes the row of its key {file}:{row}; needs pk.mode=record_key. false: a tombstone cannot be decoded (see errors.tolerance).", Honoured),
    opt("pk.mode", Sink, "STRING", Some("record_key"), "HIGH", "Writes",
        "record_key: the key {file}:{row} gives the primary key (_etl_file, _etl_row) (Confluent's default is none). kafka: the record's topic, partition and offset, in the columns __connect_topic, __connect_partition, __connect_offset (or the three names of pk.fields). record_value: the value fields named in pk.fields. none: no primary key; rows are only inserted. The lineage columns are written in every mode.", Honoured),
    opt("pk.fields", Sink, "LIST", Some(""), "MEDIUM", "Writes",
        "record_value: the value fields of the key (required). kafka: the three column names (default __connect_topic,__connect_partition,__connect_offset). record_key: empty (or _etl_file,_etl_row). none: empty.", Honoured),
    opt("quote.sql.identifiers", Sink, "STRING", Some("ALWAYS"), "MEDIUM", "Writes",
        "ALWAYS: table and column names are used as written. NEVER: they mean what they would unquoted, folded to lower case as Postgres does (they are still quoted in the SQL sent, so no name from a file can change a statement).", Honoured),
    opt("table.types", Sink, "LIST", Some("TABLE"), "LOW", "Writes",
        "Tables only.", NotYet { accepted: &["TABLE"], reason: "the sink writes to tables only" }),
    opt("auto.create", Sink, "BOOLEAN", Some("true"), "MEDIUM", "DDL Support",
        "Create a missing table (Confluent's default is false).", Honoured),
    opt("auto.evolve", Sink, "BOOLEAN", Some("true"), "MEDIUM", "DDL Support",
        "Add missing columns (Confluent's default is false).", Honoured),
    opt("max.retries", Sink, "INT", None, "MEDIUM", "Retries",
        "Retries of a batch Postgres refuses; after the last the task stops, FAILED with the error, the batch uncommitted in Kafka (until restarted). Unset: retried until it succeeds, FAILED with the error meanwhile (Confluent's default is 10).", Honoured),
    opt("retry.backoff.ms", Sink, "INT", None, "MEDIUM", "Retries",
        "Wait between retries of a batch. Unset: the service's backoff, 100 ms doubling up to 5 s (Confluent's default is 3000).", Honoured),
];

impl OptionDef {
    /// The documentation, with what is accepted or why the option changes nothing.
    pub(crate) fn documentation(&self) -> String {
        match self.support {
            Support::Honoured => self.doc.to_string(),
            Support::Only(accepted, _) | Support::NotYet { accepted, .. } => {
                let shown: Vec<&str> = accepted.iter().filter(|a| !a.is_empty()).copied().collect();
                if shown.is_empty() {
                    format!("{} Not supported: leave it unset.", self.doc)
                } else {
                    format!("{} Accepted values: {}.", self.doc, shown.join(", "))
                }
            }
            Support::NoEffect(why) => format!("{} No effect: {why}.", self.doc),
            Support::Irrelevant(why) => format!("{} Ignored: {why}.", self.doc),
        }
    }

    /// The values that are accepted, when only some are.
    pub(crate) fn recommended_values(&self) -> &'static [&'static str] {
        match self.support {
            Support::Only(accepted, _) | Support::NotYet { accepted, .. } => accepted,
            _ => &[],
        }
    }
}

/// The options of `kind`, in catalog order (framework options first).
pub(crate) fn catalog(kind: Kind) -> impl Iterator<Item = &'static OptionDef> {
    CATALOG.iter().filter(move |d| d.applies.to(kind))
}

fn find(kind: Kind, key: &str) -> Option<&'static OptionDef> {
    catalog(kind).find(|d| d.key == key)
}

/// Key prefixes with a rule of their own.
enum Prefix {
    /// `transforms.*`, `predicates.*`: judged by `transforms` / `predicates`.
    CoveredBy,
    /// Client overrides: passed to no client unless a parser reads them.
    ClientOverride,
    Irrelevant,
}

fn prefix_rule(kind: Kind, key: &str) -> Option<Prefix> {
    if key.starts_with("transforms.") || key.starts_with("predicates.") {
        return Some(Prefix::CoveredBy);
    }
    if key.starts_with("confluent.topic.") {
        return Some(Prefix::Irrelevant);
    }
    let client = match kind {
        Kind::Sink => "consumer.override.",
        Kind::Source => "producer.override.",
    };
    if key.starts_with(client) || key.starts_with("admin.override.") {
        return Some(Prefix::ClientOverride);
    }
    None
}

/// What [`review`] found about one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) key: String,
    pub(crate) verdict: Verdict,
    pub(crate) message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Refused: create and validate answer 400.
    Unsupported,
    /// Accepted; it changes nothing here (warned at create).
    NoEffect,
    /// Not an option of this connector (warned at create, an error in validate).
    Unknown,
}

fn matches_any(value: &str, accepted: &[&str]) -> bool {
    let v = value.trim();
    accepted.iter().any(|a| {
        a.eq_ignore_ascii_case(v)
            // Lists compare item by item, ignoring spaces.
            || a.split(',').map(str::trim).eq(v.split(',').map(str::trim))
    })
}

fn unsupported(key: &str, value: &str, reason: &str) -> Finding {
    Finding {
        key: key.to_string(),
        verdict: Verdict::Unsupported,
        message: format!("option {key:?}={value:?} is not supported: {reason}"),
    }
}

/// Sorts every key of `options` (after its parser ran, so that what it read is
/// known) into what is refused, what has no effect and what is unknown. Keys
/// that are fine are not listed.
pub(crate) fn review(kind: Kind, options: &Options<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (key, value) in options.map {
        let set = !value.trim().is_empty();
        if let Some(def) = find(kind, key) {
            match def.support {
                Support::Honoured | Support::Irrelevant(_) => {}
                Support::Only(accepted, reason) => {
                    if set && !matches_any(value, accepted) {
                        findings.push(unsupported(key, value, reason));
                    }
                }
                Support::NotYet { accepted, reason } => {
                    if set && !options.was_read(key) && !matches_any(value, accepted) {
                        findings.push(unsupported(key, value, reason));
                    }
                }
                Support::NoEffect(reason) => {
                    if set && !options.was_read(key) {
                        findings.push(Finding {
                            key: key.clone(),
                            verdict: Verdict::NoEffect,
                            message: format!("option {key:?} has no effect: {reason}"),
                        });
                    }
                }
            }
            continue;
        }
        if options.was_read(key) {
            continue;
        }
        match prefix_rule(kind, key) {
            Some(Prefix::CoveredBy | Prefix::Irrelevant) => {}
            Some(Prefix::ClientOverride) => findings.push(unsupported(
                key,
                value,
                "client overrides are not passed to the connector's Kafka clients (only consumer.override.group.id is read)",
            )),
            None => findings.push(Finding {
                key: key.clone(),
                verdict: Verdict::Unknown,
                message: format!(
                    "{key:?} is not an option of the {} connector; ignored",
                    kind.as_str()
                ),
            }),
        }
    }
    if kind == Kind::Sink
        && let Some(url) = options.map.get("connection.url")
    {
        findings.extend(check_url_params(url));
    }
    findings
}

/// JDBC URL parameters the sink does not honour: anything that promises TLS, or
/// moves the tables to another schema.
fn check_url_params(url: &str) -> Vec<Finding> {
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    let mut findings = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let refuse = match (k, v.to_ascii_lowercase().as_str()) {
            ("sslmode", "disable" | "allow" | "prefer") => None,
            ("sslmode", _) | ("ssl", "true") => Some(
                "connections to Postgres run without TLS; use sslmode=disable (or allow, prefer)",
            ),
            ("currentSchema" | "options", _) => Some(
                "tables are created and written in the database user's current schema (its search_path)",
            ),
            _ => None,
        };
        if let Some(reason) = refuse {
            findings.push(Finding {
                key: "connection.url".into(),
                verdict: Verdict::Unsupported,
                message: format!(
                    "option \"connection.url\" parameter {k}={v} is not supported: {reason}"
                ),
            });
        }
    }
    findings
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
    fn typed_reads_name_the_option() {
        let m = map(&[("n", " 12 "), ("bad", "x"), ("b", "TRUE"), ("empty", "")]);
        let o = Options::new("c", &m);
        assert_eq!(o.number("n", 1u32, 1, 100).expect("n"), 12);
        assert_eq!(o.number("missing", 7u32, 1, 100).expect("default"), 7);
        let err = o.number("bad", 1u32, 1, 100).expect_err("bad").to_string();
        assert!(
            err.contains("\"bad\"") && err.contains("whole number"),
            "{err}"
        );
        let err = o.number("n", 1u32, 1, 10).expect_err("range").to_string();
        assert!(err.contains("from 1 to 10"), "{err}");
        assert!(o.boolean("b", false).expect("bool"));
        assert!(o.boolean("bad", false).is_err());
        assert_eq!(o.get("empty"), None);
        let err = o.required("empty").expect_err("required").to_string();
        assert!(err.contains("required option \"empty\""), "{err}");
    }

    fn verdicts(
        kind: Kind,
        pairs: &[(&str, &str)],
        read: &[&'static str],
    ) -> Vec<(String, Verdict)> {
        let m = map(pairs);
        let o = Options::new("c", &m);
        for k in read {
            let _ = o.get(k);
        }
        review(kind, &o)
            .into_iter()
            .map(|f| (f.key, f.verdict))
            .collect()
    }

    #[test]
    fn review_sorts_every_key() {
        let found = verdicts(
            Kind::Sink,
            &[
                ("topics", "t"),
                ("key.converter", STRING_CONVERTER),
                ("value.converter", "io.confluent.connect.avro.AvroConverter"),
                ("pk.fields", "_etl_file, _etl_row"),
                ("max.retries", "10"),
                ("errors.retry.delay.max.ms", "1000"),
                ("table.types", "VIEW"),
                ("db.timezone", "Europe/Paris"),
                ("transforms", "unwrap"),
                ("transforms.unwrap.type", "x"),
                ("consumer.override.max.poll.records", "10"),
                ("confluent.topic.bootstrap.servers", "b:9092"),
                ("delete.enabled", "false"),
                ("insert.mdoe", "upsert"),
            ],
            &["topics"],
        );
        let want = [
            ("consumer.override.max.poll.records", Verdict::Unsupported),
            ("db.timezone", Verdict::Unsupported),
            ("errors.retry.delay.max.ms", Verdict::NoEffect),
            ("insert.mdoe", Verdict::Unknown),
            ("table.types", Verdict::Unsupported),
            ("transforms", Verdict::Unsupported),
            ("value.converter", Verdict::Unsupported),
        ];
        assert_eq!(
            found,
            want.map(|(k, v)| (k.to_string(), v)).to_vec(),
            "{found:?}"
        );
    }

    #[test]
    fn a_not_yet_option_is_accepted_once_its_parser_reads_it() {
        let pairs = [("kafka.topic", "t"), ("csv.quote.char", "39")];
        assert_eq!(
            verdicts(Kind::Source, &pairs, &["kafka.topic"]),
            vec![("csv.quote.char".to_string(), Verdict::Unsupported)]
        );
        assert!(verdicts(Kind::Source, &pairs, &["kafka.topic", "csv.quote.char"]).is_empty());
        // The value that matches what the source does is fine either way.
        assert!(
            verdicts(
                Kind::Source,
                &[("kafka.topic", "t"), ("csv.quote.char", "34")],
                &["kafka.topic"]
            )
            .is_empty()
        );
    }

    #[test]
    fn tls_and_schema_url_parameters_are_refused() {
        let found = verdicts(
            Kind::Sink,
            &[(
                "connection.url",
                "jdbc:postgresql://h/db?sslmode=require&currentSchema=x&ApplicationName=a",
            )],
            &["connection.url"],
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            verdicts(
                Kind::Sink,
                &[("connection.url", "jdbc:postgresql://h/db?sslmode=disable")],
                &["connection.url"]
            )
            .is_empty()
        );
    }

    #[test]
    fn the_catalog_has_one_entry_per_key_and_kind() {
        for kind in [Kind::Source, Kind::Sink] {
            let mut seen = BTreeSet::new();
            for d in catalog(kind) {
                assert!(seen.insert(d.key), "{} twice for {kind:?}", d.key);
            }
        }
    }
}
