//! The gateway's defences, each driven over the wire: attempts per
//! connection, failed-login penalties per address, connection caps, login
//! grace and idle timeouts, file size limit and quota, per-user permissions
//! with an argon2 users file, and symlinks swapped in under a client.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use etl_sftp::{SftpAuth, SftpClient, SftpError};
use tokio::{
    io::AsyncReadExt,
    net::{TcpSocket, TcpStream},
};

use crate::helpers::{CliAuth, Gateway, openssh_sftp, pattern};

/// A russh client that trusts any host key, to drive logins by hand.
struct AnyHostKey;

impl russh::client::Handler for AnyHostKey {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// TCP to `addr` from `source` (a loopback address: 127.0.0.2 is another
/// client address on the same machine).
async fn tcp_from(source: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .expect("bind source address");
    socket.connect(addr).await.expect("TCP connect")
}

/// Whether the server greets a new TCP connection from `source` with its SSH
/// banner (true, and the stream stays open) or closes it at once (false).
async fn greeted(source: Ipv4Addr, addr: SocketAddr) -> Option<TcpStream> {
    let mut stream = tcp_from(source, addr).await;
    let mut buf = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) if &buf == b"SSH-" => Some(stream),
        Ok(_) => None,
        Err(_) => panic!("the server neither greeted nor closed within 5 s"),
    }
}

/// Waits (bounded) until the server closes `stream`; returns how long it took.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

async fn russh_client(source: Ipv4Addr, addr: SocketAddr) -> russh::client::Handle<AnyHostKey> {
    let stream = tcp_from(source, addr).await;
    russh::client::connect_stream(
        Arc::new(russh::client::Config::default()),
        stream,
        AnyHostKey,
    )
    .await
    .expect("SSH handshake")
}

async fn login(ssh: &mut russh::client::Handle<AnyHostKey>, password: &str) -> bool {
    ssh.authenticate_password("etl", password)
        .await
        .is_ok_and(|r| r.success())
}

