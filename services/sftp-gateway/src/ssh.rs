//! The SSH side: accept connections, log users in (password or public key),
//! and hand an `sftp` subsystem channel to an [`SftpHandler`] bound to that
//! user's tree. Nothing else is offered: shell, exec and forwarding requests
//! are refused.
//!
//! On shutdown the listener closes at once; each connection is disconnected
//! as soon as it has no file open for writing (bounded by [`DRAIN_TIMEOUT`]),
//! so uploads in flight finish and none is cut in the middle of a write.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use etl_service::Shutdown;
use russh::{
    Channel, ChannelId, Disconnect, MethodKind, MethodSet,
    keys::PrivateKey,
    server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey},
};
use tokio::{net::TcpListener, task::JoinSet};

use crate::{
    notify::Notifier,
    sftp::{SftpHandler, Uploads},
    tree::UserTree,
    users::Users,
};

/// Longest wait for in-flight uploads once shutdown is requested.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) users: Users,
    pub(crate) trees: HashMap<String, Arc<UserTree>>,
    pub(crate) notifier: Notifier,
    pub(crate) shutdown: Shutdown,
}

/// russh server settings: our host key, password and public-key logins.
pub(crate) fn server_config(host_key: PrivateKey) -> russh::server::Config {
    russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-file-etl-sftp-gateway_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods: MethodSet::from(&[MethodKind::PublicKey, MethodKind::Password][..]),
        keys: vec![host_key],
        // A failed login costs the client a second (against guessing); the
        // "none" probe every OpenSSH client starts with costs nothing.
        auth_rejection_time: Duration::from_secs(1),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // Idle sessions (a connector between polls) may stay; dead peers are
        // found by keepalives instead of an inactivity timer.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// Accepts connections until `shutdown`, then drains them.
pub(crate) async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut sessions = JoinSet::new();
    let mut result = Ok(());
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    sessions.spawn(run_connection(stream, peer, config.clone(), shared.clone(), shutdown.clone()));
                }
                // Out of file descriptors and the like: pause rather than spin.
                Err(e) if is_transient(&e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    if !shutdown.sleep(Duration::from_millis(100)).await {
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    if !sessions.is_empty() {
        tracing::info!(
            connections = sessions.len(),
            "SFTP listener closed; letting uploads in flight finish"
        );
    }
    while sessions.join_next().await.is_some() {}
    tracing::info!("SFTP server stopped");
    result
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    !matches!(e.kind(), K::InvalidInput | K::Unsupported)
}

async fn run_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    let uploads = Uploads::new();
    let handler = SshHandler {
        shared,
        peer,
        user: None,
        channels: HashMap::new(),
        uploads: uploads.clone(),
    };
    let session = match russh::server::run_stream(config, stream, handler).await {
        Ok(session) => session,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "SSH handshake failed");
            return;
        }
    };
    let handle = session.handle();
    tokio::pin!(session);
    tokio::select! {
        result = &mut session => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "SSH connection ended with an error");
            }
        }
        _ = shutdown.wait() => {
            if tokio::time::timeout(DRAIN_TIMEOUT, uploads.idle()).await.is_err() {
                tracing::warn!(%peer, "upload still open after {} s; disconnecting", DRAIN_TIMEOUT.as_secs());
            }
            let _ = handle
                .disconnect(Disconnect::ByApplication, "server shutting down".into(), "en".into())
                .await;
            let _ = tokio::time::timeout(Duration::from_secs(2), session).await;
        }
    }
}

/// One connection's SSH state.
struct SshHandler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Set once a login succeeded.
    user: Option<String>,
    /// Session channels opened but not yet given a subsystem.
    channels: HashMap<ChannelId, Channel<Msg>>,
    uploads: Uploads,
}

impl SshHandler {
    fn accept(&mut self, user: &str, method: &'static str) -> Auth {
        tracing::info!(user, method, peer = %self.peer, "login accepted");
        self.user = Some(user.to_string());
        Auth::Accept
    }

    fn refuse(&self, user: &str, method: &'static str) -> Auth {
        tracing::warn!(user, method, peer = %self.peer, "login refused");
        Auth::reject()
    }
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if self.shared.users.check_password(user, password) {
            Ok(self.accept(user, "password"))
        } else {
            Ok(self.refuse(user, "password"))
        }
    }

    /// Saying no to keys the user does not have lets a client with several
    /// keys (OpenSSH's agent) move on to the next without signing.
    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.users.has_key(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            Ok(Auth::reject())
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.shared.users.has_key(user, key.public_key) {
            Ok(self.accept(user, "publickey"))
        } else {
            Ok(self.refuse(user, "publickey"))
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel_id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let tree = self
            .user
            .as_ref()
            .and_then(|u| self.shared.trees.get(u))
            .cloned();
        let channel = self.channels.remove(&channel_id);
        match (name, tree, channel) {
            ("sftp", Some(tree), Some(channel)) => {
                session.channel_success(channel_id)?;
                let handler = SftpHandler::new(
                    tree,
                    self.shared.notifier.clone(),
                    self.shared.shutdown.clone(),
                    self.uploads.clone(),
                );
                // Spawns the session's request loop and returns.
                russh_sftp::server::run(channel.into_stream(), handler).await;
            }
            _ => {
                tracing::debug!(subsystem = name, peer = %self.peer, "subsystem refused");
                session.channel_failure(channel_id)?;
            }
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The client will send nothing more on this channel: close our side too.
        session.close(channel)?;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&channel);
        Ok(())
    }
}
