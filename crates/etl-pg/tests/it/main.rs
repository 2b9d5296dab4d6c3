//! etl-pg against a real Postgres (testkit's shared cluster, a database per test).

use std::time::Duration;

use etl_pg::{TableName, lineage, notify, quote_ident};
use tokio::sync::mpsc;

async fn database(prefix: &str) -> tokio_postgres::Config {
    let pg = testkit::shared_postgres().expect("postgres (PG_BIN, /usr/lib/postgresql/15/bin)");
    let url = pg.create_unique_database(prefix).await.expect("database");
    url.parse().expect("testkit url")
}

#[tokio::test]
async fn columns_of_quoted_and_schema_qualified_tables() {
    let config = database("etlpg_cols").await;
    let (mut client, _driver) = etl_pg::connect(&config, "test").await.expect("connect");
    let weird = "we\"ird; drop table x";
    let defs: Vec<String> = lineage::DEFINITIONS
        .iter()
        .map(|(name, ty)| format!("{} {ty}", quote_ident(name)))
        .collect();
    client
        .batch_execute(&format!(
            "CREATE SCHEMA other; \
             CREATE TABLE {} ({} bigint, {}); \
             CREATE TABLE other.review (x boolean)",
            quote_ident("Review"),
            quote_ident(weird),
            defs.join(", ")
        ))
        .await
        .expect("create");

    let cols = etl_pg::table_columns(&client, &TableName::unqualified("Review"))
        .await
        .expect("columns");
    assert_eq!(cols.get(weird).map(String::as_str), Some("bigint"));
    assert_eq!(cols.get(lineage::ROW).map(String::as_str), Some("bigint"));
    assert_eq!(
        cols.get(lineage::LOADED_AT).map(String::as_str),
        Some("timestamp with time zone")
    );
    assert_eq!(cols.len(), 5);
    // Not folded: "Review" is not review.
    let none = etl_pg::table_columns(&client, &TableName::unqualified("review"))
        .await
        .expect("columns");
    assert!(none.is_empty(), "{none:?}");
    let other = etl_pg::table_columns(&client, &TableName::parse("other.review"))
        .await
        .expect("columns");
    assert_eq!(other.get("x").map(String::as_str), Some("boolean"));

    // Inside a transaction the DDL of that transaction is seen.
    let tx = client.transaction().await.expect("tx");
    tx.batch_execute("CREATE TABLE fresh (a text)")
        .await
        .expect("create");
    let fresh = etl_pg::table_columns(&tx, &TableName::unqualified("fresh"))
        .await
        .expect("columns");
    assert_eq!(fresh.get("a").map(String::as_str), Some("text"));
}

#[tokio::test]
async fn a_notify_arrives_at_commit_and_not_after_rollback() {
    let config = database("etlpg_notify").await;
    let (tx_files, mut files) = mpsc::unbounded_channel();
    let (_listen, task) = notify::listen(&config, move |file| {
        let _ = tx_files.send(file.to_string());
    })
    .await
    .expect("listen");
    let (mut client, _driver) = etl_pg::connect(&config, "test").await.expect("connect");

    let tx = client.transaction().await.expect("tx");
    notify::notify(&tx, "rolled-back.csv")
        .await
        .expect("notify");
    tx.rollback().await.expect("rollback");

    let tx = client.transaction().await.expect("tx");
    notify::notify(&tx, "a'b.csv").await.expect("notify");
    // Nothing before the commit.
    let early = tokio::time::timeout(Duration::from_millis(200), files.recv()).await;
    assert!(early.is_err(), "delivered before commit: {early:?}");
    tx.commit().await.expect("commit");
    let got = tokio::time::timeout(Duration::from_secs(10), files.recv())
        .await
        .expect("a notification within 10 s");
    assert_eq!(got.as_deref(), Some("a'b.csv"));
    // Another channel is not ours.
    client
        .batch_execute("NOTIFY other_channel, 'x.csv'")
        .await
        .expect("notify other");
    notify::notify(&client, "b.csv").await.expect("notify");
    let got = tokio::time::timeout(Duration::from_secs(10), files.recv())
        .await
        .expect("a notification within 10 s");
    assert_eq!(got.as_deref(), Some("b.csv"));
    assert!(!task.is_finished());
}

#[tokio::test]
async fn a_connection_that_fails_names_no_password() {
    let port = testkit::free_port();
    let config: tokio_postgres::Config =
        format!("postgres://etl:pw-Zq81@127.0.0.1:{port}/nlp_db?connect_timeout=2")
            .parse()
            .expect("url");
    let Err(err) = etl_pg::connect(&config, "test").await else {
        panic!("nothing listens there");
    };
    let shown = format!("{err} {err:?} {}", etl_pg::describe(&config));
    assert!(!shown.contains("pw-Zq81"), "{shown}");
    let Err(err) = notify::listen(&config, |_| {}).await else {
        panic!("nothing listens there");
    };
    assert_eq!(err.step(), "connecting (LISTEN)");
}

#[tokio::test]
async fn unique_indexes_that_reject_a_duplicate_key_at_once() {
    let config = database("etlpg_unique").await;
    let (client, _driver) = etl_pg::connect(&config, "test").await.expect("connect");
    client
        .batch_execute(
            "CREATE TABLE pk (f text, r bigint, x text, PRIMARY KEY (f, r)); \
             CREATE TABLE reversed (f text, r bigint, x text); \
             CREATE UNIQUE INDEX ON reversed (r, f) INCLUDE (x); \
             CREATE TABLE plain (f text, r bigint); \
             CREATE INDEX ON plain (f, r); \
             CREATE TABLE wider (f text, r bigint, x text, UNIQUE (f, r, x)); \
             CREATE TABLE partial (f text, r bigint); \
             CREATE UNIQUE INDEX ON partial (f, r) WHERE r > 0; \
             CREATE TABLE deferred (f text, r bigint, \
                 UNIQUE (f, r) DEFERRABLE INITIALLY DEFERRED); \
             CREATE SCHEMA other; \
             CREATE TABLE other.pk (f text, r bigint, PRIMARY KEY (f, r))",
        )
        .await
        .expect("create");
    const KEY: &[&str] = &["f", "r"];
    let has = |table: &'static str, columns: &'static [&'static str]| {
        let client = &client;
        async move {
            etl_pg::has_unique_index(client, &TableName::parse(table), columns)
                .await
                .expect("query")
        }
    };
    assert!(has("pk", KEY).await, "primary key");
    assert!(has("pk", &["r", "f"]).await, "any order");
    assert!(has("reversed", KEY).await, "unique index, INCLUDE aside");
    assert!(has("other.pk", KEY).await, "schema-qualified");
    assert!(
        !has("pk", &["f"]).await,
        "a key of fewer columns is not unique"
    );
    assert!(!has("plain", KEY).await, "not unique");
    assert!(!has("wider", KEY).await, "unique on more columns");
    assert!(!has("partial", KEY).await, "partial");
    assert!(
        !has("deferred", KEY).await,
        "deferred: fails at commit, not at once"
    );
    assert!(!has("missing", KEY).await, "no such table");
    assert!(!has("pk", &[]).await, "no key");
}
