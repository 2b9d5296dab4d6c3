//! `etl-sftp` against OpenSSH's sshd (`internal-sftp`): the client works with
//! any SFTP server, not just ours.

use etl_sftp::{SftpAuth, SftpClient, SftpError};
use testkit::Sshd;

use crate::{contract, helpers::sshd_config};

async fn connect(sshd: &Sshd) -> SftpClient {
    match SftpClient::connect(&sshd_config(sshd)).await {
        Ok(c) => c,
        Err(e) => panic!("connect to sshd: {e}\nsshd log:\n{}", sshd.log()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_operations_on_openssh() {
    let sshd = tokio::task::spawn_blocking(Sshd::start)
        .await
        .expect("sshd");
    let client = connect(&sshd).await;
    contract::file_operations(&client, "t").await;
    assert!(
        sshd.root.join("t/a/b/empty.csv").is_file(),
        "paths are relative to the login directory"
    );
    contract::large_file(&client, "big").await;
    contract::concurrent_tasks(&client, "many").await;
    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssh_refusals_are_reported() {
    let sshd = tokio::task::spawn_blocking(Sshd::start)
        .await
        .expect("sshd");
    let mut cfg = sshd_config(&sshd);
    cfg.auth = SftpAuth::Password("root".into());
    let err = SftpClient::connect(&cfg)
        .await
        .expect_err("sshd allows no passwords");
    assert!(matches!(err, SftpError::Auth { .. }), "{err}");

    let client = connect(&sshd).await;
    let err = client.read("missing/file.csv").await.expect_err("missing");
    assert!(err.is_not_found(), "{err}");
    assert!(!client.exists("missing").await.expect("exists"));
}
