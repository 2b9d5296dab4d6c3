//! The sink's config: Confluent `JdbcSinkConnector` option names, validated at
//! create time. `connection.url` takes the JDBC form
//! (`jdbc:postgresql://host:port/db?user=…`) or a libpq URL (`postgres://…`).

use std::fmt;

use crate::{Error, options::Options, source::config::check_topic};

/// What a conflicting `(_etl_file, _etl_row)` does. Both are idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum InsertMode {
    /// `ON CONFLICT … DO UPDATE` (only when a value differs).
    Upsert,
    /// `ON CONFLICT … DO NOTHING`: the first write of a row wins.
    Insert,
}

/// Where the sink connects. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PgTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) dbname: String,
    pub(crate) user: String,
    pub(crate) password: String,
}

impl fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for PgTarget {
    /// `postgres://user@host:port/db`, for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "postgres://{}@{host}:{}/{}",
            self.user, self.port, self.dbname
        )
    }
}

impl PgTarget {
    pub(crate) fn pg_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(&self.user)
            .application_name("connect-manager")
            .connect_timeout(std::time::Duration::from_secs(10));
        if !self.password.is_empty() {
            c.password(&self.password);
        }
        c
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
    pub(crate) topics: Vec<String>,
    pub(crate) target: PgTarget,
    /// `${topic}` is replaced by the record's topic.
    pub(crate) table_format: String,
    pub(crate) insert_mode: InsertMode,
    pub(crate) auto_create: bool,
    pub(crate) auto_evolve: bool,
    pub(crate) batch_size: usize,
    pub(crate) group_id: String,
    pub(crate) tolerance: Tolerance,
    pub(crate) dead_letters: Option<DeadLetters>,
    /// `errors.log.enable`: log each tolerated error at warn level.
    pub(crate) log_errors: bool,
}

