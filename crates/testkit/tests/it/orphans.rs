//! A test binary killed with SIGKILL (a CI timeout) runs no destructor; its servers must
//! still go away. The parent test runs the helper below in a child copy of this binary,
//! kills it, and watches the servers disappear.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::TestResult;

const HELPER_ENV: &str = "TESTKIT_ORPHAN_HELPER";

#[test]
#[ignore = "run as a child process by `killed_test_binary_leaves_no_servers_behind`"]
fn orphan_helper() -> TestResult {
    if std::env::var_os(HELPER_ENV).is_none() {
        return Ok(());
    }
    let postgres = testkit::shared_postgres()?;
    let tansu = testkit::shared_tansu()?;
    println!(
        "READY {} {} {}",
        postgres.port(),
        tansu.port(),
        postgres.dir().display()
    );
    #[expect(
        clippy::disallowed_methods,
        reason = "a child process of the test that only waits to be killed"
    )]
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}

#[test]
fn killed_test_binary_leaves_no_servers_behind() -> TestResult {
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "orphans::orphan_helper",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("READY ").map(str::to_owned));
    child.kill()?;
    child.wait()?;
    let ready = ready.ok_or("the helper never reported its servers")?;
    let mut fields = ready.split(' ');
    let pg_port: u16 = fields.next().ok_or("no port")?.parse()?;
    let tansu_port: u16 = fields.next().ok_or("no port")?.parse()?;
    let pg_dir = PathBuf::from(fields.next().ok_or("no dir")?);

    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let pg_gone = TcpListener::bind((Ipv4Addr::LOCALHOST, pg_port)).is_ok();
        let tansu_gone = TcpListener::bind((Ipv4Addr::LOCALHOST, tansu_port)).is_ok();
        let dir_gone = !pg_dir.exists();
        if pg_gone && tansu_gone && dir_gone {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "after the kill: postgres port free {pg_gone}, tansu port free {tansu_gone}, \
                 {} removed {dir_gone}",
                pg_dir.display()
            )
            .into());
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "a child process of the test that only waits to be killed"
        )]
        std::thread::sleep(Duration::from_millis(100));
    }
}
