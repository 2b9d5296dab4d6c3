//! The SSH side: accept connections, log users in (password or public key),
//! and hand an `sftp` subsystem channel to an [`SftpHandler`] bound to that
//! user's tree. Nothing else is offered: shell, exec and forwarding requests
//! are refused.
//!
//! Defences, in the order a connection meets them (OpenSSH's names in
//! brackets): at `accept`, the connection caps and the failed-login
//! penalties of its address (`MaxStartups`, `PerSourcePenalties`; see
//! `limits`); then the login grace time (`LoginGraceTime`) and a cap on
//! failed attempts per connection (`MaxAuthTries`), each failure logged with
//! the address; once logged in, the idle timeout: a connection that sends no
//! SFTP request for that long, with no upload open, is closed.
//!
//! On shutdown the listener closes at once; each connection is disconnected
//! as soon as it has no file open for writing (bounded by [`DRAIN_TIMEOUT`]),
//! so uploads in flight finish and none is cut in the middle of a write.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use etl_service::Shutdown;
use russh::{
    Channel, ChannelId, Disconnect, MethodKind, MethodSet,
    keys::PrivateKey,
    server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    task::JoinSet,
};

use crate::{
    limits::{Gate, Refusal, Slot},
    notify::Notifier,
    sftp::{SessionContext, SftpHandler, Uploads},
    trace_store::TraceStore,
    tree::UserTree,
    users::Users,
};

/// Longest wait for in-flight uploads once shutdown is requested.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection shares.
pub(crate) struct Shared {
    pub(crate) users: Users,
    /// Each user's tree, by user name (users of one root share it).
    pub(crate) trees: Arc<HashMap<String, Arc<UserTree>>>,
    pub(crate) notifier: Notifier,
    pub(crate) store: Arc<TraceStore>,
    pub(crate) shutdown: Shutdown,
    pub(crate) gate: Arc<Gate>,
    pub(crate) login_grace_time: Duration,
    /// Zero: idle connections stay.
    pub(crate) idle_timeout: Duration,
    pub(crate) max_auth_attempts: usize,
}

/// russh server settings: our host key, password and public-key logins.
pub(crate) fn server_config(
    host_key: PrivateKey,
    max_auth_attempts: usize,
) -> russh::server::Config {
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
        // The handler counts failures itself (without the "none" probe, as
        // OpenSSH) and stops checking after the last allowed one; russh,
        // which counts the probe too, then closes the connection.
        max_auth_attempts: max_auth_attempts.saturating_add(1),
        // Idle connections are closed by our own timer, which counts SFTP
        // requests, not SSH keepalives; dead peers are found by keepalives.
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
    let mut refusals = RefusalLog::default();
    let mut result = Ok(());
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match shared.gate.admit(peer.ip()) {
                    Ok(slot) => {
                        sessions.spawn(run_connection(stream, peer, slot, config.clone(), shared.clone(), shutdown.clone()));
                    }
                    // Closed before any SSH work: a flood costs one close each.
                    Err(refusal) => {
                        drop(stream);
                        refusals.log(peer, &refusal);
                    }
                },
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

/// Logs refused connections, at most one line a second (a flood would
/// otherwise flood the log too), saying how many went unlogged.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn log(&mut self, peer: SocketAddr, refusal: &Refusal) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            self.unlogged += 1;
            return;
        }
        self.last = Some(Instant::now());
        let also = std::mem::take(&mut self.unlogged);
        tracing::warn!(%peer, reason = %refusal, refused_since_last_report = also, "connection refused");
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    !matches!(e.kind(), K::InvalidInput | K::Unsupported)
}

/// One connection's state as its timers see it.
struct Liveness {
    started: Instant,
    logged_in: AtomicBool,
    /// Last client activity (login, SFTP bytes), in ms after `started`.
    last_ms: AtomicU64,
}

impl Liveness {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            logged_in: AtomicBool::new(false),
            last_ms: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

async fn run_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) {
    // russh sets TCP_NODELAY (`Config::nodelay`) only on sockets it accepts itself;
    // without it every SFTP request/response pair can wait for a delayed ACK (40 ms).
    if config.nodelay
        && let Err(e) = stream.set_nodelay(true)
    {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let uploads = Uploads::new();
    let live = Liveness::new();
    let grace = shared.login_grace_time;
    let idle = shared.idle_timeout;
    let handler = SshHandler {
        shared,
        peer,
        user: None,
        channels: HashMap::new(),
        uploads: uploads.clone(),
        slot,
        live: live.clone(),
        failures: 0,
    };
    // The version exchange happens here; a peer that sends nothing must not
    // hold its slot beyond the grace time.
    let session = match tokio::time::timeout(
        grace,
        russh::server::run_stream(config, stream, handler),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "SSH handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, grace_s = grace.as_secs_f32(), "no SSH handshake within the login grace time; closing");
            return;
        }
    };
    let handle = session.handle();
    tokio::pin!(session);
    let far = Duration::from_secs(365 * 24 * 3600);
    let disconnect = |reason: &'static str| {
        let handle = handle.clone();
        async move {
            let _ = handle
                .disconnect(Disconnect::ByApplication, reason.into(), "en".into())
                .await;
        }
    };
    loop {
        let logged_in = live.logged_in.load(Ordering::Relaxed);
        let deadline = if !logged_in {
            live.started + grace
        } else if idle.is_zero() {
            Instant::now() + far
        } else {
            live.last() + idle
        };
        tokio::select! {
            result = &mut session => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "SSH connection ended with an error");
                }
                return;
            }
            _ = shutdown.wait() => {
                if tokio::time::timeout(DRAIN_TIMEOUT, uploads.idle()).await.is_err() {
                    tracing::warn!(%peer, "upload still open after {} s; disconnecting", DRAIN_TIMEOUT.as_secs());
                }
                disconnect("server shutting down").await;
                break;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                if !live.logged_in.load(Ordering::Relaxed) {
                    tracing::warn!(%peer, grace_s = grace.as_secs_f32(), "no login within the login grace time; disconnecting");
                    disconnect("login grace time exceeded").await;
                    break;
                }
                if live.last().elapsed() < idle {
                    continue;
                }
                if uploads.open() > 0 {
                    // A slow writer is not idle; look again later.
                    live.touch();
                    continue;
                }
                tracing::info!(%peer, idle_s = idle.as_secs(), "connection idle; disconnecting");
                disconnect("idle timeout").await;
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), session).await;
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
    /// This connection's place under the caps; freed when the handler goes.
    slot: Slot,
    live: Arc<Liveness>,
    /// Failed login attempts on this connection.
    failures: usize,
}