const HERE: Ipv4Addr = Ipv4Addr::LOCALHOST;
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_per_connection_are_capped() {
    let gw = Gateway::start_with(|c, _| {
        c.max_auth_attempts = 3;
        c.auth_penalty = Duration::ZERO;
    })
    .await;
    let mut ssh = russh_client(HERE, gw.sftp_addr).await;
    for attempt in 1..=3 {
        assert!(!login(&mut ssh, "wrong").await, "attempt {attempt}");
    }
    // Used up: not even the right password is looked at any more...
    assert!(!login(&mut ssh, "etl").await, "no fourth check");
    // ...and the server closes the connection.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ssh.is_closed() {
        let _ = ssh.authenticate_password("etl", "etl").await;
        assert!(Instant::now() < deadline, "connection still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new connection has its own attempts.
    let mut again = russh_client(HERE, gw.sftp_addr).await;
    assert!(login(&mut again, "etl").await);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_are_throttled_per_source_address() {
    let gw = Gateway::start_with(|c, _| {
        c.auth_penalty = Duration::from_secs(5);
        c.auth_penalty_min = Duration::from_secs(12);
        c.auth_penalty_max = Duration::from_secs(60);
    })
    .await;
    let wrong = gw.config("etl", SftpAuth::Password("guess".into()));
    let right = gw.config("etl", SftpAuth::Password("etl".into()));
    // Three guesses from three connections (as a parallel guesser would).
    let guesses = futures::future::join_all((0..3).map(|_| SftpClient::connect(&wrong))).await;
    for guess in guesses {
        let err = guess.expect_err("wrong password");
        assert!(matches!(err, SftpError::Auth { .. }), "{err}");
    }
    // 15 s of penalty > 12 s: this address is blocked, even with the password.
    let err = SftpClient::connect(&right)
        .await
        .expect_err("blocked address");
    assert!(err.is_connection(), "refused before login: {err}");
    assert!(
        greeted(HERE, gw.sftp_addr).await.is_none(),
        "closed at accept"
    );
    // Another address is not.
    let mut other = russh_client(ELSEWHERE, gw.sftp_addr).await;
    assert!(login(&mut other, "etl").await, "another address logs in");
    gw.stop().await;

    // Exempt addresses (a supervisor's loopback, if chosen) are never blocked.
    let gw = Gateway::start_with(|c, _| {
        c.auth_penalty = Duration::from_secs(5);
        c.auth_penalty_min = Duration::from_secs(1);
        c.auth_penalty_exempt = vec![IpAddr::V4(HERE)];
    })
    .await;
    let wrong = gw.config("etl", SftpAuth::Password("guess".into()));
    let _ = SftpClient::connect(&wrong).await.expect_err("wrong");
    let _ = SftpClient::connect(&wrong).await.expect_err("wrong");
    gw.client().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_capped() {
    let gw = Gateway::start_with(|c, _| c.max_startups = 2).await;
    let first = greeted(HERE, gw.sftp_addr).await.expect("first");
    let _second = greeted(HERE, gw.sftp_addr).await.expect("second");
    assert!(
        greeted(HERE, gw.sftp_addr).await.is_none(),
        "a third unauthenticated connection is closed at once"
    );
    // A logged-in connection no longer counts as a start-up.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    let client = loop {
        match SftpClient::connect(&gw.config("etl", SftpAuth::Password("etl".into()))).await {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "slot never freed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    client.list("input").await.expect("works");
    let _third = greeted(HERE, gw.sftp_addr)
        .await
        .expect("one start-up place is free again");
    assert!(
        greeted(HERE, gw.sftp_addr).await.is_none(),
        "both places taken"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_overall_and_per_address() {
    let gw = Gateway::start_with(|c, _| {
        c.max_connections = 2;
        c.max_connections_per_addr = 5;
    })
    .await;
    let a = gw.client().await;
    let _b = gw.client().await;
    let err = SftpClient::connect(&gw.config("etl", SftpAuth::Password("etl".into())))
        .await
        .expect_err("third connection");
    assert!(err.is_connection(), "{err}");
    a.close().await.expect("close");
    let deadline = Instant::now() + Duration::from_secs(5);
    while SftpClient::connect(&gw.config("etl", SftpAuth::Password("etl".into())))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the closed connection's place never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;

    let gw = Gateway::start_with(|c, _| c.max_connections_per_addr = 1).await;
    let _mine = greeted(HERE, gw.sftp_addr).await.expect("first from here");
    assert!(
        greeted(HERE, gw.sftp_addr).await.is_none(),
        "second from here"
    );
    assert!(
        greeted(ELSEWHERE, gw.sftp_addr).await.is_some(),
        "another address has its own count"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_grace_time_and_idle_timeout() {
    let gw = Gateway::start_with(|c, _| {
        c.login_grace_time = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
    })
    .await;
    // Says nothing after the banner.
    let mut silent = greeted(HERE, gw.sftp_addr).await.expect("greeted");
    let took = closed_by_server(&mut silent, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(4), "{took:?}");
    // Completes the handshake but never logs in.
    let ssh = russh_client(HERE, gw.sftp_addr).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(ssh.is_closed(), "no login within the grace time");

    // Logged in, busy: stays.
    let busy = gw.client().await;
    for _ in 0..12 {
        busy.list("input").await.expect("busy client served");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Logged in, idle: closed.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let err = busy
        .list("input")
        .await
        .expect_err("idle connection closed");
    assert!(err.is_connection(), "{err}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_size_limit_and_quota_are_refused_with_a_clear_status() {
    let mut gw = Gateway::start_with(|c, _| {
        c.max_file_size = 1000;
        c.user_quota = 2500;
    })
    .await;
    let client = gw.client().await;
    let err = client
        .write_atomic("input", "big.csv", &pattern(1001))
        .await
        .expect_err("over the file size limit");
    let msg = err.to_string();
    assert!(
        msg.contains("file too large") && msg.contains("1000"),
        "{msg}"
    );
    let names: Vec<_> = client
        .list("input")
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.is_empty(), "nothing left behind: {names:?}");

    client
        .write_atomic("input", "a.csv", &pattern(1000))
        .await
        .expect("a");
    client
        .write_atomic("input", "b.csv", &pattern(1000))
        .await
        .expect("b");
    let err = client
        .write_atomic("input", "c.csv", &pattern(1000))
        .await
        .expect_err("over quota");
    let msg = err.to_string();
    assert!(
        msg.contains("quota exceeded") && msg.contains("2500"),
        "{msg}"
    );
    // Overwriting in place charges only the growth; removing frees.
    client
        .write("input/b.csv", &pattern(900))
        .await
        .expect("rewrite b smaller");
    client.remove("input/a.csv").await.expect("remove a");
    client
        .write_atomic("input", "c.csv", &pattern(1000))
        .await
        .expect("c fits now");
    client.close().await.expect("close");

    // A restarted gateway measures what is there: 1900 bytes used.
    gw.restart().await;
    let client = gw.client().await;
    let err = client
        .write("input/d.csv", &pattern(601))
        .await
        .expect_err("over quota");
    assert!(err.to_string().contains("quota exceeded"), "{err}");
    client
        .remove("input/d.csv")
        .await
        .expect("remove the empty d");
    client
        .write("input/d.csv", &pattern(600))
        .await
        .expect("exactly at quota");

    // OpenSSH's client is refused too (it shows SFTP v3's generic "Failure";
    // the message with the reason is in the status, as etl-sftp shows it).
    let local = gw.dir.path().join("huge.csv");
    std::fs::write(&local, pattern(2000)).expect("local file");
    let run = openssh_sftp(
        gw.sftp_addr.port(),
        "etl",
        CliAuth::Password("etl"),
        &format!("put {} input/huge.csv\n", local.display()),
        gw.dir.path(),
    )
    .await;
    assert!(run.all().contains("Failure"), "{}", run.all());
    let huge = std::fs::metadata(gw.root("etl").join("input/huge.csv")).map_or(0, |m| m.len());
    assert_eq!(huge, 0, "nothing of the refused upload was written");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaders_write_input_and_only_read_the_rest() {
    let hash = sftp_gateway::hash_password("up-secret").expect("hash");
    let gw = Gateway::start_with(|c, dir| {
        let file = dir.join("users");
        std::fs::write(
            &file,
            format!("# name:argon2 hash:profile\nup:{hash}:upload\nro:{hash}:read\n"),
        )
        .expect("users file");
        c.users_file = Some(file);
    })
    .await;
    // What a connector would have left in the uploader's root.
    std::fs::write(gw.root("up").join("finished/f.csv"), "done").expect("finished/");
    std::fs::write(gw.root("up").join("error/e.csv"), "bad").expect("error/");
    let login = |user: &str, password: &str| {
        let cfg = gw.config(user, SftpAuth::Password(password.into()));
        async move { SftpClient::connect(&cfg).await }
    };
    let err = login("up", "wrong").await.expect_err("wrong password");
    assert!(matches!(err, SftpError::Auth { .. }), "{err}");
    let up = login("up", "up-secret").await.expect("argon2 login");

    up.write_atomic("input", "u.csv", b"u")
        .await
        .expect("upload");
    assert_eq!(
        up.read("finished/f.csv").await.expect("read finished/"),
        b"done"
    );
    assert_eq!(up.read("error/e.csv").await.expect("read error/"), b"bad");
    assert_eq!(up.list("finished").await.expect("list").len(), 1);
    assert!(
        up.traceparent("input/u.csv")
            .await
            .expect("traceparent")
            .is_some()
    );

    let denied = |r: Result<(), SftpError>, what: &str| match r {
        Err(SftpError::PermissionDenied { .. }) => {}
        other => panic!("{what}: expected permission denied, got {other:?}"),
    };
    denied(up.remove("finished/f.csv").await, "delete in finished/");
    denied(up.remove("error/e.csv").await, "delete in error/");
    denied(
        up.rename("input/u.csv", "finished/u.csv").await,
        "move out of input/",
    );
    denied(
        up.rename("finished/f.csv", "input/f.csv").await,
        "move out of finished/",
    );
    denied(up.write("finished/x.csv", b"x").await, "write in finished/");
    denied(up.write("top.csv", b"x").await, "write in the root");
    assert!(
        up.mkdir_all("finished/sub").await.is_err(),
        "mkdir in finished/"
    );
    let finished: Vec<_> = std::fs::read_dir(gw.root("up").join("finished"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(finished, ["f.csv"], "finished/ unchanged");
    assert!(gw.root("up").join("error/e.csv").is_file());
    // Its own uploads in input/ it may replace and remove.
    up.write_atomic("input", "u.csv", b"u2")
        .await
        .expect("replace");
    up.remove("input/u.csv").await.expect("remove own upload");

    let ro = login("ro", "up-secret").await.expect("read-only user");
    denied(ro.write("input/r.csv", b"r").await, "read-only upload");
    ro.list("input").await.expect("may list");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_in_between_check_and_open_never_leads_outside() {
    let gw = Gateway::start().await;
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret"), "TOPSECRET").expect("secret");
    let root = gw.root("etl");
    std::fs::write(root.join("input/x.csv"), "public").expect("x");
    std::fs::create_dir(root.join("input/sub")).expect("sub");
    std::os::unix::fs::symlink(outside.path(), root.join("input/.sub-link")).expect("dir link");

    // A plain symlink out of the root is refused, for reading and writing.
    std::os::unix::fs::symlink(outside.path().join("secret"), root.join("input/link"))
        .expect("link");
    let client = gw.client().await;
    let err = client.read("input/link").await.expect_err("symlink read");
    assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
    let err = client
        .write("input/link", b"x")
        .await
        .expect_err("symlink write");
    assert!(matches!(err, SftpError::PermissionDenied { .. }), "{err}");
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).expect("secret"),
        "TOPSECRET"
    );

    // Someone on the host flips input/x.csv between a file and a symlink to
    // the secret, and input/sub between a directory and a symlink to the
    // outside directory, while the client stats and then opens.
    let stop = Arc::new(AtomicBool::new(false));
    let flips = Arc::new(AtomicUsize::new(0));
    let swapper = {
        let (stop, flips, root) = (stop.clone(), flips.clone(), root.clone());
        let secret = outside.path().join("secret");
        std::thread::spawn(move || {
            use rustix::fs::{CWD, RenameFlags, renameat_with};
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(root.join("input/.x-link"));
                let _ = std::os::unix::fs::symlink(&secret, root.join("input/.x-link"));
                let _ = std::fs::rename(root.join("input/.x-link"), root.join("input/x.csv"));
                let _ = renameat_with(
                    CWD,
                    root.join("input/sub"),
                    CWD,
                    root.join("input/.sub-link"),
                    RenameFlags::EXCHANGE,
                );
                std::thread::yield_now();
                let _ = std::fs::write(root.join("input/.x-file"), "public");
                let _ = std::fs::rename(root.join("input/.x-file"), root.join("input/x.csv"));
                let _ = renameat_with(
                    CWD,
                    root.join("input/sub"),
                    CWD,
                    root.join("input/.sub-link"),
                    RenameFlags::EXCHANGE,
                );
                flips.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let started = Instant::now();
    let (mut reads, mut writes) = (0, 0);
    while started.elapsed() < Duration::from_secs(3) {
        if client.stat("input/x.csv").await.is_ok()
            && let Ok(data) = client.read("input/x.csv").await
        {
            assert_ne!(
                data, b"TOPSECRET",
                "read the secret through a swapped symlink"
            );
            reads += 1;
        }
        if client.exists("input/sub").await.unwrap_or(false)
            && client.write("input/sub/new.csv", b"planted").await.is_ok()
        {
            writes += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().expect("swapper");
    assert!(flips.load(Ordering::Relaxed) > 100, "the race ran");
    assert!(
        reads > 0 && writes > 0,
        "some operations went through: {reads} reads, {writes} writes"
    );
    assert!(
        !outside.path().join("new.csv").exists(),
        "a file was created outside the root"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("secret")).expect("secret"),
        "TOPSECRET"
    );
    gw.stop().await;
}
