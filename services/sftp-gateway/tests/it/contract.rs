//! The behaviour `etl-sftp` promises on any SFTP server, as one function per
//! scenario that takes a connected client and a fresh base directory.

use etl_sftp::SftpClient;

use crate::helpers::pattern;

/// mkdir, atomic write, list, read, overwrite by rename, remove, not-found.
pub(crate) async fn file_operations(client: &SftpClient, base: &str) {
    let dir = format!("{base}/a/b");
    client.mkdir_all(&dir).await.expect("mkdir_all");
    client
        .mkdir_all(&dir)
        .await
        .expect("mkdir_all is idempotent");

    client
        .write_atomic(&dir, "x.csv", b"hello\n")
        .await
        .expect("write_atomic");
    let listed = client.list(&dir).await.expect("list");
    let names: Vec<_> = listed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["x.csv"], "no temporary left, no . or ..");
    assert_eq!(listed[0].size, 6);
    assert!(!listed[0].is_dir);
    assert!(listed[0].modified_unix.is_some_and(|t| t > 1_600_000_000));

    let parent = client
        .list(&format!("{base}/a"))
        .await
        .expect("list parent");
    assert!(
        parent.iter().any(|e| e.name == "b" && e.is_dir),
        "{parent:?}"
    );

    let x = format!("{dir}/x.csv");
    let y = format!("{dir}/y.csv");
    assert_eq!(client.read(&x).await.expect("read"), b"hello\n");
    assert!(client.exists(&x).await.expect("exists"));
    assert!(!client.exists(&y).await.expect("exists"));
    assert_eq!(client.stat(&x).await.expect("stat").size, 6);

    // Rename onto an existing file replaces it (OpenSSH needs the fallback).
    client.write(&y, b"older").await.expect("write");
    client.rename(&x, &y).await.expect("rename over existing");
    assert_eq!(client.read(&y).await.expect("read renamed"), b"hello\n");
    assert!(!client.exists(&x).await.expect("exists"));

    // write truncates.
    client.write(&y, b"hi").await.expect("overwrite");
    assert_eq!(client.read(&y).await.expect("read"), b"hi");

    client.remove(&y).await.expect("remove");
    assert!(!client.exists(&y).await.expect("exists"));
    let err = client.read(&y).await.expect_err("read of a removed file");
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&y), "{err}");
    let err = client.remove(&y).await.expect_err("remove twice");
    assert!(err.is_not_found(), "{err}");

    // Empty files are files too.
    client
        .write_atomic(&dir, "empty.csv", b"")
        .await
        .expect("empty upload");
    assert_eq!(
        client
            .read(&format!("{dir}/empty.csv"))
            .await
            .expect("read empty"),
        b""
    );
}

/// A 5 MiB file goes up in pieces and comes back identical.
pub(crate) async fn large_file(client: &SftpClient, base: &str) {
    let data = pattern(5 * 1024 * 1024 + 123);
    client.mkdir_all(base).await.expect("mkdir");
    client
        .write_atomic(base, "big.bin", &data)
        .await
        .expect("upload 5 MiB");
    let path = format!("{base}/big.bin");
    assert_eq!(
        client.stat(&path).await.expect("stat").size,
        data.len() as u64
    );
    let back = client.read(&path).await.expect("download 5 MiB");
    assert_eq!(back.len(), data.len());
    assert!(back == data, "content differs");
}

/// One client used from several tasks at once.
pub(crate) async fn concurrent_tasks(client: &SftpClient, base: &str) {
    client.mkdir_all(base).await.expect("mkdir");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let client = client.clone();
        let base = base.to_string();
        tasks.spawn(async move {
            let data = pattern(100_000 + i * 1000);
            let name = format!("f{i}.bin");
            client
                .write_atomic(&base, &name, &data)
                .await
                .expect("write");
            let back = client.read(&format!("{base}/{name}")).await.expect("read");
            assert!(back == data, "task {i} content differs");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task");
    }
    assert_eq!(client.list(base).await.expect("list").len(), 8);
}
