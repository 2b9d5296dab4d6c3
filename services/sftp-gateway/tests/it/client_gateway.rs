//! `etl-sftp` against the gateway started in-process on port 0.

use std::time::Duration;

use etl_sftp::{SftpAuth, SftpClient, SftpError};
use sftp_gateway::config::{KeySpec, UserSpec};
use testkit::sshd::{keygen, pub_key};

use crate::{contract, helpers::Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations() {
    let gw = Gateway::start().await;
    let client = gw.client().await;
    contract::file_operations(&client, "input/t").await;
    // What the client saw is what is on disk, in the user's root.
    assert!(gw.root("etl").join("input/t/a/b/empty.csv").is_file());
    client.close().await.expect("close");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_file_round_trip() {
    let gw = Gateway::start().await;
    let client = gw.client().await;
    contract::large_file(&client, "finished/big").await;
    let on_disk = std::fs::metadata(gw.root("etl").join("finished/big/big.bin")).expect("on disk");
    assert_eq!(on_disk.len(), 5 * 1024 * 1024 + 123);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_many_tasks() {
    let gw = Gateway::start().await;
    let client = gw.client().await;
    contract::concurrent_tasks(&client, "error/many").await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_created_and_listed() {
    let gw = Gateway::start().await;
    let client = gw.client().await;
    let names: Vec<_> = client
        .list("")
        .await
        .expect("list root")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["error", "finished", "input"]);
    let same: Vec<_> = client
        .list("/")
        .await
        .expect("list /")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, same, "/ is the user's root");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_root_are_refused() {
    let gw = Gateway::start().await;
    std::fs::write(gw.data_dir.join("outside.txt"), "secret").expect("file outside the root");
    let client = gw.client().await;

    for path in [
        "../outside.txt",
        "/../outside.txt",
        "input/../../outside.txt",
        "../../../../etc/passwd",
    ] {
        let err = client.read(path).await.expect_err(path);
        assert!(
            matches!(err, SftpError::PermissionDenied { .. }),
            "{path}: {err}"
        );
        assert!(err.to_string().contains(path), "{err}");
    }
    let err = client
        .write("../escape.txt", b"x")
        .await
        .expect_err("write outside");
    assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
    assert!(!gw.data_dir.join("escape.txt").exists());
    let err = client.list("..").await.expect_err("list outside");
    assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
    let err = client
        .rename("input", "../stolen")
        .await
        .expect_err("rename outside");
    assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
    let err = client
        .mkdir_all("../newdir")
        .await
        .expect_err("mkdir outside");
    assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
    assert!(!gw.data_dir.join("newdir").exists());

    // Absolute paths are inside the root: /etc/passwd is the user's own (absent) file.
    let err = client
        .read("/etc/passwd")
        .await
        .expect_err("no /etc in the root");
    assert!(err.is_not_found(), "{err}");

    // A symlink planted in the root does not lead out of it.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(&gw.data_dir, gw.root("etl").join("input/link"))
            .expect("symlink");
        let err = client
            .read("input/link/outside.txt")
            .await
            .expect_err("through symlink");
        assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
        let err = client
            .write("input/link/planted.txt", b"x")
            .await
            .expect_err("write through symlink");
        assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
        assert!(!gw.data_dir.join("planted.txt").exists());
    }

    // The refusals did not break the session.
    assert!(client.exists("input").await.expect("still usable"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_confined_to_their_own_roots() {
    let gw = Gateway::start_with(|c, _| {
        c.users.push(UserSpec {
            name: "alice".into(),
            password: "wonderland".into(),
        })
    })
    .await;
    let etl = gw.client().await;
    etl.write("input/mine.csv", b"etl's").await.expect("write");
    let alice = SftpClient::connect(&gw.config("alice", SftpAuth::Password("wonderland".into())))
        .await
        .expect("alice logs in");
    assert!(!alice.exists("input/mine.csv").await.expect("exists"));
    let err = alice
        .read("../etl/input/mine.csv")
        .await
        .expect_err("other user's file");
    assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
    for d in ["input", "finished", "error"] {
        assert!(gw.root("alice").join(d).is_dir(), "{d} created for alice");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused() {
    let gw = Gateway::start().await;
    for (user, password) in [("etl", "wrong"), ("nobody", "etl"), ("etl", "")] {
        let err = SftpClient::connect(&gw.config(user, SftpAuth::Password(password.into())))
            .await
            .expect_err("login must fail");
        assert!(matches!(err, SftpError::Auth { .. }), "{user}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(user) && msg.contains(&gw.sftp_addr.to_string()),
            "{msg}"
        );
        assert!(!msg.contains("wrong"), "no password in messages: {msg}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_login() {
    let gw = Gateway::start_with(|c, dir| {
        let key = keygen(dir, "id_bob");
        c.authorized_keys.push(KeySpec {
            name: "bob".into(),
            path: pub_key(&key),
        });
    })
    .await;
    let key = gw.dir.path().join("id_bob");
    let bob = SftpClient::connect(&gw.config("bob", SftpAuth::KeyFile(key.clone())))
        .await
        .expect("bob logs in with his key");
    bob.write_atomic("input", "k.csv", b"k")
        .await
        .expect("write");
    assert!(gw.root("bob").join("input/k.csv").is_file());

    // The same key is not etl's, and bob has no password.
    let err = SftpClient::connect(&gw.config("etl", SftpAuth::KeyFile(key)))
        .await
        .expect_err("key of another user");
    assert!(matches!(err, SftpError::Auth { .. }), "{err}");
    let err = SftpClient::connect(&gw.config("bob", SftpAuth::Password("".into())))
        .await
        .expect_err("bob has no password");
    assert!(matches!(err, SftpError::Auth { .. }), "{err}");

    let err =
        SftpClient::connect(&gw.config("bob", SftpAuth::KeyFile(gw.dir.path().join("missing"))))
            .await
            .expect_err("missing key file");
    assert!(matches!(err, SftpError::KeyFile { .. }), "{err}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_key_is_kept_and_can_be_pinned() {
    let gw = Gateway::start().await;
    let fingerprint = gw.running().host_key_fingerprint().to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    let client = gw.client().await;
    assert_eq!(client.host_key_fingerprint(), fingerprint);
    let cfg = gw.config("etl", SftpAuth::Password("etl".into()));
    SftpClient::connect_pinned(&cfg, &fingerprint)
        .await
        .expect("pinned key matches");
    let err =
        SftpClient::connect_pinned(&cfg, "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .await
            .expect_err("wrong pin");
    assert!(matches!(err, SftpError::HostKey { .. }), "{err}");

    // A restart on the same data directory reuses the key.
    let data_dir = gw.data_dir.clone();
    let key_path = data_dir.join("ssh_host_ed25519_key");
    assert!(key_path.is_file());
    let shutdown = etl_service::Shutdown::new();
    let again = sftp_gateway::start(sftp_gateway::Config::ephemeral(&data_dir), shutdown.clone())
        .await
        .expect("second start");
    assert_eq!(again.host_key_fingerprint(), fingerprint);
    shutdown.trigger();
    again.wait().await.expect("second gateway stops");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_is_a_connect_error() {
    let port = crate::helpers::free_port();
    let cfg = etl_sftp::SftpConfig::from_addr(
        &format!("127.0.0.1:{port}"),
        "etl",
        SftpAuth::Password("etl".into()),
    )
    .expect("address");
    let err = SftpClient::connect(&cfg)
        .await
        .expect_err("nothing listens");
    assert!(err.is_connection(), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_disconnects_idle_clients_and_closes_the_port() {
    let gw = Gateway::start().await;
    let addr = gw.sftp_addr;
    let client = gw.client().await;
    client.write("input/before.csv", b"x").await.expect("write");
    let started = std::time::Instant::now();
    gw.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "idle session does not hold shutdown"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
    let err = client
        .read("input/before.csv")
        .await
        .expect_err("session is gone");
    assert!(err.is_connection(), "{err}");
}

/// A client that trusts any host key, for driving russh-sftp by hand.
struct AcceptAny;

impl russh::client::Handler for AcceptAny {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_upload_in_flight_finish() {
    use tokio::io::AsyncWriteExt;

    let gw = Gateway::start().await;
    let mut events = gw.subscribe();
    let mut ssh = russh::client::connect(
        std::sync::Arc::new(Default::default()),
        gw.sftp_addr,
        AcceptAny,
    )
    .await
    .expect("ssh connect");
    assert!(
        ssh.authenticate_password("etl", "etl")
            .await
            .expect("auth")
            .success()
    );
    let channel = ssh.channel_open_session().await.expect("channel");
    channel
        .request_subsystem(true, "sftp")
        .await
        .expect("subsystem");
    let sftp = russh_sftp::client::SftpSession::new(channel.into_stream())
        .await
        .expect("sftp");

    let mut file = sftp
        .create("input/inflight.csv")
        .await
        .expect("open for writing");
    file.write_all(b"first half,").await.expect("write");
    file.flush().await.expect("flush");

    let stopping = tokio::spawn(gw.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "shutdown waits for the open upload"
    );

    file.write_all(b"second half")
        .await
        .expect("write after shutdown began");
    file.shutdown().await.expect("close");
    let event = crate::helpers::next_event(&mut events).await;
    assert_eq!(event.path, "input/inflight.csv");
    assert_eq!(event.size, 22);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown completes once the upload closed")
        .expect("stop task");
}

/// Requests that race the end of the connection (many tasks on one client while
/// the server stops) all end at once as lost connections: none may wait out the
/// request timeout, which would hold a source's file for a minute after every
/// server restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_racing_the_end_of_the_connection_fail_at_once() {
    for round in 0..5 {
        let gw = Gateway::start().await;
        let client = gw.client().await;
        client.write("input/a.csv", b"x").await.expect("write");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let client = client.clone();
            tasks.spawn(async move {
                loop {
                    if let Err(e) = client.stat("input/a.csv").await {
                        return e;
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        gw.stop().await;
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(joined) = tasks.join_next().await {
                let e = joined.expect("task");
                assert!(e.is_connection(), "round {round}: {e}");
            }
        })
        .await;
        assert!(
            ended.is_ok(),
            "round {round}: a request still waited 10 s after the server stopped"
        );
    }
}
