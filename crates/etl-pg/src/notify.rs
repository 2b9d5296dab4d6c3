//! How the sink tells the verifier that a file's rows are in: `NOTIFY
//! etl_rows, '<file name>'`, sent inside the transaction that writes them.
//! Postgres delivers a notification when its transaction commits, so the rows
//! are visible by the time it arrives, and its arrival time is (within a
//! millisecond on one host) the commit time.

use std::future::poll_fn;

use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, GenericClient};

use crate::ident::quote_ident;

/// The channel; the payload is the bare file name (the rows' `_etl_file`).
pub const CHANNEL: &str = "etl_rows";

/// Sends `NOTIFY etl_rows, '<file>'` on `client`; inside a transaction it is
/// delivered at commit, and not at all on rollback.
pub async fn notify<C>(client: &C, file: &str) -> Result<(), tokio_postgres::Error>
where
    C: GenericClient + Sync,
{
    // pg_notify takes the payload as a parameter: no quoting of file names.
    client
        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &file])
        .await?;
    Ok(())
}

/// Why [`listen`] failed, and at which step.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("connecting (LISTEN)")]
    Connect(#[source] tokio_postgres::Error),
    #[error("LISTEN {CHANNEL}")]
    Listen(#[source] tokio_postgres::Error),
}

impl ListenError {
    /// The step that failed, for a message ("connecting (LISTEN)", "LISTEN etl_rows").
    pub fn step(&self) -> String {
        self.to_string()
    }

    /// The Postgres error behind it.
    pub fn into_source(self) -> tokio_postgres::Error {
        match self {
            ListenError::Connect(e) | ListenError::Listen(e) => e,
        }
    }
}

/// Opens a connection that does nothing but `LISTEN etl_rows`, and calls
/// `on_file` with each notification's file name as it arrives. The returned
/// client must be kept (dropping it closes the connection); the task ends when
/// the connection does, so a caller selects on its handle to notice a loss.
///
/// A dedicated connection, because notifications reach only whoever polls the
/// connection itself, and a connection busy with a long query would hold them
/// back (their arrival time is a latency measurement).
pub async fn listen(
    config: &tokio_postgres::Config,
    mut on_file: impl FnMut(&str) + Send + 'static,
) -> Result<(Client, JoinHandle<()>), ListenError> {
    let (client, mut connection) = crate::connect::open(config)
        .await
        .map_err(ListenError::Connect)?;
    let task = tokio::spawn(async move {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                    on_file(n.payload());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, connection = "LISTEN", "Postgres connection ended");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", quote_ident(CHANNEL)))
        .await
        .map_err(ListenError::Listen)?;
    Ok((client, task))
}
