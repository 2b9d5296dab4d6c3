//! Reading traces back through the Jaeger HTTP query API (`/api/traces/{id}`),
//! which real Jaeger and the embedded collector both serve: `etlctl trace` prints
//! a waterfall from it, and the tracing tests check parents and attributes with it.

use std::collections::BTreeMap;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum JaegerError {
    #[error("Jaeger at {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("trace {0} not found in Jaeger (not exported yet, or expired)")]
    NotFound(String),
    #[error("unexpected Jaeger response: {0}")]
    Shape(String),
}

/// One span as Jaeger shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanView {
    pub trace_id: String,
    pub span_id: String,
    /// The CHILD_OF reference, if any.
    pub parent_id: Option<String>,
    pub service: String,
    pub operation: String,
    /// Microseconds since the epoch.
    pub start_us: u64,
    pub duration_us: u64,
    pub tags: BTreeMap<String, String>,
}

/// Parses a `/api/traces/{id}` response into its spans, sorted by start time.
pub fn parse_trace(json: &Value) -> Result<Vec<SpanView>, JaegerError> {
    let shape = |m: &str| JaegerError::Shape(m.to_string());
    let trace = json
        .get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .ok_or_else(|| shape("no data[0]"))?;
    let processes = trace.get("processes").and_then(Value::as_object);
    let spans = trace
        .get("spans")
        .and_then(Value::as_array)
        .ok_or_else(|| shape("no spans"))?;
    let mut out = Vec::with_capacity(spans.len());
    for s in spans {
        let str_of = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let process = str_of("processID");
        let service = processes
            .and_then(|p| p.get(&process))
            .and_then(|p| p.get("serviceName"))
            .and_then(Value::as_str)
            .unwrap_or(&process)
            .to_string();
        let parent_id = s
            .get("references")
            .and_then(Value::as_array)
            .and_then(|refs| {
                refs.iter()
                    .find(|r| r.get("refType").and_then(Value::as_str) == Some("CHILD_OF"))
            })
            .and_then(|r| r.get("spanID").and_then(Value::as_str))
            .map(str::to_string);
        let tags = s
            .get("tags")
            .and_then(Value::as_array)
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| {
                        let k = t.get("key")?.as_str()?.to_string();
                        let v = match t.get("value")? {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        Some((k, v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(SpanView {
            trace_id: str_of("traceID"),
            span_id: str_of("spanID"),
            parent_id,
            service,
            operation: str_of("operationName"),
            start_us: s.get("startTime").and_then(Value::as_u64).unwrap_or(0),
            duration_us: s.get("duration").and_then(Value::as_u64).unwrap_or(0),
            tags,
        });
    }
    out.sort_by_key(|s| (s.start_us, s.span_id.clone()));
    Ok(out)
}

/// An indented waterfall: one line per span, children under their parent, with
/// service, span name, start offset from the trace's start, and duration.
pub fn waterfall(spans: &[SpanView]) -> String {
    let t0 = spans.iter().map(|s| s.start_us).min().unwrap_or(0);
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&SpanView>> = BTreeMap::new();
    for s in spans {
        // A parent outside the trace (e.g. never exported) shows the span as a root.
        let parent = s.parent_id.as_deref().filter(|p| ids.contains(p));
        children.entry(parent).or_default().push(s);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "{:<44} {:>10} {:>10}  service\n",
        "span", "start", "duration"
    ));
    fn walk<'a>(
        out: &mut String,
        children: &BTreeMap<Option<&'a str>, Vec<&'a SpanView>>,
        parent: Option<&'a str>,
        depth: usize,
        t0: u64,
    ) {
        for s in children.get(&parent).map(Vec::as_slice).unwrap_or(&[]) {
            let name = format!("{}{}", "  ".repeat(depth), s.operation);
            out.push_str(&format!(
                "{:<44} {:>10} {:>10}  {}\n",
                name,
                fmt_us(s.start_us.saturating_sub(t0)),
                fmt_us(s.duration_us),
                s.service
            ));
            walk(out, children, Some(s.span_id.as_str()), depth + 1, t0);
        }
    }
    walk(&mut out, &children, None, 0, t0);
    out
}

fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else {
        format!("{:.1}ms", us as f64 / 1e3)
    }
}

/// Fetches `/api/traces/{trace_id}` from the Jaeger query endpoint at `base`
/// (e.g. `http://127.0.0.1:16686`). Plain HTTP/1.1: the query API of the local
/// stack and of compose is not behind TLS.
pub async fn fetch_trace(base: &str, trace_id: &str) -> Result<Value, JaegerError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = format!("{}/api/traces/{trace_id}", base.trim_end_matches('/'));
    let http = |reason: String| JaegerError::Http {
        url: url.clone(),
        reason,
    };
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| http("only http:// URLs are supported".into()))?;
    let (hostport, prefix) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(&hostport),
    )
    .await
    .map_err(|_| http("connect timed out".into()))?
    .map_err(|e| http(e.to_string()))?;
    let host = hostport.split(':').next().unwrap_or("localhost");
    let req = format!(
        "GET {prefix}/api/traces/{trace_id} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| http(e.to_string()))?;
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .await
        .map_err(|e| http(e.to_string()))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| http("malformed HTTP response".into()))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status == "404" {
        return Err(JaegerError::NotFound(trace_id.to_string()));
    }
    if status != "200" {
        return Err(http(format!("HTTP {status}")));
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).map_err(|e| JaegerError::Shape(e.to_string()))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({"data": [{
            "traceID": "t1",
            "processes": {"p1": {"serviceName": "extractor"}, "p2": {"serviceName": "connect-manager"}},
            "spans": [
                {"traceID":"t1","spanID":"b","operationName":"send review-etl","processID":"p2",
                 "references":[{"refType":"CHILD_OF","traceID":"t1","spanID":"a"}],
                 "startTime": 1_000_500, "duration": 2_000,
                 "tags":[{"key":"messaging.system","type":"string","value":"kafka"},{"key":"n","type":"int64","value":3}]},
                {"traceID":"t1","spanID":"a","operationName":"extract.chunk","processID":"p1",
                 "startTime": 1_000_000, "duration": 1_500_000, "tags":[]}
            ]
        }]})
    }

    #[test]
    fn parses_spans_parents_services_and_tags() {
        let spans = parse_trace(&sample()).expect("parses");
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].operation, "extract.chunk");
        assert_eq!(spans[0].service, "extractor");
        assert_eq!(spans[0].parent_id, None);
        assert_eq!(spans[1].parent_id.as_deref(), Some("a"));
        assert_eq!(spans[1].tags["messaging.system"], "kafka");
        assert_eq!(spans[1].tags["n"], "3");
    }

    #[test]
    fn waterfall_indents_children_under_parents() {
        let text = waterfall(&parse_trace(&sample()).expect("parses"));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("extract.chunk"), "{text}");
        assert!(
            lines[1].contains("1.50s") && lines[1].ends_with("extractor"),
            "{text}"
        );
        assert!(lines[2].starts_with("  send review-etl"), "{text}");
        assert!(
            lines[2].contains("0.5ms") && lines[2].contains("2.0ms"),
            "{text}"
        );
    }

    #[test]
    fn dechunks_http_bodies() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
