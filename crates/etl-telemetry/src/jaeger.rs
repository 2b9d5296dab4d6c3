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
/// (e.g. `http://127.0.0.1:16686`, possibly with a path prefix). Plain HTTP:
/// the query API of the local stack and of compose is not behind TLS, and
/// reqwest is already in the tree (OTLP's HTTP exporter), without TLS.
pub async fn fetch_trace(base: &str, trace_id: &str) -> Result<Value, JaegerError> {
    let url = format!("{}/api/traces/{trace_id}", base.trim_end_matches('/'));
    let http = |reason: String| JaegerError::Http {
        url: url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .map_err(|e| http(e.to_string()))?;
    let response = client
        .get(&url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| http(error_chain(&e)))?;
    match response.status() {
        reqwest::StatusCode::OK => {}
        reqwest::StatusCode::NOT_FOUND => return Err(JaegerError::NotFound(trace_id.to_string())),
        other => return Err(http(format!("HTTP {other}"))),
    }
    let body = response.bytes().await.map_err(|e| http(error_chain(&e)))?;
    serde_json::from_slice(&body).map_err(|e| JaegerError::Shape(e.to_string()))
}

/// reqwest's top-level message ("error sending request") hides the cause
/// (connection refused, timeout): the user needs the whole chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
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

    /// A one-shot HTTP server that answers with `response`, as raw bytes.
    async fn serve_once(response: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            s.write_all(&response).await.expect("write");
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn fetches_a_chunked_body_split_inside_a_character() {
        let body = json!({"data": [{"traceID": "t1", "processes": {},
            "spans": [{"traceID": "t1", "spanID": "a", "operationName": "résumé", "processID": "p"}]}]})
        .to_string()
        .into_bytes();
        // Cut the body in the middle of the two bytes of the first 'é'.
        let cut = body
            .windows(2)
            .position(|w| w == "é".as_bytes())
            .expect("an é")
            + 1;
        let mut response =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for part in [&body[..cut], &body[cut..]] {
            response.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            response.extend_from_slice(part);
            response.extend_from_slice(b"\r\n");
        }
        response.extend_from_slice(b"0\r\n\r\n");
        let base = serve_once(response).await;
        let json = fetch_trace(&base, "t1").await.expect("fetched");
        let spans = parse_trace(&json).expect("parses");
        assert_eq!(spans[0].operation, "résumé");
    }

    #[tokio::test]
    async fn a_missing_trace_is_not_found() {
        let base =
            serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
        assert!(matches!(
            fetch_trace(&base, "nope").await,
            Err(JaegerError::NotFound(id)) if id == "nope"
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_names_the_url_and_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let err = fetch_trace(&format!("http://{addr}"), "t1")
            .await
            .expect_err("nothing listens");
        let text = err.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
