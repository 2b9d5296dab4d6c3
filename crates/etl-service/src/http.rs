//! One way to serve an HTTP API (connect-manager's REST): plain or TLS on the
//! caller's listener, the bearer token checked by the same layer as gRPC's,
//! stopping when the [`Shutdown`] trips.

use tokio::net::TcpListener;

use crate::{
    Shutdown,
    auth::{Reject, RequireBearer},
    security::ServerSecurity,
};

/// Serves `router` on `listener` until `shutdown` trips. With a token in
/// `security`, every path needs it (`reject` builds the refusal, in the API's
/// own error shape); with TLS, only TLS connections are served.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    security: &ServerSecurity,
    reject: Reject<axum::body::Body>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let router = router.layer(RequireBearer::new(security.token.clone(), &[], reject));
    let stop = async move { shutdown.wait().await };
    match &security.tls {
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        }
        Some(identity) => {
            let acceptor = identity
                .http_acceptor()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let listener = crate::tls::TlsListener::new(listener, acceptor)?;
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        }
    }
}
