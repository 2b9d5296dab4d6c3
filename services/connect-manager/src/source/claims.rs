//! Exclusive file claims on the SFTP server (distributed mode): several
//! workers' source tasks scan one input directory, and each file must be
//! processed by one of them at a time, and by one at least.
//!
//! - A worker claims `input/F` by renaming it to `input/.claims/<worker>/F`
//!   before reading it. A rename is atomic on the server, so of the workers
//!   racing for a file exactly one succeeds and the others find the source
//!   gone. It is a plain `SSH_FXP_RENAME`: sftp-gateway renames with
//!   `renameat`; OpenSSH links the new name then unlinks the old, and the
//!   loser of a race (its unlink fails) removes its spare link again.
//! - A claimed file stays in the claim directory until it is done with:
//!   moved to `finished/` or `error/`, deleted, or (`cleanup.policy=NONE`)
//!   renamed back to `input/`. A Kafka or SFTP failure leaves it there and the
//!   worker's next poll takes it again; so does a worker restarted with the
//!   same id (the same data directory).
//! - A claim directory whose worker is not among the group's live workers
//!   belongs to a dead worker: the others take each of its files over with
//!   the same rename, `.claims/<dead>/F` → `.claims/<me>/F`, so again exactly
//!   one of them wins, and it sends the file whole (records the dead worker
//!   sent already are harmless: the sink upserts on `(file, row)`). Without a
//!   view of the group (an empty set) no claim is taken over, and a worker
//!   must have been missing from it for [`TAKEOVER_GRACE`] first: a view
//!   taken in the middle of a rebalance may miss a worker that is still at work.
//! - A task that stops hands the claims it leaves behind back to `input/`
//!   ([`Claims::release`]): its worker may stay alive without running this
//!   source again (its task moved to another worker), and nobody takes over
//!   the claims of a live worker.
//! - The tasks of one worker share its claim directory: an in-process hold
//!   keeps two of them from working on the same name at once.
//!
//! The directory's name starts with a dot: sftp-gateway neither announces a
//! file renamed there nor lists it in `WatchFiles`, and the source's scan of
//! `input/` skips it as it skips every hidden name.

use std::{
    collections::{BTreeSet, HashSet},
    sync::{LazyLock, Mutex, PoisonError},
};

use etl_sftp::{SftpClient, SftpError};

/// The claim directories' parent, inside the input directory.
pub(crate) const CLAIMS_DIR: &str = ".claims";
/// How long a worker must have been missing from the live set before its
/// claims are taken over (on top of the group's session timeout, which
/// Kafka waits before it drops a silent worker).
pub(crate) const TAKEOVER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Names (`scope` + claim path) a task of this process is working on.
static HELD: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

fn held() -> std::sync::MutexGuard<'static, HashSet<String>> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A name one task of this worker is working on; released when dropped
/// (also when the task's job panics or is aborted).
#[derive(Debug)]
pub(crate) struct Hold(String);

impl Drop for Hold {
    fn drop(&mut self) {
        held().remove(&self.0);
    }
}

/// How a claim ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The file is in our claim directory now.
    Won,
    /// The source is gone: another worker claimed it (or finished it) first.
    Lost,
    /// Our claim directory holds a file of that name already (an earlier
    /// version, still to be retried): that one goes first, this one waits.
    Busy,
}

/// What the claim directories hold for this worker.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Survey {
    /// Files in our own claim directory: ours to (re)process.
    pub(crate) own: Vec<String>,
    /// `(worker, file)`: files claimed by workers that are not live.
    pub(crate) orphans: Vec<(String, String)>,
}

/// One worker's claims in one input directory.
#[derive(Clone, Debug)]
pub(crate) struct Claims {
    /// `<input>/.claims`
    root: String,
    /// This worker's directory name under `root`.
    worker: String,
    /// `<input>/.claims/<worker>`
    dir: String,
    /// The SFTP server and user, so holds of two servers never meet.
    scope: String,
}

/// A worker id as a directory name: one path segment, never hidden.
fn dir_name(worker: &str) -> String {
    etl_core::naming::path_segment(worker)
}