impl SinkConfig {
    pub(crate) fn from_options(name: &str, o: &Options<'_>) -> Result<Self, Error> {
        let topics: Vec<String> = o
            .required("topics")?
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        if topics.is_empty() {
            return Err(o.error("option \"topics\" names no topic"));
        }
        for t in &topics {
            check_topic(t).map_err(|m| o.error(m.replace("kafka.topic", "topics entry")))?;
        }
        let url = o.required("connection.url")?;
        let mut target = parse_connection_url(url).map_err(|reason| {
            o.error(format!(
                "connection.url is not a Postgres URL ({reason}); expected jdbc:postgresql://host:port/db or postgres://user@host:port/db"
            ))
        })?;
        if let Some(user) = o.get("connection.user") {
            target.user = user.to_string();
        }
        let password = o.raw("connection.password");
        if !password.is_empty() {
            target.password = password.to_string();
        }
        let table_format = o.string("table.name.format", "${topic}");
        let insert_mode = match o
            .string("insert.mode", "upsert")
            .to_ascii_lowercase()
            .as_str()
        {
            "upsert" => InsertMode::Upsert,
            "insert" => InsertMode::Insert,
            other => {
                return Err(o.error(format!(
                    "insert.mode must be upsert or insert, got {other:?}"
                )));
            }
        };
        match o
            .string("pk.mode", "record_key")
            .to_ascii_lowercase()
            .as_str()
        {
            "record_key" => {}
            other => {
                return Err(o.error(format!(
                    "pk.mode {other:?} is not supported: only record_key (the key {{file}}:{{row}} gives _etl_file, _etl_row)"
                )));
            }
        }
        // pk.fields names Kafka Connect's key fields; ours are fixed.
        let _ = o.get("pk.fields");
        let config = SinkConfig {
            topics,
            target,
            table_format,
            insert_mode,
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
            if config.topics.iter().any(|t| t == topic) {
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
        self.table_format.replace("${topic}", topic)
    }
}

/// Parses a JDBC (`jdbc:postgresql://host:port/db?user=u&password=p`,
/// `jdbc:postgresql:db`) or libpq (`postgres[ql]://user:pass@host:port/db`) URL.
/// Missing parts default to localhost, 5432, user `postgres`, database = user.
pub(crate) fn parse_connection_url(url: &str) -> Result<PgTarget, String> {
    let url = url.trim();
    let rest = if let Some(r) = url.strip_prefix("jdbc:postgresql:") {
        r
    } else if let Some(r) = url
        .strip_prefix("postgresql:")
        .or_else(|| url.strip_prefix("postgres:"))
    {
        r
    } else {
        return Err("unknown scheme".into());
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, q),
        None => (rest, ""),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => match after.split_once('/') {
            Some((a, p)) => (a, p),
            None => (after, ""),
        },
        // jdbc:postgresql:db
        None => ("", rest),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if hostport.contains(',') {
        return Err("several hosts are not supported".into());
    }
    let (host, port) = split_host_port(hostport)?;
    let mut target = PgTarget {
        host: if host.is_empty() {
            "localhost".into()
        } else {
            host
        },
        port,
        dbname: percent_decode(path.trim_end_matches('/'))?,
        user: String::new(),
        password: String::new(),
    };
    if let Some(info) = userinfo {
        let (u, p) = info.split_once(':').unwrap_or((info, ""));
        target.user = percent_decode(u)?;
        target.password = percent_decode(p)?;
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "user" => target.user = percent_decode(v)?,
            "password" => target.password = percent_decode(v)?,
            "dbname" => target.dbname = percent_decode(v)?,
            // sslmode, currentSchema, ApplicationName, …: not used.
            _ => {}
        }
    }
    if target.user.is_empty() {
        target.user = "postgres".into();
    }
    if target.dbname.is_empty() {
        target.dbname = target.user.clone();
    }
    Ok(target)
}

fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("port {p:?} is not a number 1-65535"))
    };
    if let Some(r) = s.strip_prefix('[') {
        let (h, after) = r.split_once(']').ok_or("missing ']'")?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None => 5432,
        };
        return Ok((h.to_string(), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_string(), parse_port(p)?)),
        None => Ok((s.to_string(), 5432)),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn target(host: &str, port: u16, db: &str, user: &str, pw: &str) -> PgTarget {
        PgTarget {
            host: host.into(),
            port,
            dbname: db.into(),
            user: user.into(),
            password: pw.into(),
        }
    }

    #[test]
    fn jdbc_and_libpq_urls() {
        assert_eq!(
            parse_connection_url(
                "jdbc:postgresql://db.example:5433/nlp_db?user=etl&password=s%40cret&sslmode=disable"
            ),
            Ok(target("db.example", 5433, "nlp_db", "etl", "s@cret"))
        );
        assert_eq!(
            parse_connection_url("jdbc:postgresql://127.0.0.1/nlp_db"),
            Ok(target("127.0.0.1", 5432, "nlp_db", "postgres", ""))
        );
        assert_eq!(
            parse_connection_url("jdbc:postgresql:nlp_db"),
            Ok(target("localhost", 5432, "nlp_db", "postgres", ""))
        );
        assert_eq!(
            parse_connection_url("postgres://u:p%3Aw@[::1]:6000/d"),
            Ok(target("::1", 6000, "d", "u", "p:w"))
        );
        assert_eq!(
            parse_connection_url("postgresql://me@h"),
            Ok(target("h", 5432, "me", "me", ""))
        );
        for bad in [
            "mysql://h/db",
            "jdbc:postgresql://h:port/db",
            "jdbc:postgresql://a,b/db",
            "postgres://h/%zz",
        ] {
            assert!(parse_connection_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_hides_the_password() {
        let t = target("h", 1, "d", "u", "secret");
        assert_eq!(t.to_string(), "postgres://u@h:1/d");
        assert!(!format!("{t:?}").contains("secret"));
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
        assert_eq!(c.target, target("h", 5432, "db", "etl", "pw"));
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
        assert_eq!(d.batch_size, 2000);
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
                    ("insert.mode", "update"),
                ],
                "insert.mode",
            ),
            (
                &[
                    ("topics", "t"),
                    ("connection.url", "postgres://h/d"),
                    ("pk.mode", "kafka"),
                ],
                "pk.mode \"kafka\"",
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
