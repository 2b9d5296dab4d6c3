//! The sink's config: Confluent `JdbcSinkConnector` option names, validated at
//! create time. `connection.url` takes the JDBC form
//! (`jdbc:postgresql://host:port/db?user=…`) or a libpq URL (`postgres://…`);
//! both are read by `tokio_postgres::Config`, this module only turns the JDBC
//! form into the libpq one.

use std::{fmt, time::Duration};

use etl_pg::lineage;
use regex::Regex;

use crate::{Error, options::Options, source::config::check_topic};

/// How a record's row reaches its table (Kafka Connect's `insert.mode`). Every
/// mode is idempotent on the key, so a replayed batch changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InsertMode {
    /// `ON CONFLICT (key) DO UPDATE` (only when a value differs).
    Upsert,
    /// `ON CONFLICT (key) DO NOTHING`: the first write of a row wins. With
    /// `pk.mode=none` (no key), a plain `INSERT`: a replay adds the rows again.
    Insert,
    /// `UPDATE … WHERE key = …`: only rows that exist change; a record whose
    /// key matches no row is not inserted (and counts as written).
    Update,
}

/// The primary key of the sink's tables (Kafka Connect's `pk.mode` and
/// `pk.fields`), as column names (folded when `quote.sql.identifiers=never`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PkMode {
    /// No key: rows are only ever inserted.
    None,
    /// `record_key` (our default): the key `{file}:{row}` gives the lineage
    /// columns `_etl_file`, `_etl_row`, which are the key.
    RecordKey,
    /// `kafka`: the record's topic, partition and offset, in these three columns
    /// (default `__connect_topic`, `__connect_partition`, `__connect_offset`).
    Kafka([String; 3]),
    /// `record_value`: these fields of the record value (`pk.fields`).
    RecordValue(Vec<String>),
}

impl PkMode {
    /// The key's columns, in key order (none for `pk.mode=none`).
    pub(crate) fn columns(&self) -> Vec<&str> {
        match self {
            PkMode::None => Vec::new(),
            PkMode::RecordKey => lineage::KEY.to_vec(),
            PkMode::Kafka(cols) => cols.iter().map(String::as_str).collect(),
            PkMode::RecordValue(fields) => fields.iter().map(String::as_str).collect(),
        }
    }
}

/// `quote.sql.identifiers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quoting {
    /// Names are used as written (quoted): `Review` is the table `Review`.
    Always,
    /// Names mean what they would unquoted: Postgres folds them to lower case
    /// (`Review` is the table `review`). They are still quoted in the SQL we
    /// send, so a column name from a file can never change a statement.
    Never,
}

impl Quoting {
    /// The name of the table or column `name` stands for.
    pub(crate) fn name(self, name: &str) -> String {
        match self {
            Quoting::Always => name.to_string(),
            Quoting::Never => name.to_lowercase(),
        }
    }
}

/// How a failing step is retried: at most `max` times after the first attempt
/// (`None`: until it succeeds), `fixed` apart (`None`: the service's backoff).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub(crate) max: Option<u32>,
    pub(crate) fixed: Option<Duration>,
}

/// Where the sink connects: `connection.url` read by `tokio_postgres::Config`,
/// then `connection.user` and `connection.password`. `Debug` and `Display`
/// never show the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PgTarget(tokio_postgres::Config);

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for PgTarget {
    /// `postgres://user@host:port/db`, for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&etl_pg::describe(&self.0))
    }
}

impl PgTarget {
    pub(crate) fn pg_config(&self) -> tokio_postgres::Config {
        self.0.clone()
    }
}

/// Kafka Connect's `errors.tolerance`: what a record that cannot be decoded does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tolerance {
    /// The task stops (FAILED, naming topic, partition, offset and reason) and the
    /// record stays in Kafka, uncommitted: nothing is skipped silently.
    None,
    /// The record goes to the dead letter queue when one is configured (else it is
    /// skipped and counted), and the task goes on.
    All,
}

