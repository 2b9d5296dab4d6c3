//! One way to run a gRPC server: reflection and `grpc.health.v1` always on, the
//! listener handed in by the caller (so tests bind port 0 and read the real port),
//! and the server stopping when the [`Shutdown`] trips.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::{Routes, RoutesBuilder};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, health_check_response, health_client::HealthClient},
    server::HealthReporter,
};

use crate::{Shutdown, client::ClientAuth, security::ServerSecurity};

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("TLS of the gRPC server: {0}")]
    Tls(String),
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("health check of {addr} failed: {reason}")]
    Probe { addr: String, reason: String },
}

/// Binds `addr` (port 0 allowed) and logs the address actually bound, which
/// is the one a test or supervisor must use.
pub async fn bind(what: &str, addr: &str) -> Result<TcpListener, GrpcError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| GrpcError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    if let Ok(local) = listener.local_addr() {
        tracing::info!(listener = what, addr = %local, "listening");
    }
    Ok(listener)
}

/// The health status of one service: SERVING only while its own dependencies answer.
/// Sets both the named service and the server-wide `""` entry that probes ask for.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
}

impl Health {
    pub async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status(self.service, status).await;
        self.reporter.set_service_status("", status).await;
    }
}

/// Routes holding reflection and health for `service` (its full proto name,
/// e.g. `etl.v1.Extractor`), initially NOT_SERVING. Add the service itself to
/// the returned builder.
pub async fn base_routes(service: &'static str) -> Result<(RoutesBuilder, Health), GrpcError> {
    let (reporter, health_server) = tonic_health::server::health_reporter();
    let health = Health { reporter, service };
    health.set(false).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(etl_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut routes = Routes::builder();
    routes.add_service(health_server).add_service(reflection);
    Ok((routes, health))
}

/// Serves `routes` on `listener` until `shutdown` trips; in-flight calls finish.
/// `security` decides whether calls need the token (health and reflection
/// never do) and whether the listener speaks TLS.
pub async fn serve_grpc(
    listener: TcpListener,
    routes: Routes,
    security: &ServerSecurity,
    shutdown: Shutdown,
) -> Result<(), GrpcError> {
    let mut server = tonic::transport::Server::builder();
    if let Some(identity) = &security.tls {
        server = server
            .tls_config(identity.tonic())
            .map_err(|e| GrpcError::Tls(e.to_string()))?;
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, security = %security.describe(), "gRPC control plane");
    }
    server
        .layer(etl_telemetry::grpc::ServerTraceLayer)
        .layer(crate::auth::grpc_layer(security.token.clone()))
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            shutdown.wait().await
        })
        .await?;
    Ok(())
}

/// Asks the `grpc.health.v1` service at `addr` (`host:port`, `http://host:port`
/// or `https://host:port`, trusting `ETL_TLS_CA`) whether it is SERVING. Used
/// by `<binary> healthcheck`, by etlctl and by tests. Health needs no token.
pub async fn probe_health(addr: &str) -> Result<bool, GrpcError> {
    let auth = if crate::client::url(addr).starts_with("https://") {
        ClientAuth::from_env().map_err(|e| GrpcError::Probe {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
    } else {
        ClientAuth::none()
    };
    probe_health_with(addr, &auth).await
}

/// [`probe_health`] with the caller's CA (for `https://`).
pub async fn probe_health_with(addr: &str, auth: &ClientAuth) -> Result<bool, GrpcError> {
    let err = |reason: String| GrpcError::Probe {
        addr: addr.to_string(),
        reason,
    };
    let channel = auth
        .endpoint(addr)
        .map_err(|e| err(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| err(e.to_string()))?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| err(e.message().to_string()))?;
    Ok(resp.into_inner().status() == health_check_response::ServingStatus::Serving)
}

/// Formats a bound address as a client URL.
pub fn http_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// Serves `routes` until `shutdown` trips, reporting NOT_SERVING the moment it
/// does (probes stop routing work here while in-flight calls finish). A server
/// failure trips `shutdown`, so the rest of the service stops with it.
pub async fn serve_until_shutdown(
    listener: TcpListener,
    routes: Routes,
    health: Health,
    security: ServerSecurity,
    shutdown: Shutdown,
) -> Result<(), GrpcError> {
    let serve = serve_grpc(listener, routes, &security, shutdown.clone());
    let not_serving = async {
        shutdown.wait().await;
        health.set(false).await;
        std::future::pending::<()>().await;
    };
    let result = tokio::select! {
        r = serve => r,
        _ = not_serving => Ok(()),
    };
    if result.is_err() {
        shutdown.trigger();
    }
    result
}

/// The `healthcheck` subcommand every binary has: exit 0 only when the gRPC
/// health at `addr` is SERVING, so container images need no probe tool.
pub async fn healthcheck_command(addr: &str) -> std::process::ExitCode {
    match probe_health(addr).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("{addr}: NOT_SERVING");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
