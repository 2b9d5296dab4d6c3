//! `etlctl`: parses the command line, sets up logs, runs the command. Exit codes: 0
//! success; 1 error (or unhealthy, for `status`/`healthcheck`); 2 the demo's report
//! does not pass; 3 the demo timed out before the report was complete.

use std::process::ExitCode;

use etlctl::cli::{Cli, Command, ConnectorsCommand};
use etlctl::{connectors, demo, status, supervise, trace, up};

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = etlctl::cli::parse();
    let _telemetry = match etl_telemetry::init("etlctl") {
        Ok(guard) => Some(guard),
        Err(e) => {
            eprintln!("etlctl: logs unavailable: {e}");
            None
        }
    };
    match run(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("etlctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let ok = |healthy: bool| {
        if healthy {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match command {
        Command::Up(args) => {
            let plan = args.stack.plan()?;
            up::ensure_up(
                &plan,
                args.timeout(),
                args.allow_missing_services,
                args.stack.workers,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Down(args) => up::down(&args).await.map(|()| ExitCode::SUCCESS),
        Command::Status(args) => status::run(&args).await.map(ok),
        Command::Connectors(ConnectorsCommand::Apply(args)) => {
            connectors::apply(&args).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Connectors(ConnectorsCommand::List(target)) => {
            connectors::list(&target).await.map(|()| ExitCode::SUCCESS)
        }
        Command::Demo(args) => Ok(match demo::run(&args).await? {
            demo::Outcome::Finished { passed: true } => ExitCode::SUCCESS,
            demo::Outcome::Finished { passed: false } => ExitCode::from(2),
            demo::Outcome::TimedOut => ExitCode::from(3),
        }),
        Command::Trace(args) => trace::run(&args).await.map(|()| ExitCode::SUCCESS),
        Command::Report(args) => Ok(match demo::report(&args).await? {
            Some(true) => ExitCode::SUCCESS,
            Some(false) => ExitCode::from(2),
            None => ExitCode::from(3),
        }),
        Command::Healthcheck(args) => match etl_service::probe_health(&args.addr).await {
            Ok(true) => {
                println!("{}: SERVING", args.addr);
                Ok(ExitCode::SUCCESS)
            }
            Ok(false) => {
                println!("{}: NOT_SERVING", args.addr);
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
        Command::Supervise(args) => {
            let plan = args.plan()?;
            // Made before any service starts: each reads the token (ETL_API_TOKEN_FILE)
            // and is given its SFTP password.
            plan.dir.ensure_secrets().map_err(|e| {
                anyhow::anyhow!(
                    "cannot write the stack's secrets in {}: {e}",
                    plan.dir.root().display()
                )
            })?;
            supervise::run(plan).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