/// Tells the client that no method is left, so it stops trying.
fn no_more_methods() -> Auth {
    Auth::Reject {
        proceed_with_methods: Some(MethodSet::empty()),
        partial_success: false,
    }
}

impl SshHandler {
    fn accept(&mut self, user: &str, method: &'static str) -> Auth {
        let root = self.shared.trees.get(user).map(|t| t.name());
        tracing::info!(user, root, method, peer = %self.peer, "login accepted");
        self.user = Some(user.to_string());
        self.slot.logged_in();
        self.live.logged_in.store(true, Ordering::Relaxed);
        self.live.touch();
        Auth::Accept
    }

    /// A refusal without looking at the credentials: this connection used up
    /// its attempts, or its address is blocked after failed logins.
    fn refuse_early(&self, user: &str, method: &'static str) -> Option<Auth> {
        if self.failures >= self.shared.max_auth_attempts {
            return Some(no_more_methods());
        }
        let blocked = self.shared.gate.penalties().blocked(self.peer.ip())?;
        tracing::warn!(user, method, peer = %self.peer, blocked_s = blocked.as_secs(), "login refused: address blocked after failed logins");
        Some(no_more_methods())
    }

    fn fail(&mut self, user: &str, method: &'static str) -> Auth {
        self.failures += 1;
        tracing::warn!(user, method, peer = %self.peer, attempt = self.failures, "login refused");
        if let Some(blocked) = self.shared.gate.penalties().failed(self.peer.ip()) {
            tracing::warn!(peer = %self.peer, blocked_s = blocked.as_secs(), "too many failed logins from this address; blocking it");
        }
        if self.failures >= self.shared.max_auth_attempts {
            tracing::warn!(user, peer = %self.peer, attempts = self.failures, "too many failed logins on one connection; closing it");
            return no_more_methods();
        }
        Auth::reject()
    }
}

impl russh::server::Handler for SshHandler {
    type Error = russh::Error;

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        if let Some(refused) = self.refuse_early(user, "password") {
            return Ok(refused);
        }
        // An argon2 hash takes tens of milliseconds: off the async threads.
        let shared = self.shared.clone();
        let (name, secret) = (user.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || shared.users.check_password(&name, &secret))
            .await
            .unwrap_or(false);
        if ok {
            Ok(self.accept(user, "password"))
        } else {
            Ok(self.fail(user, "password"))
        }
    }

    /// Saying no to keys the user does not have lets a client with several
    /// keys (OpenSSH's agent) move on to the next without signing.
    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if let Some(refused) = self.refuse_early(user, "publickey") {
            return Ok(refused);
        }
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
        if let Some(refused) = self.refuse_early(user, "publickey") {
            return Ok(refused);
        }
        if self.shared.users.has_key(user, key.public_key) {
            Ok(self.accept(user, "publickey"))
        } else {
            Ok(self.fail(user, "publickey"))
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
        let login = self
            .user
            .as_ref()
            .and_then(|u| Some((u.clone(), self.shared.trees.get(u)?.clone())));
        let channel = self.channels.remove(&channel_id);
        match (name, login, channel) {
            ("sftp", Some((user, tree)), Some(channel)) => {
                session.channel_success(channel_id)?;
                let cx = SessionContext {
                    profile: self.shared.users.profile(&user),
                    user,
                    notifier: self.shared.notifier.clone(),
                    store: self.shared.store.clone(),
                    shutdown: self.shared.shutdown.clone(),
                    uploads: self.uploads.clone(),
                };
                let handler = SftpHandler::new(tree, cx);
                let stream = Active {
                    inner: channel.into_stream(),
                    live: self.live.clone(),
                };
                // Spawns the session's request loop and returns.
                russh_sftp::server::run(stream, handler).await;
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

/// An SFTP channel whose incoming bytes count as activity for the idle
/// timeout (SSH keepalives do not pass through here).
struct Active<S> {
    inner: S,
    live: Arc<Liveness>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Active<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.live.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Active<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
