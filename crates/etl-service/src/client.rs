//! The client side of the control plane, one way for every caller (the
//! extractor calling the verifier and the gateway, connect-manager's source and
//! the verifier watching the gateway, etlctl, tests): a [`ClientAuth`] turns a
//! URL into a channel that sends `authorization: Bearer <token>` on every call
//! when a token is configured, over TLS for `https://` URLs (trusting the CA
//! file given).

use std::time::Duration;

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    auth::{AUTHORIZATION, Token},
    tls::TlsCa,
};

/// A channel whose calls carry the token (when there is one).
pub type AuthChannel = InterceptedService<Channel, AddBearer>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "{url} is an https:// URL but no CA is configured to check its certificate: give --tls-ca (ETL_TLS_CA)"
    )]
    NeedsCa { url: String },
    #[error("{url} is unreachable: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// `http://host:port` for a bare `host:port`; URLs with a scheme unchanged.
pub fn url(addr: &str) -> String {
    let addr = addr.trim();
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// A further interceptor run after the header is added (e.g.
/// `etl_telemetry::grpc::inject`): tonic clients take one interceptor.
pub type Then = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// The interceptor that adds the `authorization` header (and runs [`Then`]).
#[derive(Clone, Debug, Default)]
pub struct AddBearer {
    header: Option<MetadataValue<Ascii>>,
    then: Option<Then>,
}

impl tonic::service::Interceptor for AddBearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.header {
            request.metadata_mut().insert(AUTHORIZATION, v.clone());
        }
        match self.then {
            Some(then) => then(request),
            None => Ok(request),
        }
    }
}

/// What a client needs to reach the control plane: the token (if any) and
/// the CA for `https://` URLs.
#[derive(Clone, Debug, Default)]
pub struct ClientAuth {
    token: Option<Token>,
    ca: Option<TlsCa>,
}

impl ClientAuth {
    /// No token, no CA: plain `http://` to servers that need no token.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn new(token: Option<Token>, ca: Option<TlsCa>) -> Self {
        Self { token, ca }
    }

    /// Only a token.
    pub fn token(token: Token) -> Self {
        Self {
            token: Some(token),
            ca: None,
        }
    }

    /// From `ETL_API_TOKEN` / `ETL_API_TOKEN_FILE` and `ETL_TLS_CA`, for
    /// callers without flags of their own.
    pub fn from_env() -> Result<Self, crate::security::SecurityError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        crate::security::ClientSecurity {
            api_token: var("ETL_API_TOKEN"),
            api_token_file: var("ETL_API_TOKEN_FILE").map(Into::into),
            tls_ca: var("ETL_TLS_CA").map(Into::into),
        }
        .auth()
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The same, with `token` instead.
    pub fn with_token(mut self, token: Option<Token>) -> Self {
        self.token = token;
        self
    }

    pub fn interceptor(&self) -> AddBearer {
        AddBearer {
            header: self.token.as_ref().map(|t| {
                // A token is visible ASCII (checked when made), so it always parses.
                t.header_value()
                    .parse()
                    .unwrap_or_else(|_| MetadataValue::from_static(""))
            }),
            then: None,
        }
    }

    /// The endpoint of `addr` (`host:port`, `http://…` or `https://…`), with
    /// TLS set up for `https://`. Tune it, then [`ClientAuth::wrap`] its channel.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, ClientError> {
        let url = url(addr);
        let bad = |reason: String| ClientError::Url {
            url: url.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| bad(e.to_string()))?;
        if !url.starts_with("https://") {
            return Ok(endpoint);
        }
        let ca = self
            .ca
            .as_ref()
            .ok_or_else(|| ClientError::NeedsCa { url: url.clone() })?;
        endpoint
            .tls_config(ca.tonic())
            .map_err(|e| bad(e.to_string()))
    }

    /// A channel's calls with the token.
    pub fn wrap(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self.interceptor())
    }

    /// A channel's calls with the token, then through `then` (e.g. the trace
    /// context's `etl_telemetry::grpc::inject`).
    pub fn wrap_with(&self, channel: Channel, then: Then) -> AuthChannel {
        let mut interceptor = self.interceptor();
        interceptor.then = Some(then);
        InterceptedService::new(channel, interceptor)
    }

    /// A channel that connects on first use (and again after failures).
    pub fn connect_lazy(&self, addr: &str) -> Result<AuthChannel, ClientError> {
        Ok(self.wrap(
            self.endpoint(addr)?
                .connect_timeout(Duration::from_secs(5))
                .connect_lazy(),
        ))
    }

    /// A channel, connected now (so an unreachable server is an error here).
    pub async fn connect(&self, addr: &str) -> Result<AuthChannel, ClientError> {
        let channel = self
            .endpoint(addr)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                url: url(addr),
                source,
            })?;
        Ok(self.wrap(channel))
    }

    /// Subscribes to sftp-gateway's `WatchFiles` at `addr`. The one way the
    /// connectors and the verifier follow the gateway; each keeps its own
    /// reconnect loop. The error is a message naming what failed.
    pub async fn watch_files(
        &self,
        addr: &str,
        request: etl_proto::v1::WatchFilesRequest,
    ) -> Result<tonic::Streaming<etl_proto::v1::FileReady>, String> {
        let channel = self.connect(addr).await.map_err(|e| e.to_string())?;
        etl_proto::v1::sftp_gateway_client::SftpGatewayClient::new(channel)
            .watch_files(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| s.message().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_become_http_urls() {
        assert_eq!(url("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(url(" https://h:2 "), "https://h:2");
    }

    #[test]
    fn https_needs_a_ca() {
        let err = ClientAuth::none()
            .endpoint("https://127.0.0.1:1")
            .expect_err("no CA");
        assert!(matches!(err, ClientError::NeedsCa { .. }), "{err}");
        assert!(ClientAuth::none().endpoint("127.0.0.1:1").is_ok());
    }

    #[test]
    fn the_interceptor_adds_the_header_only_with_a_token() {
        use tonic::service::Interceptor as _;
        let req = ClientAuth::none()
            .interceptor()
            .call(tonic::Request::new(()))
            .expect("passes");
        assert!(req.metadata().get(AUTHORIZATION).is_none());
        let token = Token::new("abc", "test").expect("valid");
        let req = ClientAuth::token(token)
            .interceptor()
            .call(tonic::Request::new(()))
            .expect("passes");
        assert_eq!(
            req.metadata()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer abc")
        );
    }
}
