//! The source connector's SFTP trust and login: a host key other than the
//! pinned one is refused (the file stays where it is and the status says
//! why), the right one is accepted, and key login works with the key given
//! as text (`tls.private.key`, Confluent's option name).

use std::time::Duration;

use etl_proto::v1::{CreateConnectorRequest, DeleteConnectorRequest};
use etl_service::Shutdown;

use crate::helpers::{Chunk, Stack, WAIT, eventually};

const SOURCE: &str = "sftp-csv-source";

async fn create_source(stack: &Stack, overrides: &[(&str, &str)]) {
    let mut all = vec![("file.poll.interval.ms", "200")];
    all.extend_from_slice(overrides);
    let (name, config) = stack.connector("sftp-source.json", &all);
    stack
        .grpc()
        .await
        .create_connector(CreateConnectorRequest { name, config })
        .await
        .expect("source created");
}

async fn delete_source(stack: &Stack) {
    stack
        .grpc()
        .await
        .delete_connector(DeleteConnectorRequest {
            name: SOURCE.into(),
        })
        .await
        .expect("deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_trusts_only_the_servers_known_host_key() {
    let stack = Stack::start().await;
    let name = "pinned__reviews__chunk_000000.csv";
    stack.upload(name, &Chunk::tricky(20, "p").tsv()).await;

    create_source(
        &stack,
        &[(
            "sftp.host.key.fingerprint",
            "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
    )
    .await;
    eventually("the refusal in the status", WAIT, || async {
        let s = format!("{:?}", stack.status(SOURCE).await);
        (s.contains("is pinned: refusing to connect")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        stack.local(&format!("input/{name}")).exists(),
        "a refused server's files are not touched"
    );
    delete_source(&stack).await;

    // A known_hosts file that records another key for this server.
    let dir = tempfile::tempdir().expect("tempdir");
    let known = dir.path().join("known_hosts");
    std::fs::write(
        &known,
        format!(
            "[127.0.0.1]:{} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdK1g3Ns6mlUK6kETV4Wj3Y3rRvaxXuYVtq+5cEt3Mq\n",
            stack.gateway.sftp_addr.port()
        ),
    )
    .expect("known_hosts");
    let known = known.display().to_string();
    create_source(&stack, &[("sftp.known.hosts.file", known.as_str())]).await;
    eventually("the known_hosts refusal in the status", WAIT, || async {
        let s = format!("{:?}", stack.status(SOURCE).await);
        s.contains("records another key for it").then_some(())
    })
    .await;
    assert!(stack.local(&format!("input/{name}")).exists());

    delete_source(&stack).await;
    let right = stack.gateway.host_key_fingerprint().to_string();
    create_source(&stack, &[("sftp.host.key.fingerprint", right.as_str())]).await;
    stack.wait_for_file(&format!("finished/{name}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_logs_in_with_a_key_given_as_text() {
    let stack = Stack::start().await;
    // A second gateway where user etl logs in with a key only.
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("id_ed25519");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
    let mut config = sftp_gateway::Config::ephemeral(dir.path().join("data"));
    config.users.clear();
    config.authorized_keys = vec![
        sftp_gateway::config::parse_key_spec(&format!("etl:{}.pub", key.display()))
            .expect("key spec"),
    ];
    let shutdown = Shutdown::new();
    let gateway = sftp_gateway::start(config, shutdown.clone())
        .await
        .expect("gateway starts");
    let name = "keyed__reviews__chunk_000000.csv";
    let input = dir.path().join("data/etl/input");
    std::fs::create_dir_all(&input).expect("mkdir");
    std::fs::write(input.join(name), Chunk::tricky(20, "k").tsv()).expect("write");

    let pem = std::fs::read_to_string(&key).expect("read key");
    let port = gateway.sftp_addr.port().to_string();
    let fingerprint = gateway.host_key_fingerprint().to_string();
    create_source(
        &stack,
        &[
            ("sftp.port", port.as_str()),
            ("sftp.password", ""),
            ("tls.private.key", pem.as_str()),
            ("sftp.host.key.fingerprint", fingerprint.as_str()),
            ("etl.gateway.url", ""),
        ],
    )
    .await;
    let finished = dir.path().join("data/etl/finished").join(name);
    eventually("the file sent and moved", WAIT, || async {
        finished.exists().then_some(())
    })
    .await;
    // The key never shows in what the API answers.
    let status = format!("{:?}", stack.status(SOURCE).await);
    assert!(!status.contains("PRIVATE KEY"), "{status}");
    shutdown.trigger();
}
