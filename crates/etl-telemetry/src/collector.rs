//! An OTLP/gRPC trace collector with the Jaeger UI and query API, in-process
//! (crate `otlp-embedded`): traces can be inspected without Docker. `etlctl up`
//! serves it on 4317/16686; tracing tests use it as their receiver.

use std::net::SocketAddr;

use otlp_embedded::{Config, State, StateRef, TraceServiceImpl, TraceServiceServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

/// A running collector; it stops when the token given to [`start`] is cancelled.
pub struct Collector {
    pub otlp_addr: SocketAddr,
    pub ui_addr: SocketAddr,
    state: StateRef,
}

impl Collector {
    /// The Jaeger query JSON of a trace (`/api/traces/{id}` shape), if held.
    pub async fn trace_json(&self, trace_id_hex: &str) -> Option<serde_json::Value> {
        let id = decode_hex(trace_id_hex)?;
        let trace = self.state.write().await.get_by_id(&id)?;
        Some(trace.to_jaeger_batch())
    }

    /// The Jaeger query JSON of every complete trace held (every span's parent present).
    pub async fn complete_traces_json(&self) -> Vec<serde_json::Value> {
        let state = self.state.read().await;
        state
            .get_all_complete()
            .map(|t| t.to_jaeger_batch())
            .collect()
    }

    /// Number of traces held.
    pub async fn len(&self) -> usize {
        self.state.read().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Serves OTLP/gRPC on `otlp` and the Jaeger UI + `/api/…` on `ui` until `stop`.
pub fn start(
    otlp: TcpListener,
    ui: TcpListener,
    stop: CancellationToken,
) -> std::io::Result<Collector> {
    let otlp_addr = otlp.local_addr()?;
    let ui_addr = ui.local_addr()?;
    let state = State::new(Config {
        max_length: 10_000,
        max_memory_usage: 512 << 20,
    });
    let grpc_state = state.clone();
    let grpc_stop = stop.clone();
    tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(TraceServiceImpl::new(grpc_state))
                    .max_decoding_message_size(64 << 20),
            )
            .serve_with_incoming_shutdown(TcpListenerStream::new(otlp), grpc_stop.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "OTLP collector stopped");
        }
    });
    let app = otlp_embedded::ui_app(state.clone(), "/");
    tokio::spawn(async move {
        let result = axum::serve(ui, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "Jaeger UI stopped");
        }
    });
    tracing::info!(otlp = %otlp_addr, ui = %ui_addr, "trace collector listening");
    Ok(Collector {
        otlp_addr,
        ui_addr,
        state,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_decoding() {
        assert_eq!(super::decode_hex("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(super::decode_hex("0"), None);
        assert_eq!(super::decode_hex("zz"), None);
    }
}