/// Where records the sink could not decode go (`errors.tolerance=all`).
#[derive(Clone, Debug)]
pub(crate) struct DeadLetters {
    pub(crate) topic: String,
    /// `errors.deadletterqueue.context.headers.enable`: Kafka Connect's
    /// `__connect.errors.*` headers saying where the record came from and why.
    pub(crate) context_headers: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct SinkConfig {
    /// The topics named by `topics`; empty when `topics_regex` picks them.
    pub(crate) topics: Vec<String>,
    /// `topics.regex`: every topic whose whole name matches (Java's `matches`).
    pub(crate) topics_regex: Option<Regex>,
    pub(crate) target: PgTarget,
    /// `${topic}` is replaced by the record's topic.
    pub(crate) table_format: String,
    pub(crate) insert_mode: InsertMode,
    pub(crate) pk: PkMode,
    /// `fields.whitelist`: the value fields written (with the key fields); None: all.
    pub(crate) fields: Option<Vec<String>>,
    /// `delete.enabled`: a record without a value deletes its key's row.
    pub(crate) delete_enabled: bool,
    pub(crate) quoting: Quoting,
    pub(crate) auto_create: bool,
    pub(crate) auto_evolve: bool,
    pub(crate) batch_size: usize,
    pub(crate) group_id: String,
    pub(crate) tolerance: Tolerance,
    pub(crate) dead_letters: Option<DeadLetters>,
    /// `errors.log.enable`: log each tolerated error at warn level.
    pub(crate) log_errors: bool,
    /// `max.retries`, `retry.backoff.ms`: a batch Postgres refuses.
    pub(crate) write_retries: RetryPolicy,
    /// `connection.attempts`, `connection.backoff.ms`: connecting to Postgres.
    pub(crate) connect_retries: RetryPolicy,
}

/// The default column names of `pk.mode=kafka`, Kafka Connect's.
pub(crate) const KAFKA_PK: [&str; 3] =
    ["__connect_topic", "__connect_partition", "__connect_offset"];

fn list(value: Option<&str>) -> Vec<String> {
    value
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

impl SinkConfig {
    pub(crate) fn from_options(name: &str, o: &Options<'_>) -> Result<Self, Error> {
        let topics = list(o.get("topics"));
        for t in &topics {
            check_topic(t).map_err(|m| o.error(m.replace("kafka.topic", "topics entry")))?;
        }
        let topics_regex = match o.get("topics.regex") {
            None => None,
            Some(pattern) => Some(Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                o.error(format!(
                    "topics.regex {pattern:?} is not a valid regular expression: {e}"
                ))
            })?),
        };
        match (topics.is_empty(), &topics_regex) {
            (true, None) => {
                return Err(
                    o.error("required option \"topics\" is missing (or give \"topics.regex\")")
                );
            }
            (false, Some(_)) => {
                return Err(o.error(
                    "\"topics\" and \"topics.regex\" are both set: give one of them, as Kafka Connect requires",
                ));
            }
            _ => {}
        }
        let url = o.required("connection.url")?;
        let mut target = parse_connection_url(url).map_err(|reason| {
            o.error(format!(
                "connection.url is not a Postgres URL ({reason}); expected jdbc:postgresql://host:port/db or postgres://user@host:port/db"
            ))
        })?;
        if let Some(user) = o.get("connection.user") {
            target.0.user(user);
        }
        let password = o.raw("connection.password");
        if !password.is_empty() {
            target.0.password(password);
        }
        let table_format = o.string("table.name.format", "${topic}");
        let quoting = match o
            .string("quote.sql.identifiers", "always")
            .to_ascii_lowercase()
            .as_str()
        {
            "always" => Quoting::Always,
            "never" => Quoting::Never,
            other => {
                return Err(o.error(format!(
                    "quote.sql.identifiers must be always or never, got {other:?}"
                )));
            }
        };
        let insert_mode = match o
            .string("insert.mode", "upsert")
            .to_ascii_lowercase()
            .as_str()
        {
            "upsert" => InsertMode::Upsert,
            "insert" => InsertMode::Insert,
            "update" => InsertMode::Update,
            other => {
                return Err(o.error(format!(
                    "insert.mode must be upsert, insert or update, got {other:?}"
                )));
            }
        };
        let pk = pk_mode(o, quoting)?;
        if pk == PkMode::None && insert_mode != InsertMode::Insert {
            return Err(o.error(format!(
                "insert.mode={} needs a primary key to find rows by, and pk.mode=none has none: use insert.mode=insert, or a pk.mode of record_key, kafka or record_value",
                if insert_mode == InsertMode::Upsert { "upsert" } else { "update" }
            )));
        }
        let delete_enabled = o.boolean("delete.enabled", false)?;
        if delete_enabled && pk != PkMode::RecordKey {
            return Err(o.error(
                "delete.enabled=true needs pk.mode=record_key: a record without a value has only its key to say which row to delete",
            ));
        }
        let fields: Vec<String> = list(o.get("fields.whitelist"))
            .iter()
            .map(|f| quoting.name(f))
            .collect();
        let retries = |max_key, backoff_key| -> Result<RetryPolicy, Error> {
            Ok(RetryPolicy {
                max: match o.get(max_key) {
                    None => None,
                    Some(_) => Some(o.number(max_key, 0, 0, 1_000_000)?),
                },
                fixed: match o.get(backoff_key) {
                    None => None,
                    Some(_) => Some(Duration::from_millis(o.number(
                        backoff_key,
                        0,
                        0,
                        86_400_000,
                    )?)),
                },
            })
        };
        let write_retries = retries("max.retries", "retry.backoff.ms")?;
        let mut connect_retries = retries("connection.attempts", "connection.backoff.ms")?;
        if connect_retries.max.is_some() {
            // Attempts count the first one; retries do not.
            let attempts: u32 = o.number("connection.attempts", 1, 1, 1_000_000)?;
            connect_retries.max = Some(attempts - 1);
        }
        let config = SinkConfig {
            topics,
            topics_regex,
            target,
            table_format,
            insert_mode,
            pk,
            fields: (!fields.is_empty()).then_some(fields),
            delete_enabled,
            quoting,
            auto_create: o.boolean("auto.create", true)?,
            auto_evolve: o.boolean("auto.evolve", true)?,
            batch_size: o.number("batch.size", 2000, 1, 1_000_000)?,
            group_id: o
                .get("consumer.override.group.id")
                .map(str::to_string)
                .unwrap_or_else(|| format!("connect-{name}")),
            tolerance: match o
                .string("errors.tolerance", "none")
                .to_ascii_lowercase()
                .as_str()
            {
                "none" => Tolerance::None,
                "all" => Tolerance::All,
                other => {
                    return Err(o.error(format!(
                        "errors.tolerance must be none or all, got {other:?}"
                    )));
                }
            },
            dead_letters: None,
            log_errors: o.boolean("errors.log.enable", false)?,
            write_retries,
            connect_retries,
        };
        let _ = o.get("errors.log.include.messages");
        let mut config = config;
        if let Some(topic) = o.get("errors.deadletterqueue.topic.name") {
            check_topic(topic).map_err(|m| {
                o.error(m.replace("kafka.topic", "errors.deadletterqueue.topic.name"))
            })?;
            if config.tolerance == Tolerance::None {
                return Err(o.error(
                    "errors.deadletterqueue.topic.name needs errors.tolerance=all: with none, a record that cannot be decoded stops the task instead",
                ));
            }
            if config.reads(topic) {
                return Err(o.error(format!(
                    "errors.deadletterqueue.topic.name {topic:?} is one of the topics the sink reads"
                )));
            }
            config.dead_letters = Some(DeadLetters {
                topic: topic.to_string(),
                context_headers: o
                    .boolean("errors.deadletterqueue.context.headers.enable", true)?,
            });
        }
        let _ = o.get("errors.deadletterqueue.topic.replication.factor");
        tracing::debug!(connector = name, ?config, "sink config");
        Ok(config)
    }

