//! Files through the whole pipeline: SFTP → source → Kafka → sink → Postgres.

use std::time::Duration;

use etl_proto::v1::ListConnectorsRequest;

use crate::helpers::{Chunk, Stack, WAIT, eventually};

const SOURCE: &str = "sftp-csv-source";
const SINK: &str = "postgres-sink";

/// Every data column, in file order, as the canonical text of its value.
async fn table_rows(pg: &tokio_postgres::Client, file: &str) -> Vec<Vec<String>> {
    let rows = pg
        .query(
            "SELECT header, body, n, is_streaming, score, language_code, maybe \
             FROM review WHERE _etl_file = $1 ORDER BY _etl_row",
            &[&file],
        )
        .await
        .expect("select");
    rows.iter()
        .map(|r| {
            vec![
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, i64>(2).to_string(),
                r.get::<_, bool>(3).to_string(),
                r.get::<_, f64>(4).to_string(),
                r.get::<_, String>(5),
                r.get::<_, Option<i64>>(6)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_lands_in_postgres_exactly_and_replay_changes_nothing() {
    let stack = Stack::start().await;
    eventually("health SERVING", WAIT, || async {
        etl_service::probe_health(&stack.manager().grpc_addr.to_string())
            .await
            .ok()
            .filter(|s| *s)
    })
    .await;
    let name = "run1__reviews__chunk_000000.csv";
    let chunk = Chunk::tricky(200, "a");
    // Uploaded before the connectors exist: the first poll finds it.
    stack.upload(name, &chunk.tsv()).await;
    stack.create_connectors().await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 200).await;
    stack.wait_for_file(&format!("finished/{name}")).await;
    assert!(!stack.local(&format!("input/{name}")).exists());

    assert_eq!(
        table_rows(&pg, name).await,
        chunk.rows,
        "values arrive unaltered"
    );
    let types: Vec<(String, String)> = pg
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = 'review' ORDER BY ordinal_position",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want: Vec<(String, String)> = [
        ("header", "text"),
        ("body", "text"),
        ("n", "bigint"),
        ("is_streaming", "boolean"),
        ("score", "double precision"),
        ("language_code", "text"),
        ("maybe", "bigint"),
        ("_etl_file", "text"),
        ("_etl_row", "bigint"),
        ("_etl_trace_id", "text"),
        ("_etl_loaded_at", "timestamp with time zone"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(types, want);

    // Lineage: one file, rows 1..=200, one trace for the whole file.
    let lineage = pg
        .query_one(
            "SELECT count(DISTINCT _etl_row), min(_etl_row), max(_etl_row), \
             count(DISTINCT _etl_trace_id), min(_etl_trace_id), count(*) FILTER (WHERE _etl_file = $1) \
             FROM review",
            &[&name],
        )
        .await
        .expect("lineage");
    assert_eq!(lineage.get::<_, i64>(0), 200);
    assert_eq!(lineage.get::<_, i64>(1), 1);
    assert_eq!(lineage.get::<_, i64>(2), 200);
    assert_eq!(lineage.get::<_, i64>(3), 1, "one trace per file");
    let trace_id: String = lineage.get(4);
    assert_eq!(trace_id.len(), 32, "{trace_id}");
    assert_eq!(lineage.get::<_, i64>(5), 200);
    let loaded_before: Vec<String> = pg
        .query(
            "SELECT _etl_loaded_at::text FROM review ORDER BY _etl_row",
            &[],
        )
        .await
        .expect("loaded_at")
        .iter()
        .map(|r| r.get(0))
        .collect();

    let source = stack.status(SOURCE).await;
    assert_eq!(
        (source.r#type.as_str(), source.state.as_str()),
        ("source", "RUNNING")
    );
    assert_eq!(
        (source.files_finished, source.files_failed, source.records),
        (1, 0, 200)
    );

    // Replay: the same name and content again.
    stack.upload(name, &chunk.tsv()).await;
    eventually("the replayed file to be sent", WAIT, || async {
        (stack.status(SOURCE).await.files_finished == 2).then_some(())
    })
    .await;
    eventually("the sink to read the replay", WAIT, || async {
        (stack.status(SINK).await.records >= 400).then_some(())
    })
    .await;
    assert!(stack.local(&format!("finished/{name}")).exists());
    assert!(!stack.local(&format!("input/{name}")).exists());
    assert_eq!(stack.count(&pg).await, 200);
    assert_eq!(table_rows(&pg, name).await, chunk.rows);
    let loaded_after: Vec<String> = pg
        .query(
            "SELECT _etl_loaded_at::text FROM review ORDER BY _etl_row",
            &[],
        )
        .await
        .expect("loaded_at")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(loaded_before, loaded_after, "a replay rewrites no row");
    let sink = stack.status(SINK).await;
    assert_eq!(
        (sink.r#type.as_str(), sink.state.as_str()),
        ("sink", "RUNNING")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_go_to_error_with_their_reason_and_good_ones_still_land() {
    let stack = Stack::start().await;
    stack.create_connectors().await;
    // Ragged: line 4 (row 3) has one field too few.
    stack.upload("ragged.csv", b"a,b\n1,2\n3,4\n5\n6,7\n").await;
    // Invalid UTF-8 in line 3, field 2.
    stack
        .upload("latin1.tsv", b"a\tb\nx\ty\nz\tcaf\xe9\n")
        .await;
    let good = Chunk::tricky(30, "g");
    stack.upload("good.tsv", &good.tsv()).await;

    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 30).await;
    for (name, line) in [("ragged.csv", "line 4"), ("latin1.tsv", "line 3")] {
        let reason = format!("error/{name}.error.txt");
        stack.wait_for_file(&reason).await;
        stack.wait_for_file(&format!("error/{name}")).await;
        let text = std::fs::read_to_string(stack.local(&reason)).expect("reason");
        assert!(text.contains(line), "{name}: {text}");
        assert!(text.contains(name), "{text}");
        assert!(!stack.local(&format!("input/{name}")).exists());
    }
    let text = std::fs::read_to_string(stack.local("error/ragged.csv.error.txt")).expect("reason");
    assert!(
        text.contains("expected 2 fields like the header, found 1"),
        "{text}"
    );
    assert_eq!(table_rows(&pg, "good.tsv").await, good.rows);
    eventually("status counts", WAIT, || async {
        let s = stack.status(SOURCE).await;
        (s.files_failed == 2 && s.files_finished == 1).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_connectors_and_does_not_replay_committed_records() {
    let mut stack = Stack::start().await;
    stack.create_connectors().await;
    let a = Chunk::tricky(50, "a");
    stack.upload("a.tsv", &a.tsv()).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 50).await;
    // The counter moves right after the commit that made the rows visible.
    eventually("sink counted file a", WAIT, || async {
        (stack.status(SINK).await.records == 50).then_some(())
    })
    .await;

    stack.restart_manager().await;
    let listed = stack
        .grpc()
        .await
        .list_connectors(ListConnectorsRequest {})
        .await
        .expect("list")
        .into_inner();
    let mut names: Vec<String> = listed.connectors.iter().map(|c| c.name.clone()).collect();
    names.sort();
    assert_eq!(names, vec![SINK.to_string(), SOURCE.to_string()]);

    let b = Chunk::tricky(20, "b");
    stack.upload("b.tsv", &b.tsv()).await;
    stack.wait_for_rows(&pg, 70).await;
    eventually("sink counted file b", WAIT, || async {
        (stack.status(SINK).await.records >= 20).then_some(())
    })
    .await;
    // Give a replay of a.tsv (had offsets not been committed) time to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stack.status(SINK).await.records,
        20,
        "after a restart the sink reads only records it had not committed"
    );
    assert_eq!(table_rows(&pg, "a.tsv").await, a.rows);
    assert_eq!(table_rows(&pg, "b.tsv").await, b.rows);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_join_the_trace_the_uploader_announced() {
    use etl_proto::v1::{
        AnnounceUploadRequest, TraceContext, sftp_gateway_client::SftpGatewayClient,
    };
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let stack = Stack::start().await;
    stack.create_connectors().await;
    eventually("source running", WAIT, || async {
        (stack.status(SOURCE).await.state == "RUNNING").then_some(())
    })
    .await;
    let name = "traced.tsv";
    SftpGatewayClient::connect(format!("http://{}", stack.gateway.grpc_addr))
        .await
        .expect("gateway gRPC")
        .announce_upload(AnnounceUploadRequest {
            user: "etl".into(),
            path: format!("input/{name}"),
            trace: Some(TraceContext {
                traceparent: TRACEPARENT.into(),
                tracestate: String::new(),
            }),
        })
        .await
        .expect("announce");
    let chunk = Chunk::tricky(10, "t");
    stack.upload(name, &chunk.tsv()).await;
    let pg = stack.pg().await;
    stack.wait_for_rows(&pg, 10).await;
    let ids: Vec<Option<String>> = pg
        .query("SELECT DISTINCT _etl_trace_id FROM review", &[])
        .await
        .expect("trace ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ids,
        vec![Some("4bf92f3577b34da6a3ce929d0e0e4736".to_string())]
    );
}

/// One large file spans many producer batches, Kafka fetches and sink
/// batches: every row lands once, unaltered and in order. (Its speed is
/// measured by `make bench`, not here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_lands_whole_across_many_batches() {
    let rows = 30_000;
    let stack = Stack::start().await;
    let mut chunk = Chunk::tricky(rows, "big");
    let filler = "lorem ipsum dolor sit amet ".repeat(16);
    for r in &mut chunk.rows {
        r[1] = format!("{} {filler}", r[1]);
    }
    let name = "big__reviews__chunk_000000.csv";
    stack.create_connectors().await;
    eventually("source running", WAIT, || async {
        (stack.status(SOURCE).await.state == "RUNNING").then_some(())
    })
    .await;
    let pg = stack.pg().await;
    stack.upload(name, &chunk.tsv()).await;
    stack.wait_for_file(&format!("finished/{name}")).await;
    eventually("all rows", Duration::from_secs(300), || async {
        (stack.count(&pg).await >= rows as i64).then_some(())
    })
    .await;
    assert_eq!(stack.count(&pg).await, rows as i64, "each row once");
    assert!(
        table_rows(&pg, name).await == chunk.rows,
        "every value arrives unaltered, in file order"
    );
}
