//! `etl-sftp`'s host key checking (pinned fingerprint, known_hosts, trust on
//! first use) and key logins with a passphrase, against the gateway and
//! OpenSSH's sshd.

use std::path::Path;

use etl_sftp::{HostKeyPolicy, SftpAuth, SftpClient, SftpError};
use sftp_gateway::config::KeySpec;

use testkit::{
    Sshd,
    sshd::{keygen_with_passphrase, pub_key},
};

use crate::helpers::{Gateway, sshd_config};

/// A known_hosts line for `127.0.0.1:port` with the public key in `pub_file`.
fn known_hosts_line(port: u16, pub_file: &Path) -> String {
    let public = std::fs::read_to_string(pub_file).expect("public key");
    let mut fields = public.split_whitespace();
    let (algo, key) = (
        fields.next().expect("algorithm"),
        fields.next().expect("key"),
    );
    format!("[127.0.0.1]:{port} {algo} {key}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_mismatch_and_unknown_hosts_are_refused() {
    let gw = Gateway::start().await;
    let other = Gateway::start().await;
    let cfg = gw.config("etl", SftpAuth::Password("etl".into()));
    let port = gw.sftp_addr.port();
    let dir = tempfile::tempdir().expect("tempdir");

    // The gateway's own key, as a supervisor would record it.
    let good = dir.path().join("good_known_hosts");
    let gw_pub = gw.data_dir.join("ssh_host_ed25519_key.pub");
    std::fs::write(&good, known_hosts_line(port, &gw_pub)).expect("write");
    let client = SftpClient::connect_with(&cfg, &HostKeyPolicy::KnownHosts(good.clone()))
        .await
        .expect("recorded key accepted");
    client.list("input").await.expect("works");

    // Another server's key recorded for this address: a man in the middle.
    let bad = dir.path().join("bad_known_hosts");
    let other_pub = other.data_dir.join("ssh_host_ed25519_key.pub");
    std::fs::write(&bad, known_hosts_line(port, &other_pub)).expect("write");
    let err = SftpClient::connect_with(&cfg, &HostKeyPolicy::KnownHosts(bad.clone()))
        .await
        .expect_err("changed key refused");
    assert!(
        matches!(err, SftpError::HostKeyChanged { line: 1, .. }),
        "{err}"
    );
    assert!(err.is_host_key() && !err.is_connection(), "{err}");
    assert!(err.to_string().contains("bad_known_hosts"), "{err}");

    // Not recorded at all (an empty or missing file): refused, unless asked to trust.
    let missing = dir.path().join("missing_known_hosts");
    let err = SftpClient::connect_with(&cfg, &HostKeyPolicy::KnownHosts(missing.clone()))
        .await
        .expect_err("unknown host refused");
    assert!(matches!(err, SftpError::UnknownHostKey { .. }), "{err}");
    assert!(
        !missing.exists(),
        "nothing recorded without trust on first use"
    );

    // Trust on first use records the key, then holds the server to it.
    SftpClient::connect_with(&cfg, &HostKeyPolicy::TrustOnFirstUse(missing.clone()))
        .await
        .expect("first use trusted");
    let recorded = std::fs::read_to_string(&missing).expect("recorded");
    assert!(
        recorded
            .trim_start()
            .starts_with(&format!("[127.0.0.1]:{port} ssh-ed25519 ")),
        "{recorded}"
    );
    SftpClient::connect_with(&cfg, &HostKeyPolicy::KnownHosts(missing.clone()))
        .await
        .expect("now known");
    let other_cfg = {
        let mut c = other.config("etl", SftpAuth::Password("etl".into()));
        // The other gateway on the recorded address's name and port.
        std::fs::write(&missing, known_hosts_line(other.sftp_addr.port(), &gw_pub)).expect("write");
        c.port = other.sftp_addr.port();
        c
    };
    let err = SftpClient::connect_with(&other_cfg, &HostKeyPolicy::TrustOnFirstUse(missing))
        .await
        .expect_err("trust on first use never accepts a changed key");
    assert!(matches!(err, SftpError::HostKeyChanged { .. }), "{err}");

    // The fingerprint the gateway publishes in its data directory pins it.
    let file = gw.data_dir.join(sftp_gateway::FINGERPRINT_FILE);
    let pinned = HostKeyPolicy::fingerprint_file(&file).expect("fingerprint file");
    assert_eq!(
        pinned,
        HostKeyPolicy::Fingerprint(gw.running().host_key_fingerprint().to_string())
    );
    SftpClient::connect_with(&cfg, &pinned)
        .await
        .expect("pinned by file");
    let err = SftpClient::connect_with(&other_cfg, &pinned)
        .await
        .expect_err("another server");
    assert!(matches!(err, SftpError::HostKey { .. }), "{err}");
    other.stop().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_work_with_openssh() {
    let sshd = tokio::task::spawn_blocking(Sshd::start)
        .await
        .expect("sshd");
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    let host_pub = pub_key(&sshd.host_key);
    std::fs::write(&known, known_hosts_line(sshd.port, &host_pub)).expect("write");
    let client = SftpClient::connect_with(&sshd_config(&sshd), &HostKeyPolicy::KnownHosts(known))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\n{}", sshd.log()));
    client.write("k.csv", b"k").await.expect("write");

    let wrong = dir.path().join("wrong");
    let gw = Gateway::start().await;
    std::fs::write(
        &wrong,
        known_hosts_line(sshd.port, &gw.data_dir.join("ssh_host_ed25519_key.pub")),
    )
    .expect("write");
    let err = SftpClient::connect_with(&sshd_config(&sshd), &HostKeyPolicy::KnownHosts(wrong))
        .await
        .expect_err("mismatch");
    assert!(matches!(err, SftpError::HostKeyChanged { .. }), "{err}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_login_with_a_passphrase() {
    let gw = Gateway::start_with(|c, dir| {
        let key = keygen_with_passphrase(dir, "id_carol", "correct horse");
        c.authorized_keys.push(KeySpec {
            name: "carol".into(),
            path: pub_key(&key),
        });
    })
    .await;
    let key = gw.dir.path().join("id_carol");
    let client =
        SftpClient::connect(&gw.config("carol", SftpAuth::key(&key, Some("correct horse".into()))))
            .await
            .expect("encrypted key with its passphrase");
    client.write("input/c.csv", b"c").await.expect("write");

    for auth in [
        SftpAuth::key(&key, Some("wrong".into())),
        SftpAuth::KeyFile(key.clone()),
        SftpAuth::key(&key, None),
    ] {
        let err = SftpClient::connect(&gw.config("carol", auth))
            .await
            .expect_err("no usable key");
        assert!(matches!(err, SftpError::KeyFile { .. }), "{err}");
        assert!(!err.to_string().contains("correct horse"), "{err}");
    }
    gw.stop().await;
}
