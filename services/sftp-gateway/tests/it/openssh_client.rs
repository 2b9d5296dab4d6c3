//! OpenSSH's `sftp` client (Debian openssh-client) against the gateway.

use sftp_gateway::config::KeySpec;

use testkit::sshd::{keygen, pub_key};

use crate::helpers::{CliAuth, Gateway, next_event, openssh_sftp, pattern};

async fn gateway_with_key() -> (Gateway, std::path::PathBuf) {
    let gw = Gateway::start_with(|c, dir| {
        let key = keygen(dir, "id_etl");
        c.authorized_keys.push(KeySpec {
            name: "etl".into(),
            path: pub_key(&key),
        });
    })
    .await;
    let key = gw.dir.path().join("id_etl");
    (gw, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_ls_rename_get() {
    let (gw, key) = gateway_with_key().await;
    let local = gw.dir.path().join("local");
    std::fs::create_dir_all(&local).expect("local dir");
    let content = pattern(300_000);
    std::fs::write(local.join("up.csv"), &content).expect("local file");
    let mut events = gw.subscribe();

    let run = openssh_sftp(
        gw.sftp_addr.port(),
        "etl",
        CliAuth::Key(&key),
        &format!(
            "pwd\n\
             put {l}/up.csv input/up.csv\n\
             ls input\n\
             rename input/up.csv input/renamed.csv\n\
             ls -l input\n\
             get input/renamed.csv {l}/down.csv\n\
             cd input\n\
             mkdir sub\n\
             ls\n\
             rmdir sub\n\
             chmod 600 renamed.csv\n",
            l = local.display()
        ),
        gw.dir.path(),
    )
    .await;
    assert!(run.success, "sftp failed:\n{}", run.all());
    assert!(
        run.stdout.contains("Remote working directory: /"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("input/up.csv"), "{}", run.stdout);
    assert!(run.stdout.contains("renamed.csv"), "{}", run.stdout);
    assert!(run.stdout.contains("sub"), "{}", run.stdout);
    // `ls -l` shows the long form, owner being the SFTP user.
    assert!(
        run.stdout.contains("-rw") && run.stdout.contains(" etl "),
        "{}",
        run.stdout
    );

    let down = std::fs::read(local.join("down.csv")).expect("downloaded");
    assert!(down == content, "downloaded content differs");
    let root = gw.root("etl");
    assert!(root.join("input/renamed.csv").is_file());
    assert!(!root.join("input/up.csv").exists());
    assert!(!root.join("input/sub").exists());

    // put (closed after writing) and rename (into place) both announce.
    let put = next_event(&mut events).await;
    assert_eq!((put.path.as_str(), put.size), ("input/up.csv", 300_000));
    let renamed = next_event(&mut events).await;
    assert_eq!(renamed.path, "input/renamed.csv");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cannot_leave_the_root() {
    let (gw, key) = gateway_with_key().await;
    let local = gw.dir.path().join("local");
    std::fs::create_dir_all(&local).expect("local dir");
    std::fs::write(local.join("f.txt"), "f").expect("local file");
    std::fs::write(gw.data_dir.join("secret.txt"), "secret").expect("outside the root");
    let l = local.display();
    let port = gw.sftp_addr.port();

    // Each batch must fail (sftp -b stops at the first failed command). The
    // client globs `get` sources and reports any refusal as "not found".
    let cases = [
        (format!("get ../secret.txt {l}/stolen1\n"), None),
        (format!("get /../../etc/passwd {l}/stolen2\n"), None),
        ("cd ..\n".to_string(), Some("Permission denied")),
        ("cd /../..\n".to_string(), Some("Permission denied")),
        (
            format!("put {l}/f.txt ../escaped.txt\n"),
            Some("Permission denied"),
        ),
        (
            format!("put {l}/f.txt /../../tmp/escaped.txt\n"),
            Some("Permission denied"),
        ),
        // Absolute paths stay inside the root, where there is no /etc.
        (format!("get /etc/passwd {l}/stolen3\n"), None),
    ];
    for (batch, expect) in &cases {
        let run = openssh_sftp(port, "etl", CliAuth::Key(&key), batch, gw.dir.path()).await;
        assert!(!run.success, "must fail: {batch}\n{}", run.all());
        if let Some(expect) = expect {
            assert!(run.all().contains(expect), "{batch}: {}", run.all());
        }
    }
    for stolen in ["stolen1", "stolen2", "stolen3"] {
        assert!(!local.join(stolen).exists(), "{stolen} was downloaded");
    }
    assert!(!gw.data_dir.join("escaped.txt").exists());
    assert!(!std::path::Path::new("/tmp/escaped.txt").exists());

    // After all that, the same client still works inside the root.
    let run = openssh_sftp(
        port,
        "etl",
        CliAuth::Key(&key),
        "cd /input\npwd\ncd ..\npwd\n",
        gw.dir.path(),
    )
    .await;
    assert!(run.success, "{}", run.all());
    assert!(
        run.stdout.contains("Remote working directory: /input"),
        "{}",
        run.stdout
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_and_wrong_password() {
    let gw = Gateway::start().await;
    let port = gw.sftp_addr.port();
    let run = openssh_sftp(port, "etl", CliAuth::Password("etl"), "ls\n", gw.dir.path()).await;
    assert!(run.success, "right password: {}", run.all());
    assert!(run.stdout.contains("input"), "{}", run.all());

    let run = openssh_sftp(
        port,
        "etl",
        CliAuth::Password("not-the-password"),
        "ls\n",
        gw.dir.path(),
    )
    .await;
    assert!(!run.success, "wrong password must fail: {}", run.all());
    assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
    gw.stop().await;
}
