//! `etlctl trace <file | trace-id>`: one file's trace, read back from Jaeger's query
//! API (the embedded collector of the local stack, or compose's Jaeger) and printed
//! as a waterfall.
//!
//! A 32-hex-digit argument (or a Jaeger `…/trace/<id>` URL) is a trace id; anything
//! else is a chunk file name, looked up in `<dir>/report.json` (`trace_ids`), then in
//! Postgres (`review._etl_trace_id`). Spans reach the collector in batches, so a trace
//! that is not there yet is asked for again for `--wait` seconds.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context as _;
use etl_telemetry::jaeger::{self, JaegerError, SpanView};

use crate::cli::{StackMode, TraceArgs};
use crate::endpoints::{self, DEFAULT_JAEGER_URL};
use crate::stack::{DATABASE, StackDir, StackInfo};

/// What the argument of `etlctl trace` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceTarget {
    /// A trace id: 32 hex digits, lower-cased.
    TraceId(String),
    /// A chunk file name (a path is reduced to its file name).
    File(String),
}

/// Trace id or file name.
pub fn classify(arg: &str) -> TraceTarget {
    let arg = arg.trim();
    // A Jaeger UI link: http://…/trace/<id>
    let candidate = arg
        .rsplit_once("/trace/")
        .map_or(arg, |(_, id)| id.trim_end_matches('/'));
    if is_trace_id(candidate) {
        return TraceTarget::TraceId(candidate.to_ascii_lowercase());
    }
    let file = arg.rsplit('/').next().unwrap_or(arg);
    TraceTarget::File(file.to_owned())
}

fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// A fetched trace.
pub struct Trace {
    pub trace_id: String,
    pub spans: Vec<SpanView>,
}

impl Trace {
    /// The services with spans in the trace, sorted.
    pub fn services(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|s| s.service.as_str()).collect()
    }

    /// The header line and the waterfall.
    pub fn render(&self, jaeger: &str) -> String {
        let services: Vec<&str> = self.services().into_iter().collect();
        format!(
            "trace {}: {} spans, services: {}\n{}\n\n{}",
            self.trace_id,
            self.spans.len(),
            services.join(", "),
            endpoints::trace_page(jaeger, &self.trace_id),
            jaeger::waterfall(&self.spans)
        )
    }
}

/// `etlctl trace`.
pub async fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let dir = args.dir.stack_dir()?;
    let stack = match args.mode {
        StackMode::Local => dir.read_stack()?,
        StackMode::External => None,
    };
    let jaeger = endpoints::jaeger_url(args.jaeger_url.as_deref(), stack.as_ref())
        .unwrap_or_else(|| DEFAULT_JAEGER_URL.to_owned());
    let trace_id = match classify(&args.target) {
        TraceTarget::TraceId(id) => id,
        TraceTarget::File(file) => trace_id_of_file(&file, &dir, args, stack.as_ref()).await?,
    };
    let trace = fetch(&jaeger, &trace_id, Duration::from_secs(args.wait)).await?;
    print!("{}", trace.render(&jaeger));
    Ok(())
}