/// A worker run's stable part: its id without the suffix new at every start
/// (`w1a2b3c4d-0f1e2d` → `w1a2b3c4d`); an id without a suffix is all stable.
fn stable_part(run: &str) -> &str {
    run.rsplit_once('-').map_or(run, |(stable, _)| stable)
}

impl Claims {
    /// The claims of `worker` in `input` on the server `scope` names (its
    /// address and user).
    pub(crate) fn new(input: &str, worker: &str, scope: &str) -> Self {
        let root = format!("{input}/{CLAIMS_DIR}");
        let worker = dir_name(worker);
        Self {
            dir: format!("{root}/{worker}"),
            root,
            worker,
            scope: scope.to_string(),
        }
    }

    /// `<input>/.claims/<worker>`, created when the source connects.
    pub(crate) fn dir(&self) -> &str {
        &self.dir
    }

    /// Where our claim of `name` lives.
    pub(crate) fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    /// Holds `name` for one task of this worker; None while another one has it.
    pub(crate) fn hold(&self, name: &str) -> Option<Hold> {
        let key = format!("{}\0{}", self.scope, self.path(name));
        // The lock is released before a Hold exists: dropping one takes it.
        let free = held().insert(key.clone());
        free.then(|| Hold(key))
    }

    /// Claims `input/name` for this worker.
    pub(crate) async fn claim(
        &self,
        sftp: &SftpClient,
        input: &str,
        name: &str,
    ) -> Result<Claim, SftpError> {
        self.rename_in(sftp, &format!("{input}/{name}"), name).await
    }

    /// Takes `name` over from the claim directory of `dead`, a worker that is
    /// not live (the caller checked).
    pub(crate) async fn take_over(
        &self,
        sftp: &SftpClient,
        dead: &str,
        name: &str,
    ) -> Result<Claim, SftpError> {
        let from = format!("{}/{}/{name}", self.root, dir_name(dead));
        let won = self.rename_in(sftp, &from, name).await?;
        if won == Claim::Won {
            tracing::info!(
                file = name,
                dead_worker = dead,
                "took over a dead worker's claim"
            );
        }
        Ok(won)
    }

