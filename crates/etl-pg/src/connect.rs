//! Opening a connection, and naming a server in logs and errors.
//!
//! Connections are plain TCP (or a Unix socket): the stack's Postgres is on the
//! same host or the compose network, the sink refuses `sslmode` values that
//! promise TLS, and a `sslmode=require` given to the verifier fails at connect
//! rather than silently going without. TLS, when it comes, is added here once
//! for both services.

use etl_core::net::HostPort;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Connection, NoTls, Socket, config::Host, tls::NoTlsStream};

/// The connection itself, for whoever must poll it ([`crate::notify::listen`]).
pub(crate) async fn open(
    config: &tokio_postgres::Config,
) -> Result<(Client, Connection<Socket, NoTlsStream>), tokio_postgres::Error> {
    config.connect(NoTls).await
}

/// Connects and drives the connection on its own task. The task ends when the
/// connection does; await (or select on) its handle to notice, or drop it.
/// `role` names the connection in the log line written when it ends ("sink",
/// "checks", …).
pub async fn connect(
    config: &tokio_postgres::Config,
    role: &'static str,
) -> Result<(Client, JoinHandle<()>), tokio_postgres::Error> {
    let (client, connection) = open(config).await?;
    let driver = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, connection = role, "Postgres connection ended");
        }
    });
    Ok((client, driver))
}

/// `postgres://user@host:port/db` for logs and errors: user, every host with
/// its port (IPv6 in brackets) and database, never the password.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, &port)| match h {
            Host::Tcp(host) => HostPort {
                host: host.clone(),
                port,
            }
            .to_string(),
            Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_hides_the_password() {
        let cfg: tokio_postgres::Config = "postgres://etl:s3cret@db.example:5433/nlp_db"
            .parse()
            .expect("valid url");
        let d = describe(&cfg);
        assert_eq!(d, "postgres://etl@db.example:5433/nlp_db");
        assert!(!d.contains("s3cret"));
        let cfg: tokio_postgres::Config = "host=localhost user=postgres password=pw dbname=x"
            .parse()
            .expect("valid key-value");
        assert_eq!(describe(&cfg), "postgres://postgres@localhost:5432/x");
        let cfg: tokio_postgres::Config = "postgres://u:pw@[::1]:6000,h2/d".parse().expect("v6");
        assert_eq!(describe(&cfg), "postgres://u@[::1]:6000,h2:5432/d");
    }
}