/// Asks Jaeger for the trace until it has spans or `wait` passes.
pub async fn fetch(jaeger: &str, trace_id: &str, wait: Duration) -> anyhow::Result<Trace> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let outcome = match jaeger::fetch_trace(jaeger, trace_id).await {
            Ok(json) => match jaeger::parse_trace(&json) {
                Ok(spans) if !spans.is_empty() => {
                    return Ok(Trace {
                        trace_id: trace_id.to_owned(),
                        spans,
                    });
                }
                Ok(_) => JaegerError::NotFound(trace_id.to_owned()),
                Err(e) => e,
            },
            Err(e @ JaegerError::Http { .. }) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot read traces from Jaeger at {jaeger} (is the stack up with tracing \
                     on? `etlctl status`; elsewhere pass --jaeger-url / ETL_JAEGER_URL)"
                )));
            }
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow::Error::new(outcome).context(format!(
                "no trace {trace_id} at {jaeger} after {}s: its spans were not exported (the \
                 stack ran with --no-tracing, or exports elsewhere), or are gone (the embedded \
                 collector keeps traces in memory only, up to 10,000; a restarted stack forgets)",
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The trace id of chunk file `file`: report.json first, then Postgres.
async fn trace_id_of_file(
    file: &str,
    dir: &StackDir,
    args: &TraceArgs,
    stack: Option<&StackInfo>,
) -> anyhow::Result<String> {
    let report = dir.report_json();
    if let Some(id) = from_report(&report, file) {
        return Ok(id);
    }
    let db = database_config(args.database_url.as_deref(), stack)?;
    match from_postgres(&db, file).await {
        Ok(Some(id)) => Ok(id),
        Ok(None) => anyhow::bail!(
            "no trace for {file}: {} does not name it, and no row of table review has \
             _etl_file = '{file}' (is it a chunk file name, like \
             <run>__<input>__chunk_000001.csv?)",
            report.display()
        ),
        Err(e) => Err(e.context(format!(
            "no trace for {file} in {}, and Postgres cannot tell (pass --database-url / \
             ETL_DATABASE_URL, or the trace id itself)",
            report.display()
        ))),
    }
}

/// `trace_ids[file]` of a demo report, if the file parses and names it.
fn from_report(path: &std::path::Path, file: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json.get("trace_ids")?
        .get(file)?
        .as_str()
        .filter(|id| is_trace_id(id))
        .map(str::to_owned)
}

/// Postgres: `--database-url`, else the local stack's, else the `ETL_PG_*` variables
/// the connector files use (compose sets them for the `etlctl` job).
fn database_config(
    flag: Option<&str>,
    stack: Option<&StackInfo>,
) -> anyhow::Result<tokio_postgres::Config> {
    if let Some(url) = flag.filter(|u| !u.trim().is_empty()) {
        return url
            .parse()
            .map_err(|e| anyhow::anyhow!("bad --database-url: {e}"));
    }
    if let Some(stack) = stack {
        return stack
            .postgres
            .url
            .parse()
            .map_err(|e| anyhow::anyhow!("bad database URL in stack.json: {e}"));
    }
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let port: u16 = var("ETL_PG_PORT", "5432")
        .parse()
        .context("ETL_PG_PORT is not a port")?;
    let mut config = tokio_postgres::Config::new();
    config
        .host(var("ETL_PG_HOST", "127.0.0.1"))
        .port(port)
        .user(var("ETL_PG_USER", "postgres"))
        .dbname(var("ETL_PG_DATABASE", DATABASE));
    let password = var("ETL_PG_PASSWORD", "");
    if !password.is_empty() {
        config.password(password);
    }
    Ok(config)
}

async fn from_postgres(
    config: &tokio_postgres::Config,
    file: &str,
) -> anyhow::Result<Option<String>> {
    let hosts = etl_pg::describe(config);
    let (client, connection) = tokio::time::timeout(
        Duration::from_secs(5),
        etl_pg::connect(config, "trace lookup"),
    )
    .await
    .map_err(|_| anyhow::anyhow!("Postgres at {hosts}: connect timed out"))?
    .with_context(|| format!("cannot connect to Postgres at {hosts}"))?;
    let row = client
        .query_opt(
            &format!(
                "select {trace} from review where {file_col} = $1 and {trace} is not null limit 1",
                trace = etl_pg::lineage::TRACE_ID,
                file_col = etl_pg::lineage::FILE,
            ),
            &[&file],
        )
        .await
        .context("cannot query table review")?;
    drop(client);
    let _ = connection.await;
    Ok(row
        .and_then(|r| r.get::<_, Option<String>>(0))
        .filter(|id| is_trace_id(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_and_file_names_are_told_apart() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(classify(id), TraceTarget::TraceId(id.to_owned()));
        assert_eq!(
            classify(" 4BF92F3577B34DA6A3CE929D0E0E4736 "),
            TraceTarget::TraceId(id.to_owned())
        );
        assert_eq!(
            classify(&format!("http://127.0.0.1:16686/trace/{id}")),
            TraceTarget::TraceId(id.to_owned())
        );
        for file in [
            "demo-1__demo-2500-3__chunk_000001.csv",
            // 31 and 33 hex digits, a non-hex letter, the invalid all-zero id.
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47361",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "00000000000000000000000000000000",
        ] {
            assert_eq!(classify(file), TraceTarget::File(file.to_owned()), "{file}");
        }
        assert_eq!(
            classify("/x/.etl/sftp/etl/finished/run__in__chunk_000002.csv"),
            TraceTarget::File("run__in__chunk_000002.csv".to_owned())
        );
    }

    #[test]
    fn report_json_maps_files_to_trace_ids() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("report.json");
        assert_eq!(from_report(&path, "a.csv"), None);
        std::fs::write(
            &path,
            r#"{"trace_ids": {"a.csv": "4bf92f3577b34da6a3ce929d0e0e4736", "b.csv": "nope"}}"#,
        )
        .expect("write");
        assert_eq!(
            from_report(&path, "a.csv").as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(from_report(&path, "b.csv"), None);
        assert_eq!(from_report(&path, "c.csv"), None);
    }

    #[test]
    fn database_url_flag_wins() {
        let config =
            database_config(Some("postgres://u:p@db.example:6543/x"), None).expect("config");
        assert_eq!(config.get_ports(), &[6543]);
        assert_eq!(config.get_dbname(), Some("x"));
    }
}
