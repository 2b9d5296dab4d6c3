use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;

use testkit::{Error, PgCluster, free_port, shared_postgres, test_log_dir};

use crate::TestResult;

#[tokio::test]
async fn temp_cluster_serves_separate_databases() -> TestResult {
    let cluster = PgCluster::start_temp()?;
    let first = cluster.create_database("first_db").await?;
    let second = cluster.create_unique_database("second").await?;
    assert_eq!(
        first,
        format!("postgres://postgres@127.0.0.1:{}/first_db", cluster.port())
    );

    let (client, connection) = tokio_postgres::connect(&first, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE review (id bigint PRIMARY KEY, body text)")
        .await?;
    let inserted = client
        .execute(
            "INSERT INTO review VALUES ($1, $2), ($3, $4)",
            &[&1_i64, &"good", &2_i64, &"bad"],
        )
        .await?;
    assert_eq!(inserted, 2);
    let row = client
        .query_one("SELECT count(*), current_database() FROM review", &[])
        .await?;
    assert_eq!(row.get::<_, i64>(0), 2);
    assert_eq!(row.get::<_, String>(1), "first_db");

    // The second database is separate: no `review` table there.
    let (other, connection) = tokio_postgres::connect(&second, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let tables = other
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'review'",
            &[],
        )
        .await?;
    assert_eq!(tables.get::<_, i64>(0), 0);

    // Creating an existing database fails; ensuring it does not.
    assert!(cluster.create_database("first_db").await.is_err());
    assert_eq!(cluster.ensure_database("first_db").await?, first);
    Ok(())
}

#[tokio::test]
async fn dropping_a_temp_cluster_stops_it_and_removes_its_directory() -> TestResult {
    let cluster = PgCluster::start_temp()?;
    let port = cluster.port();
    let dir = cluster.dir().to_path_buf();
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    let log = cluster.log_path().map(ToOwned::to_owned).ok_or("no log")?;
    assert!(log.starts_with(test_log_dir()?), "{}", log.display());
    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok());
    Ok(())
}

#[tokio::test]
async fn persistent_cluster_keeps_its_data_across_restarts() -> TestResult {
    let base = tempfile::tempdir()?;
    let dir = base.path().join("pg");
    let port = free_port();
    let start = || {
        PgCluster::builder()
            .dir(&dir)
            .port(port)
            .log_dir(test_log_dir()?)
            .start()
    };

    let mut cluster = start()?;
    let url = cluster.ensure_database("nlp_db").await?;
    let client = cluster.connect("nlp_db").await?;
    client
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')")
        .await?;
    drop(client);
    cluster.stop()?;
    assert!(cluster.log_path().is_none());
    drop(cluster);
    assert!(
        dir.join("data/PG_VERSION").is_file(),
        "dropping must keep a given dir"
    );

    let cluster = start()?;
    assert_eq!(cluster.ensure_database("nlp_db").await?, url);
    let client = cluster.connect("nlp_db").await?;
    let row = client.query_one("SELECT v FROM kept", &[]).await?;
    assert_eq!(row.get::<_, String>(0), "survives");
    Ok(())
}

#[test]
fn a_taken_port_is_reported_before_starting() -> TestResult {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let base = tempfile::tempdir()?;
    match PgCluster::start_in(base.path().join("pg"), port) {
        Err(Error::PortInUse { port: p, .. }) => assert_eq!(p, port),
        other => panic!("expected PortInUse, got {other:?}"),
    }
    Ok(())
}

/// A directory the server's user cannot walk down to is reported as such, before initdb
/// fails somewhere inside it. As root, postgres runs as the `postgres` user: a private
/// (0700) parent of ours is refused with [`Error::NotTraversable`]. As anyone else the
/// server runs as us, the same parent is ours to walk, and the cluster must start: no
/// false refusal. Either way the test checks what this user must see (etl-stack's unit
/// test covers the check itself for a foreign uid without privileges).
#[test]
fn a_private_parent_is_refused_only_when_postgres_runs_as_another_user() -> TestResult {
    let base = tempfile::tempdir()?;
    let private = base.path().join("private");
    std::fs::create_dir(&private)?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))?;
    let started = PgCluster::builder()
        .dir(private.join("pg"))
        .port(free_port())
        .log_dir(test_log_dir()?)
        .start();
    if rustix::process::geteuid().is_root() {
        match started {
            Err(Error::NotTraversable { path, mode }) => {
                assert_eq!(path, private.canonicalize()?);
                assert_eq!(mode, 0o700);
            }
            other => panic!("as root, expected NotTraversable, got {other:?}"),
        }
    } else {
        let cluster = started?;
        assert!(cluster.data_dir().join("PG_VERSION").is_file());
    }
    Ok(())
}

/// A second server on a directory in use (a second `etlctl up`) fails, and says why.
#[test]
fn a_directory_in_use_is_refused_with_the_server_log() -> TestResult {
    let base = tempfile::tempdir()?;
    let dir = base.path().join("pg");
    let log_dir = test_log_dir()?;
    let _running = PgCluster::builder()
        .dir(&dir)
        .port(free_port())
        .log_dir(&log_dir)
        .start()?;
    let second = PgCluster::builder()
        .dir(&dir)
        .port(free_port())
        .log_dir(&log_dir)
        .start();
    match second {
        Err(e @ Error::Exited { .. }) => {
            let message = format!("{e:?}");
            assert!(message.contains("postmaster.pid"), "{message}");
            assert!(
                message.contains(&log_dir.display().to_string()),
                "{message}"
            );
        }
        other => panic!("expected Exited, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn the_shared_cluster_is_started_once() -> TestResult {
    let first = shared_postgres()?;
    let again = shared_postgres()?;
    assert!(std::ptr::eq(first, again));
    let url = first.create_unique_database("shared").await?;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let max: String = client.query_one("SHOW max_connections", &[]).await?.get(0);
    assert_eq!(max, "200");
    let fsync: String = client.query_one("SHOW fsync", &[]).await?.get(0);
    assert_eq!(fsync, "off");
    Ok(())
}

/// A second test on the shared cluster, in its own runtime: the singleton must not hold
/// anything bound to the runtime of the test that started it.
#[tokio::test]
async fn the_shared_cluster_outlives_the_runtime_that_started_it() -> TestResult {
    let cluster = shared_postgres()?;
    let url = cluster.create_unique_database("other_runtime").await?;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}