    /// Renames `from` to our claim of `name`.
    async fn rename_in(
        &self,
        sftp: &SftpClient,
        from: &str,
        name: &str,
    ) -> Result<Claim, SftpError> {
        let to = self.path(name);
        // A rename onto an existing name replaces it (or, on OpenSSH, makes
        // the client remove it and retry): never onto a claim we still have.
        // Only this worker writes here, and the hold keeps its tasks apart.
        if sftp.exists(&to).await? {
            return Ok(Claim::Busy);
        }
        match sftp.rename(from, &to).await {
            Ok(()) => Ok(Claim::Won),
            Err(e) if e.is_not_found() => {
                // The source is gone (lost the race), or our claim directory is
                // (removed by hand): recreate it and try once more.
                if !sftp.exists(from).await? {
                    return Ok(Claim::Lost);
                }
                sftp.mkdir_all(&self.dir).await?;
                match sftp.rename(from, &to).await {
                    Ok(()) => Ok(Claim::Won),
                    Err(e) if e.is_not_found() => Ok(Claim::Lost),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Hands the files left in our claim directory back to `input`, so any
    /// worker's task takes them (when this task stops). Files a sibling task
    /// of this worker is working on stay, and so does a file whose name was
    /// uploaded to `input` again meanwhile (it is resumed by this worker's
    /// next task, or taken over once this worker is gone). Returns how many
    /// went back.
    pub(crate) async fn release(
        &self,
        sftp: &SftpClient,
        input: &str,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<usize, SftpError> {
        let files = match sftp.list(&self.dir).await {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut released = 0;
        for f in files.iter().filter(|f| !f.is_dir && wanted(&f.name)) {
            let Some(_hold) = self.hold(&f.name) else {
                continue;
            };
            let back = format!("{input}/{}", f.name);
            if sftp.exists(&back).await? {
                continue;
            }
            match sftp.rename(&self.path(&f.name), &back).await {
                Ok(()) => released += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }

    /// Lists the claim directories: our own files, and the files of workers
    /// not in `live` (none when `live` is empty: no view of the group yet, or
    /// a broker that does not list a group's members, as tansu), and always
    /// those of an earlier run of this same worker (the same stable id before
    /// the run's suffix: one data directory has one process, so an earlier run
    /// is dead). The caller applies [`TAKEOVER_GRACE`].
    pub(crate) async fn survey(
        &self,
        sftp: &SftpClient,
        live: &BTreeSet<String>,
    ) -> Result<Survey, SftpError> {
        let dirs = match sftp.list(&self.root).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(Survey::default()),
            Err(e) => return Err(e),
        };
        let live: HashSet<String> = live.iter().map(|w| dir_name(w)).collect();
        let mut survey = Survey::default();
        for d in dirs.into_iter().filter(|d| d.is_dir) {
            let ours = d.name == self.worker;
            let earlier_run = !ours && stable_part(&d.name) == stable_part(&self.worker);
            if !ours && !earlier_run && (live.is_empty() || live.contains(&d.name)) {
                continue;
            }
            let files = match sftp.list(&format!("{}/{}", self.root, d.name)).await {
                Ok(f) => f,
                // Removed meanwhile.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            for f in files.into_iter().filter(|f| !f.is_dir) {
                if ours {
                    survey.own.push(f.name);
                } else {
                    survey.orphans.push((d.name.clone(), f.name));
                }
            }
        }
        Ok(survey)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use etl_service::Shutdown;
    use etl_sftp::{SftpAuth, SftpClient, SftpConfig};

    use super::*;

    /// sftp-gateway in-process on port 0, with its data directory.
    pub(crate) struct Gateway {
        pub(crate) running: sftp_gateway::Running,
        pub(crate) root: std::path::PathBuf,
        shutdown: Shutdown,
        _dir: tempfile::TempDir,
    }

    impl Drop for Gateway {
        fn drop(&mut self) {
            self.shutdown.trigger();
        }
    }

    impl Gateway {
        pub(crate) async fn start() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let shutdown = Shutdown::new();
            let running = sftp_gateway::start(
                sftp_gateway::Config::ephemeral(dir.path().join("data")),
                shutdown.clone(),
            )
            .await
            .expect("gateway starts");
            Self {
                running,
                root: dir.path().join("data").join("etl"),
                shutdown,
                _dir: dir,
            }
        }

        pub(crate) fn config(&self) -> SftpConfig {
            SftpConfig {
                host: "127.0.0.1".into(),
                port: self.running.sftp_addr.port(),
                user: "etl".into(),
                auth: SftpAuth::Password("etl".into()),
            }
        }

        pub(crate) async fn client(&self) -> SftpClient {
            SftpClient::connect(&self.config())
                .await
                .expect("SFTP connects")
        }
    }

    fn live(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// Two workers (two SFTP sessions) claim the same files at the same time:
    /// each file is won by exactly one and ends in that one's directory.
    async fn race(a: SftpClient, b: SftpClient, input: &str, files: usize) {
        a.mkdir_all(input).await.expect("input");
        for i in 0..files {
            a.write(&format!("{input}/f{i}.csv"), b"h\n1\n")
                .await
                .expect("upload");
        }
        let (wa, wb) = (Claims::new(input, "wa", "s"), Claims::new(input, "wb", "s"));
        for (c, w) in [(&a, &wa), (&b, &wb)] {
            c.mkdir_all(w.dir()).await.expect("claim dir");
        }
        let claims = |client: SftpClient, claims: Claims| async move {
            let mut outcomes = Vec::new();
            for i in 0..files {
                let name = format!("f{i}.csv");
                outcomes.push(claims.claim(&client, input, &name).await.expect("claim"));
            }
            outcomes
        };
        let (ra, rb) = tokio::join!(claims(a.clone(), wa.clone()), claims(b, wb.clone()));
        for i in 0..files {
            let name = format!("f{i}.csv");
            let won: Vec<&str> = [(ra[i], "wa"), (rb[i], "wb")]
                .iter()
                .filter(|(o, _)| *o == Claim::Won)
                .map(|(_, w)| *w)
                .collect();
            assert_eq!(
                won.len(),
                1,
                "{name}: won by {won:?} ({:?}, {:?})",
                ra[i],
                rb[i]
            );
            let lost = [ra[i], rb[i]].iter().filter(|o| **o == Claim::Lost).count();
            assert_eq!(lost, 1, "{name}: the other finds it gone");
            let winner = if won[0] == "wa" { &wa } else { &wb };
            let loser = if won[0] == "wa" { &wb } else { &wa };
            assert!(a.exists(&winner.path(&name)).await.expect("stat"));
            assert!(
                !a.exists(&loser.path(&name)).await.expect("stat"),
                "{name}: no spare link left in the loser's directory"
            );
            assert!(!a.exists(&format!("{input}/{name}")).await.expect("stat"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_claimers_race_and_exactly_one_wins_on_the_gateway() {
        let gw = Gateway::start().await;
        race(gw.client().await, gw.client().await, "input", 40).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_workers_claims_are_taken_over_once_and_never_while_it_lives() {
        let gw = Gateway::start().await;
        let (a, b, c) = (gw.client().await, gw.client().await, gw.client().await);
        a.mkdir_all("input").await.expect("input");
        let dead = Claims::new("input", "wdead", "s");
        let (wb, wc) = (
            Claims::new("input", "wb", "s"),
            Claims::new("input", "wc", "s"),
        );
        for (client, w) in [(&a, &dead), (&b, &wb), (&c, &wc)] {
            client.mkdir_all(w.dir()).await.expect("claim dir");
        }
        for i in 0..20 {
            let name = format!("d{i}.csv");
            a.write(&format!("input/{name}"), b"h\n1\n")
                .await
                .expect("upload");
            assert_eq!(
                dead.claim(&a, "input", &name).await.expect("claim"),
                Claim::Won
            );
        }
        // While the owner is live, or without a view of the group, nobody takes over.
        for view in [live(&["wdead", "wb", "wc"]), live(&[])] {
            let survey = wb.survey(&b, &view).await.expect("survey");
            assert_eq!(survey, Survey::default(), "{view:?}");
        }
        let own = dead
            .survey(&a, &live(&["wdead", "wb"]))
            .await
            .expect("survey");
        assert_eq!(own.own.len(), 20, "the owner sees its own claims");
        assert!(own.orphans.is_empty());

        // The owner died: both survivors see its files and race for them.
        let view = live(&["wb", "wc"]);
        let sb = wb.survey(&b, &view).await.expect("survey");
        let sc = wc.survey(&c, &view).await.expect("survey");
        assert_eq!(sb.orphans.len(), 20, "{sb:?}");
        assert_eq!(sb.orphans, sc.orphans);
        assert!(sb.orphans.iter().all(|(w, _)| w == "wdead"));
        let take = |client: SftpClient, me: Claims, orphans: Vec<(String, String)>| async move {
            let mut won = Vec::new();
            for (w, f) in orphans {
                if me.take_over(&client, &w, &f).await.expect("take over") == Claim::Won {
                    won.push(f);
                }
            }
            won
        };
        let (won_b, won_c) = tokio::join!(
            take(b.clone(), wb.clone(), sb.orphans.clone()),
            take(c.clone(), wc.clone(), sc.orphans.clone())
        );
        assert_eq!(won_b.len() + won_c.len(), 20, "b {won_b:?}, c {won_c:?}");
        assert!(won_b.iter().all(|f| !won_c.contains(f)), "taken over twice");
        // Each survivor now finds them as its own; the dead directory is empty.
        let sb = wb.survey(&b, &view).await.expect("survey");
        assert_eq!(sb.own.len(), won_b.len());
        assert!(sb.orphans.is_empty(), "{sb:?}");
        assert!(a.list(dead.dir()).await.expect("list").is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_keeps_the_files_trace_and_is_not_announced() {
        use etl_proto::v1::{
            AnnounceUploadRequest, TraceContext, WatchFilesRequest,
            sftp_gateway_client::SftpGatewayClient,
        };
        let gw = Gateway::start().await;
        let sftp = gw.client().await;
        let mut api = SftpGatewayClient::connect(format!("http://{}", gw.running.grpc_addr))
            .await
            .expect("gRPC connects");
        let mut events = api
            .watch_files(WatchFilesRequest {
                user: "etl".into(),
                directory: "input".into(),
                include_existing: false,
            })
            .await
            .expect("watch")
            .into_inner();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        api.announce_upload(AnnounceUploadRequest {
            user: "etl".into(),
            path: "input/t.csv".into(),
            trace: Some(TraceContext {
                traceparent: tp.into(),
                tracestate: String::new(),
            }),
        })
        .await
        .expect("announce");
        sftp.write_atomic("input", "t.csv", b"h\n1\n")
            .await
            .expect("upload");
        let uploaded = tokio::time::timeout(std::time::Duration::from_secs(10), events.message())
            .await
            .expect("the upload is announced")
            .expect("stream")
            .expect("event");
        assert_eq!(uploaded.path, "input/t.csv");
        let stored = sftp
            .traceparent("input/t.csv")
            .await
            .expect("trace context")
            .expect("stored with the file");
        assert_eq!(
            stored.split('-').nth(1),
            tp.split('-').nth(1),
            "the upload joins the announced trace"
        );

        let me = Claims::new("input", "wa", "s");
        sftp.mkdir_all(me.dir()).await.expect("claim dir");
        assert_eq!(
            me.claim(&sftp, "input", "t.csv").await.expect("claim"),
            Claim::Won
        );
        assert_eq!(
            sftp.traceparent(&me.path("t.csv"))
                .await
                .expect("trace context"),
            Some(stored.clone()),
            "the claimed file keeps its trace context"
        );
        let other = Claims::new("input", "wb", "s");
        sftp.mkdir_all(other.dir()).await.expect("claim dir");
        assert_eq!(
            other
                .take_over(&sftp, "wa", "t.csv")
                .await
                .expect("take over"),
            Claim::Won
        );
        assert_eq!(
            sftp.traceparent(&other.path("t.csv"))
                .await
                .expect("trace context"),
            Some(stored),
            "and keeps it when taken over"
        );
        // Neither rename into .claims/ was announced as an upload.
        let quiet =
            tokio::time::timeout(std::time::Duration::from_millis(500), events.message()).await;
        assert!(quiet.is_err(), "unexpected event: {quiet:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_waits_for_an_earlier_claim_of_the_same_name() {
        let gw = Gateway::start().await;
        let sftp = gw.client().await;
        let me = Claims::new("input", "wa", "s");
        sftp.mkdir_all(me.dir()).await.expect("claim dir");
        sftp.write("input/x.csv", b"v1").await.expect("upload");
        assert_eq!(
            me.claim(&sftp, "input", "x.csv").await.expect("claim"),
            Claim::Won
        );
        sftp.write("input/x.csv", b"v2").await.expect("upload");
        assert_eq!(
            me.claim(&sftp, "input", "x.csv").await.expect("claim"),
            Claim::Busy
        );
        assert_eq!(sftp.read(&me.path("x.csv")).await.expect("read"), b"v1");
        assert_eq!(sftp.read("input/x.csv").await.expect("read"), b"v2");
        // A claim directory removed by hand is made again.
        sftp.remove(&me.path("x.csv")).await.expect("remove");
        std::fs::remove_dir(gw.root.join("input/.claims/wa")).expect("rmdir");
        assert_eq!(
            me.claim(&sftp, "input", "x.csv").await.expect("claim"),
            Claim::Won
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopping_task_hands_its_claims_back() {
        let gw = Gateway::start().await;
        let sftp = gw.client().await;
        let me = Claims::new("input", "wa", "s");
        sftp.mkdir_all(me.dir()).await.expect("claim dir");
        for name in ["left.csv", "busy.csv", "again.csv", ".hidden.csv.part"] {
            sftp.write(&me.path(name), b"h\n1\n").await.expect("write");
        }
        sftp.write("input/again.csv", b"new").await.expect("upload");
        let sibling = me.hold("busy.csv").expect("free");
        let wanted = |n: &str| !n.starts_with('.');
        assert_eq!(
            me.release(&sftp, "input", wanted).await.expect("release"),
            1
        );
        assert!(sftp.exists("input/left.csv").await.expect("stat"));
        assert!(
            sftp.exists(&me.path("busy.csv")).await.expect("stat"),
            "a sibling has it"
        );
        assert_eq!(
            sftp.read(&me.path("again.csv")).await.expect("read"),
            b"h\n1\n"
        );
        assert_eq!(sftp.read("input/again.csv").await.expect("read"), b"new");
        assert!(
            sftp.exists(&me.path(".hidden.csv.part"))
                .await
                .expect("stat")
        );
        drop(sibling);
        assert_eq!(
            me.release(&sftp, "input", wanted).await.expect("release"),
            1
        );
        assert!(sftp.exists("input/busy.csv").await.expect("stat"));
    }

    #[test]
    fn holds_keep_tasks_of_one_worker_apart() {
        let a = Claims::new("input", "w1", "127.0.0.1:22 etl");
        let b = Claims::new("input", "w1", "127.0.0.1:22 etl");
        let first = a.hold("h.csv").expect("free");
        assert!(b.hold("h.csv").is_none(), "held by a sibling task");
        assert!(b.hold("other.csv").is_some());
        assert!(
            Claims::new("input", "w1", "other-server")
                .hold("h.csv")
                .is_some(),
            "another server's file of that name"
        );
        drop(first);
        assert!(b.hold("h.csv").is_some(), "released on drop");
    }

    /// A restarted worker is a new run of the same worker: it takes its
    /// earlier run's claims over even where the broker lists no group members
    /// (tansu), and another worker's claims stay where they are then.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_worker_takes_its_earlier_runs_claims_over() {
        let gw = Gateway::start().await;
        let client = gw.client().await;
        client.mkdir_all("input").await.expect("input");
        let earlier = Claims::new("input", "w1a2b3c4d-00aa11", "s");
        let other = Claims::new("input", "w99999999-00bb22", "s");
        let now = Claims::new("input", "w1a2b3c4d-00cc33", "s");
        for (w, name) in [(&earlier, "e.csv"), (&other, "o.csv")] {
            client.mkdir_all(w.dir()).await.expect("claim dir");
            client
                .write(&format!("input/{name}"), b"h\n1\n")
                .await
                .expect("upload");
            assert_eq!(
                w.claim(&client, "input", name).await.expect("claim"),
                Claim::Won
            );
        }
        client.mkdir_all(now.dir()).await.expect("claim dir");
        let survey = now.survey(&client, &live(&[])).await.expect("survey");
        assert_eq!(
            survey.orphans,
            vec![("w1a2b3c4d-00aa11".to_string(), "e.csv".to_string())]
        );
        assert!(survey.own.is_empty());
        assert_eq!(stable_part("w1a2b3c4d-00aa11"), "w1a2b3c4d");
        assert_eq!(stable_part("wb"), "wb");
    }

    #[test]
    fn worker_ids_become_one_visible_path_segment() {
        assert_eq!(dir_name("w1a2b3c4d"), "w1a2b3c4d");
        assert_eq!(dir_name("host:8083/x"), "host_8083_x");
        assert_eq!(dir_name(".hidden"), "_hidden");
        assert_eq!(dir_name(""), "_");
        assert_eq!(
            Claims::new("in/box", "w/1", "s").path("a.csv"),
            "in/box/.claims/w_1/a.csv"
        );
    }

    /// OpenSSH's sshd (`internal-sftp`, [`testkit::Sshd`]): the claim needs
    /// nothing of our gateway. Needs root and `/usr/sbin/sshd`.
    mod openssh {
        use etl_sftp::{SftpAuth, SftpClient, SftpConfig};
        use testkit::Sshd;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn two_claimers_race_and_exactly_one_wins_on_openssh() {
            let sshd = tokio::task::spawn_blocking(Sshd::start)
                .await
                .expect("sshd");
            let config = SftpConfig {
                host: "127.0.0.1".into(),
                port: sshd.port,
                user: sshd.user.clone(),
                auth: SftpAuth::KeyFile(sshd.key.clone()),
            };
            let connect = || async {
                match SftpClient::connect(&config).await {
                    Ok(c) => c,
                    Err(e) => panic!("connect to sshd: {e}\n{}", sshd.log()),
                }
            };
            super::race(connect().await, connect().await, "input", 40).await;
        }
    }
}