    /// The table that records of `topic` go to.
    pub(crate) fn table_for(&self, topic: &str) -> String {
        self.quoting
            .name(&self.table_format.replace("${topic}", topic))
    }

    /// Whether the sink reads `topic` (named in `topics`, or matching `topics.regex`).
    pub(crate) fn reads(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
            || self
                .topics_regex
                .as_ref()
                .is_some_and(|r| r.is_match(topic))
    }

    /// What the consumer subscribes to: the topics, or librdkafka's form of a
    /// pattern (a leading `^`), anchored at both ends like Java's `matches`.
    pub(crate) fn subscription(&self) -> Vec<String> {
        match &self.topics_regex {
            Some(r) => vec![r.as_str().replacen("^(?:", "^(", 1)],
            None => self.topics.clone(),
        }
    }
}

/// `pk.mode` and `pk.fields`, with Kafka Connect's meanings.
fn pk_mode(o: &Options<'_>, quoting: Quoting) -> Result<PkMode, Error> {
    let fields = list(o.get("pk.fields"));
    let mode = o.string("pk.mode", "record_key").to_ascii_lowercase();
    let pk = match mode.as_str() {
        "none" => {
            if !fields.is_empty() {
                return Err(o.error("pk.fields must be empty with pk.mode=none"));
            }
            PkMode::None
        }
        "record_key" => {
            if !fields.is_empty() && fields != lineage::KEY {
                return Err(o.error(format!(
                    "pk.fields {fields:?} cannot be used with pk.mode=record_key: the record key is the text {{file}}:{{row}}, which gives the key columns _etl_file, _etl_row (leave pk.fields empty)"
                )));
            }
            PkMode::RecordKey
        }
        "kafka" => {
            let names: Vec<String> = if fields.is_empty() {
                KAFKA_PK.iter().map(|s| s.to_string()).collect()
            } else {
                fields
            };
            let [topic, partition, offset]: [String; 3] = names.try_into().map_err(|names: Vec<String>| {
                o.error(format!(
                    "pk.fields with pk.mode=kafka names the topic, partition and offset columns: three names, got {}",
                    names.len()
                ))
            })?;
            PkMode::Kafka([topic, partition, offset].map(|n| quoting.name(&n)))
        }
        "record_value" => {
            if fields.is_empty() {
                return Err(o.error(
                    "pk.mode=record_value needs pk.fields naming the value fields of the key (a key of every field is not supported)",
                ));
            }
            PkMode::RecordValue(fields.iter().map(|n| quoting.name(n)).collect())
        }
        other => {
            return Err(o.error(format!(
                "pk.mode must be none, kafka, record_key or record_value, got {other:?}"
            )));
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for c in pk.columns() {
        if pk != PkMode::RecordKey && lineage::is_lineage(c) {
            return Err(o.error(format!(
                "pk.fields names {c:?}, a lineage column the sink fills itself"
            )));
        }
        if !seen.insert(c) {
            return Err(o.error(format!("pk.fields names {c:?} twice")));
        }
    }
    Ok(pk)
}

/// Why `connection.url` cannot be used. Holds no part of the URL: a password
/// may be anywhere in it (`user:pass@`, `?password=`, or misplaced).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UrlError {
    #[error("unknown scheme")]
    Scheme,
    #[error("a '%' not followed by two hex digits (write a literal '%' as %25)")]
    PercentEscape,
    #[error("more than one '@' before the host (write an '@' in a user or password as %40)")]
    SeveralAt,
    #[error("several hosts are not supported")]
    SeveralHosts,
    /// What `tokio_postgres` said: an option's name, never its value.
    #[error("{0}")]
    Invalid(String),
}

/// The libpq parameters `tokio_postgres` applies. A URL's other parameters are
/// the JDBC driver's own (`currentSchema`, `ssl`, `reWriteBatchedInserts`,
/// `stringtype`, …): Kafka Connect hands them to that driver, this sink has no
/// use for them and leaves them out, as it always has (`currentSchema`,
/// `options` and TLS are refused separately, with reasons, by the option
/// review).
const LIBPQ_PARAMS: [&str; 19] = [
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Reads `connection.url`: a JDBC URL (`jdbc:postgresql://host:port/db?user=u&password=p`,
/// `jdbc:postgresql:db`) or a libpq URL (`postgres[ql]://user:pass@host:port/db`).
/// `tokio_postgres::Config` parses it (percent-decoding, IPv6 brackets, ports);
/// what is done here is only what JDBC differs in: the `jdbc:` prefix, the
/// host-less `jdbc:postgresql:db` form, JDBC-only parameters and `sslmode`
/// values libpq spells differently. Missing parts default as JDBC does:
/// localhost, 5432, user `postgres`, database = user.
pub(crate) fn parse_connection_url(url: &str) -> Result<PgTarget, UrlError> {
    let url = url.trim();
    // libpq refuses a bad escape; tokio_postgres would keep it as text, and
    // connect with a password or database that is not the one meant.
    check_percent_escapes(url)?;
    let libpq = match url.strip_prefix("jdbc:") {
        Some(jdbc) => {
            let rest = jdbc.strip_prefix("postgresql:").ok_or(UrlError::Scheme)?;
            match rest.strip_prefix("//") {
                Some(_) => format!("postgresql:{rest}"),
                // jdbc:postgresql:db, jdbc:postgresql:/ (JDBC: host localhost)
                None => format!("postgresql://localhost/{}", rest.trim_start_matches('/')),
            }
        }
        None if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            url.to_string()
        }
        None => return Err(UrlError::Scheme),
    };
    let (scheme, rest) = libpq.split_once("://").ok_or(UrlError::Scheme)?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.matches('@').count() > 1 {
        // tokio_postgres would split at the first '@' and take the rest of the
        // password for a host name, which then shows in every log line.
        return Err(UrlError::SeveralAt);
    }
    // tokio_postgres looks for the user's '@' in the whole URL, where libpq
    // stops at the first '/': an '@' in the database or a parameter (JDBC
    // allows `?password=a@b`) would make the start of the URL a user name.
    // Encoded, it is what it was meant to be.
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    let path = path.replace('@', "%40");
    let params = libpq_params(query);
    let libpq = if params.is_empty() {
        format!("{scheme}://{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}?{}", params.join("&"))
    };
    let mut config: tokio_postgres::Config =
        libpq.parse().map_err(|e: tokio_postgres::Error| {
            // "invalid connection string: invalid value for option `port`"
            UrlError::Invalid(match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            })
        })?;
    match config.get_hosts().len() {
        0 => {
            config.host("localhost");
        }
        1 => {}
        _ => return Err(UrlError::SeveralHosts),
    }
    if config.get_user().is_none() {
        config.user("postgres");
    }
    if config.get_dbname().is_none() {
        let user = config.get_user().unwrap_or("postgres").to_string();
        config.dbname(user);
    }
    if config.get_application_name().is_none() {
        config.application_name("connect-manager");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    Ok(PgTarget(config))
}

/// The query's libpq parameters as `key=value` (still percent-encoded, for
/// tokio_postgres to decode; an '@' encoded too), others left out. `sslmode` is mapped to the
/// values tokio_postgres knows, never to a weaker one: `allow` (plain first)
/// is `prefer`; `verify-ca`/`verify-full` are `require`, which fails at
/// connect (connections have no TLS) instead of running unverified. JDBC's
/// `ssl=true` means TLS too.
fn libpq_params(query: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut ssl_asked = false;
    let mut sslmode_given = false;
    for pair in query.split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        match key {
            "ssl" => ssl_asked |= value.eq_ignore_ascii_case("true"),
            "sslmode" => {
                sslmode_given = true;
                let mode = match value.to_ascii_lowercase().as_str() {
                    "allow" => "prefer".to_string(),
                    "verify-ca" | "verify-full" => "require".to_string(),
                    other => other.to_string(),
                };
                out.push(format!("sslmode={mode}"));
            }
            _ if LIBPQ_PARAMS.contains(&key) => out.push(pair.replace('@', "%40")),
            _ => {}
        }
    }
    if ssl_asked && !sslmode_given {
        out.push("sslmode=require".to_string());
    }
    out
}

/// Every '%' starts `%XX` with two hex digits, as libpq requires.
fn check_percent_escapes(url: &str) -> Result<(), UrlError> {
    let bytes = url.as_bytes();
    for (i, _) in url.match_indices('%') {
        let hex = bytes.get(i + 1..i + 3).ok_or(UrlError::PercentEscape)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(UrlError::PercentEscape);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Host, port, database, user and password of a target.
    fn parts(t: &PgTarget) -> (String, u16, String, String, String) {
        let c = t.pg_config();
        let host = match c.get_hosts() {
            [tokio_postgres::config::Host::Tcp(h)] => h.clone(),
            other => format!("{other:?}"),
        };
        (
            host,
            c.get_ports().first().copied().unwrap_or(5432),
            c.get_dbname().unwrap_or_default().to_string(),
            c.get_user().unwrap_or_default().to_string(),
            String::from_utf8_lossy(c.get_password().unwrap_or_default()).into_owned(),
        )
    }

    fn url(s: &str) -> Result<(String, u16, String, String, String), UrlError> {
        parse_connection_url(s).map(|t| parts(&t))
    }

    fn expect(
        host: &str,
        port: u16,
        db: &str,
        user: &str,
        pw: &str,
    ) -> Result<(String, u16, String, String, String), UrlError> {
        Ok((host.into(), port, db.into(), user.into(), pw.into()))
    }

    #[test]
    fn jdbc_and_libpq_urls() {
        assert_eq!(
            url(
                "jdbc:postgresql://db.example:5433/nlp_db?user=etl&password=s%40cret&sslmode=disable"
            ),
            expect("db.example", 5433, "nlp_db", "etl", "s@cret")
        );
        assert_eq!(
            url("jdbc:postgresql://127.0.0.1/nlp_db"),
            expect("127.0.0.1", 5432, "nlp_db", "postgres", "")
        );
        assert_eq!(
            url("jdbc:postgresql:nlp_db"),
            expect("localhost", 5432, "nlp_db", "postgres", "")
        );
        assert_eq!(
            url("jdbc:postgresql:/?user=me"),
            expect("localhost", 5432, "me", "me", "")
        );
        assert_eq!(
            url("postgres://u:p%3Aw@[::1]:6000/d"),
            expect("::1", 6000, "d", "u", "p:w")
        );
        assert_eq!(url("postgresql://me@h"), expect("h", 5432, "me", "me", ""));
        assert_eq!(
            url(" postgresql:///d?host=h&port=7 "),
            expect("h", 7, "d", "postgres", "")
        );
        // An '@' after the host is data, as libpq reads it.
        assert_eq!(
            url("jdbc:postgresql://h/d@b?user=u&password=a@b"),
            expect("h", 5432, "d@b", "u", "a@b")
        );
        for bad in [
            "mysql://h/db",
            "jdbc:mysql://h/db",
            "postgres:db",
            "jdbc:postgresql://h:port/db",
            "jdbc:postgresql://a,b/db",
            "postgres://h/%zz",
            "postgres://h/db%2",
            "postgres://h/db?sslmode=sometimes",
        ] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jdbc_parameters_are_left_out_and_sslmode_never_weakened() {
        let t = parse_connection_url(
            "jdbc:postgresql://h/db?currentSchema=etl&ssl=false&reWriteBatchedInserts=true\
             &ApplicationName=x&stringtype=unspecified&user=u&connect_timeout=3",
        )
        .expect("JDBC-only parameters are ignored");
        let c = t.pg_config();
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(c.get_application_name(), Some("connect-manager"));
        assert_eq!(c.get_options(), None);
        let mode = |u: &str| parse_connection_url(u).map(|t| t.pg_config().get_ssl_mode());
        use tokio_postgres::config::SslMode;
        assert_eq!(mode("postgres://h/d"), Ok(SslMode::Prefer));
        assert_eq!(mode("postgres://h/d?sslmode=disable"), Ok(SslMode::Disable));
        assert_eq!(mode("postgres://h/d?sslmode=allow"), Ok(SslMode::Prefer));
        assert_eq!(
            mode("jdbc:postgresql://h/d?sslmode=verify-full"),
            Ok(SslMode::Require)
        );
        assert_eq!(mode("jdbc:postgresql://h/d?ssl=true"), Ok(SslMode::Require));
        assert_eq!(
            mode("jdbc:postgresql://h/d?ssl=true&sslmode=disable"),
            Ok(SslMode::Disable)
        );
        let d = parse_connection_url("postgres://h/d")
            .expect("valid")
            .pg_config();
        assert_eq!(d.get_connect_timeout(), Some(&Duration::from_secs(10)));
    }

    #[test]
    fn url_errors_never_show_the_password() {
        const PW: &str = "Pw-9xQ";
        for bad in [
            format!("postgres://etl:{PW}%zz@db/x"),
            format!("postgres://etl:{PW}@db:port/x"),
            format!("postgres://etl:{PW}@a,b/x"),
            format!("postgres://etl:{PW}@b@db/x"),
            format!("postgres://etl:{PW}@[::1/x"),
            format!("jdbc:postgresql://db:x/n?user=etl&password={PW}"),
            format!("jdbc:postgresql://db/n?password={PW}&sslmode=nope"),
            format!("jdbc:postgresql://db/n?password={PW}%"),
            format!("jdbc:postgresql://db/n?port={PW}&password={PW}"),
            format!("jdbc:postgresql://db/n?user=etl&password=a&{PW}"),
            format!("postgres://db/n?password={PW}@x"),
            format!("postgres://etl:a/{PW}@c@db/n"),
            format!("postgres://etl:{PW}/x@db/n"),
            format!("mysql://etl:{PW}@db/x"),
            PW.to_string(),
        ] {
            let shown = match parse_connection_url(&bad) {
                Err(e) => format!("{e} {e:?}"),
                // Accepted (the stray part is left out): its description must
                // not show it either.
                Ok(t) => format!("{t} {t:?}"),
            };
            assert!(!shown.contains(PW), "{bad}: {shown}");
            assert!(!shown.contains("9xQ"), "{bad}: {shown}");
        }
        // And through the option parser, whose message names the option.
        let err = parse(&[
            ("topics", "t"),
            ("connection.url", &format!("postgres://etl:{PW}%zz@db/x")),
        ])
        .expect_err("bad escape")
        .to_string();
        assert!(err.contains("connection.url") && !err.contains(PW), "{err}");
    }

    #[test]
    fn display_hides_the_password() {
        let t = parse_connection_url("postgres://u:secret@h:1/d").expect("valid");
        assert_eq!(t.to_string(), "postgres://u@h:1/d");
        assert!(!format!("{t:?}").contains("secret"));
        let t = parse_connection_url("postgres://u:secret@[::1]:1/d").expect("valid");
        assert_eq!(t.to_string(), "postgres://u@[::1]:1/d");
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<SinkConfig, Error> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SinkConfig::from_options("pg", &Options::new("pg", &m))
    }

    #[test]
    fn sink_options() {
        let c = parse(&[
            ("topics", "a, b"),
            ("connection.url", "jdbc:postgresql://h:5432/db?user=x"),
            ("connection.user", "etl"),
            ("connection.password", "pw"),
            ("table.name.format", "t_${topic}"),
            ("insert.mode", "INSERT"),
            ("batch.size", "500"),
            ("auto.evolve", "false"),
        ])
        .expect("valid");
        assert_eq!(c.topics, vec!["a", "b"]);
        assert_eq!(
            parts(&c.target),
            ("h".into(), 5432, "db".into(), "etl".into(), "pw".into())
        );
        assert_eq!(c.table_for("a"), "t_a");
        assert_eq!(c.insert_mode, InsertMode::Insert);
        assert_eq!(c.batch_size, 500);
        assert!(c.auto_create && !c.auto_evolve);
        assert_eq!(c.group_id, "connect-pg");

        let d = parse(&[
            ("topics", "review-etl"),
            ("connection.url", "postgres://h/db"),
        ])
        .expect("defaults");
        assert_eq!(d.table_for("review-etl"), "review-etl");
        assert_eq!(d.insert_mode, InsertMode::Upsert);
        assert_eq!(d.pk, PkMode::RecordKey);
        assert_eq!(d.batch_size, 2000);
        assert_eq!(d.write_retries, RetryPolicy::default());
        assert_eq!(d.connect_retries, RetryPolicy::default());
        assert!(d.fields.is_none() && !d.delete_enabled);
        assert_eq!(d.subscription(), vec!["review-etl"]);
    }

    #[test]
    fn kafka_connect_modes_and_keys() {
        let base = [("topics", "t"), ("connection.url", "postgres://h/db")];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            parse(&pairs).expect("valid")
        };
        let c = with(&[("insert.mode", "update"), ("pk.mode", "kafka")]);
        assert_eq!(c.insert_mode, InsertMode::Update);
        assert_eq!(
            c.pk.columns(),
            vec!["__connect_topic", "__connect_partition", "__connect_offset"]
        );
        let c = with(&[("pk.mode", "kafka"), ("pk.fields", "t, p, o")]);
        assert_eq!(c.pk.columns(), vec!["t", "p", "o"]);
        let c = with(&[("pk.mode", "record_value"), ("pk.fields", "id, Region")]);
        assert_eq!(
            c.pk,
            PkMode::RecordValue(vec!["id".into(), "Region".into()])
        );
        let c = with(&[("pk.mode", "none"), ("insert.mode", "insert")]);
        assert_eq!(c.pk, PkMode::None);
        assert!(c.pk.columns().is_empty());
        let c = with(&[
            ("pk.fields", "_etl_file,_etl_row"),
            ("delete.enabled", "true"),
        ]);
        assert_eq!(c.pk, PkMode::RecordKey);
        assert!(c.delete_enabled);

        // quote.sql.identifiers=never: names mean what they would unquoted.
        let c = with(&[
            ("quote.sql.identifiers", "NEVER"),
            ("table.name.format", "Reviews_${topic}"),
            ("pk.mode", "record_value"),
            ("pk.fields", "ID"),
            ("fields.whitelist", "Body, ID"),
        ]);
        assert_eq!(c.table_for("T"), "reviews_t");
        assert_eq!(c.pk, PkMode::RecordValue(vec!["id".into()]));
        assert_eq!(c.fields, Some(vec!["body".to_string(), "id".to_string()]));
        let c = with(&[("table.name.format", "Reviews_${topic}")]);
        assert_eq!(c.table_for("T"), "Reviews_T");

        let c = with(&[
            ("max.retries", "3"),
            ("retry.backoff.ms", "250"),
            ("connection.attempts", "2"),
        ]);
        assert_eq!(
            c.write_retries,
            RetryPolicy {
                max: Some(3),
                fixed: Some(Duration::from_millis(250))
            }
        );
        assert_eq!(
            c.connect_retries,
            RetryPolicy {
                max: Some(1),
                fixed: None
            }
        );

        let c = parse(&[
            ("topics.regex", "review-.*"),
            ("connection.url", "postgres://h/db"),
            ("errors.tolerance", "all"),
            ("errors.deadletterqueue.topic.name", "dead"),
        ])
        .expect("regex");
        assert!(c.topics.is_empty());
        assert!(c.reads("review-etl") && !c.reads("xreview-etl") && !c.reads("dead"));
        assert_eq!(c.subscription(), vec!["^(review-.*)$"]);
        let err = parse(&[
            ("topics.regex", "dead.*"),
            ("connection.url", "postgres://h/db"),
            ("errors.tolerance", "all"),
            ("errors.deadletterqueue.topic.name", "dead"),
        ])
        .expect_err("reads its own dead letters")
        .to_string();
        assert!(err.contains("one of the topics the sink reads"), "{err}");
    }

    #[test]
    fn sink_errors() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("connection.url", "postgres://h/d")],
                "\"topics\" is missing",
            ),
            (&[("topics", "t")], "\"connection.url\" is missing"),
            (
                &[("topics", "t"), ("connection.url", "mysql://h/d")],
                "connection.url is not a Postgres URL",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("insert.mode", "merge"),
                ],
                "insert.mode must be upsert, insert or update",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.mode", "none"),
                ],
                "insert.mode=upsert needs a primary key",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.mode", "none"),
                    ("insert.mode", "update"),
                ],
                "insert.mode=update needs a primary key",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.mode", "record_value"),
                ],
                "pk.mode=record_value needs pk.fields",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.mode", "record_value"),
                    ("pk.fields", "id,_etl_row"),
                ],
                "\"_etl_row\", a lineage column",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.mode", "record_value"),
                    ("pk.fields", "id,id"),
                ],
                "\"id\" twice",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.mode", "kafka"),
                    ("pk.fields", "a,b"),
                ],
                "three names, got 2",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.fields", "id"),
                ],
                "cannot be used with pk.mode=record_key",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.mode", "kafka"),
                    ("delete.enabled", "true"),
                ],
                "delete.enabled=true needs pk.mode=record_key",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("quote.sql.identifiers", "sometimes"),
                ],
                "quote.sql.identifiers",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("max.retries", "-1"),
                ],
                "\"max.retries\"",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("connection.attempts", "0"),
                ],
                "\"connection.attempts\" must be a whole number from 1",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("topics.regex", "review-.*"),
                ],
                "both set",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("errors.tolerance", "all"),
                    ("errors.deadletterqueue.topic.name", "t"),
                ],
                "is one of the topics the sink reads",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("batch.size", "0"),
                ],
                "\"batch.size\"",
            ),
        ];
        for (pairs, want) in cases {
            let err = parse(pairs).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
