//! The control-plane token: one shared secret that, when configured, every gRPC
//! call and every REST call must carry as `authorization: Bearer <token>`.
//!
//! The server side is one tower layer, [`RequireBearer`], used by every gRPC
//! server (through [`crate::grpc::serve_grpc`]) and by connect-manager's REST
//! API; only the answer to a refused call differs (gRPC UNAUTHENTICATED, or
//! the REST API's 401 body), so the layer takes it as a function. The client
//! side is in [`crate::client`].
//!
//! The token is compared in constant time (`subtle`), so the time a refusal
//! takes says nothing about how much of a guess was right. Health checks
//! (`grpc.health.v1`) and reflection stay open: probes and `grpcurl describe`
//! need no secret, and they reveal nothing a port scan does not.

use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use subtle::ConstantTimeEq as _;
use tower::{Layer, Service};

/// The metadata key / HTTP header that carries the token.
pub const AUTHORIZATION: &str = "authorization";

/// gRPC paths that stay open with a token configured: health probes and
/// server reflection (v1 and v1alpha).
pub const OPEN_GRPC_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the API token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the API token {from} is empty or holds characters other than visible ASCII (no spaces); use e.g. `openssl rand -hex 32`"
    )]
    Invalid { from: String },
    #[error(
        "set either ETL_API_TOKEN (--api-token) or ETL_API_TOKEN_FILE (--api-token-file), not both"
    )]
    Both,
}

/// The shared secret. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// A token from its text (surrounding whitespace removed); `from` names
    /// where it came from in the error.
    pub fn new(text: &str, from: &str) -> Result<Self, TokenError> {
        let t = text.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Invalid {
                from: from.to_string(),
            });
        }
        Ok(Self(t.into()))
    }

    /// The first line of `path` (a trailing newline is fine).
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(
            text.lines().next().unwrap_or(""),
            &format!("in {}", path.display()),
        )
    }

    /// The token from a file, else from a value (empty values count as
    /// unset, as compose's `${VAR:-}` gives them); `None` when neither is set.
    pub fn resolve(value: Option<&str>, file: Option<&Path>) -> Result<Option<Self>, TokenError> {
        let value = value.filter(|v| !v.trim().is_empty());
        let file = file.filter(|f| !f.as_os_str().is_empty());
        match (value, file) {
            (Some(_), Some(_)) => Err(TokenError::Both),
            (None, Some(path)) => Self::from_file(path).map(Some),
            (Some(v), None) => Self::new(v, "in ETL_API_TOKEN").map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The token itself, for the client's header and for writing a token file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The whole header value: `Bearer <token>`.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `authorization` header value carries this token. The
    /// scheme is matched case-insensitively (RFC 7235); the token in constant
    /// time.
    pub fn matches(&self, header: &[u8]) -> bool {
        let Some(given) = bearer_of(header) else {
            return false;
        };
        given.ct_eq(self.0.as_bytes()).into()
    }
}

/// The credentials of `Bearer <credentials>`, if the header has that form.
fn bearer_of(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    Some(rest[1..].trim_ascii())
}

/// Why a call was refused, for the answer and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `authorization` header at all.
    Missing,
    /// A header, but not `Bearer <the token>`.
    Invalid,
}

impl Refusal {
    /// The message the caller gets (it never says what the token is).
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this API needs a token: send the header `authorization: Bearer <token>` (the ETL_API_TOKEN of the stack)"
            }
            Refusal::Invalid => {
                "the token in `authorization: Bearer <token>` is not this API's (check ETL_API_TOKEN / ETL_API_TOKEN_FILE)"
            }
        }
    }
}

/// Builds the answer to a refused call.
pub type Reject<B> = fn(Refusal) -> http::Response<B>;

/// A tower layer that lets a request through only with the right bearer token
/// (or when no token is configured, or the path is open).
pub struct RequireBearer<B> {
    token: Option<Token>,
    open: &'static [&'static str],
    reject: Reject<B>,
}

impl<B> Clone for RequireBearer<B> {
    fn clone(&self) -> Self {
        Self {
            token: self.token.clone(),
            open: self.open,
            reject: self.reject,
        }
    }
}

impl<B> RequireBearer<B> {
    /// `open`: path prefixes that need no token. `token` None: everything passes.
    pub fn new(token: Option<Token>, open: &'static [&'static str], reject: Reject<B>) -> Self {
        Self {
            token,
            open,
            reject,
        }
    }
}

/// The gRPC layer: UNAUTHENTICATED without the token; health and reflection open.
pub fn grpc_layer(token: Option<Token>) -> RequireBearer<tonic::body::Body> {
    RequireBearer::new(token, OPEN_GRPC_PREFIXES, |refusal| {
        tonic::Status::unauthenticated(refusal.message()).into_http()
    })
}

impl<S, B> Layer<S> for RequireBearer<B> {
    type Service = Bearer<S, B>;
    fn layer(&self, inner: S) -> Self::Service {
        Bearer {
            inner,
            check: self.clone(),
        }
    }
}

/// The service [`RequireBearer`] wraps around another.
pub struct Bearer<S, B> {
    inner: S,
    check: RequireBearer<B>,
}

impl<S: Clone, B> Clone for Bearer<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            check: self.check.clone(),
        }
    }
}

impl<B> RequireBearer<B> {
    /// Whether a request to `path` with these headers may pass.
    pub fn check(&self, path: &str, headers: &http::HeaderMap) -> Result<(), Refusal> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        if self.open.iter().any(|p| path.starts_with(p)) {
            return Ok(());
        }
        match headers.get(AUTHORIZATION) {
            None => Err(Refusal::Missing),
            Some(v) if token.matches(v.as_bytes()) => Ok(()),
            Some(_) => Err(Refusal::Invalid),
        }
    }
}

impl<S, ReqB, B> Service<http::Request<ReqB>> for Bearer<S, B>
where
    S: Service<http::Request<ReqB>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        match self.check.check(req.uri().path(), req.headers()) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(refusal) => {
                // The peer's address, when the server recorded it (tonic does).
                let peer = req
                    .extensions()
                    .get::<tonic::transport::server::TcpConnectInfo>()
                    .and_then(|i| i.remote_addr())
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                tracing::warn!(path = %req.uri().path(), %peer, reason = ?refusal, "call refused: no valid API token");
                let response = (self.check.reject)(refusal);
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_whole_and_in_bearer_form() {
        let t = Token::new(" s3cret-token\n", "test").expect("valid");
        assert_eq!(t.expose(), "s3cret-token");
        assert!(t.matches(b"Bearer s3cret-token"));
        assert!(t.matches(b"bearer s3cret-token"));
        assert!(!t.matches(b"Bearer s3cret-toke"));
        assert!(!t.matches(b"Bearer s3cret-token2"));
        assert!(!t.matches(b"Basic s3cret-token"));
        assert!(!t.matches(b"s3cret-token"));
        assert!(!t.matches(b"Bearer"));
        assert!(!t.matches(b""));
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn bad_tokens_and_double_configuration_are_refused() {
        assert!(Token::new("", "x").is_err());
        assert!(Token::new("two words", "x").is_err());
        assert!(Token::new("tab\there", "x").is_err());
        assert!(matches!(
            Token::resolve(Some("a"), Some(Path::new("/f"))),
            Err(TokenError::Both)
        ));
        assert_eq!(Token::resolve(Some(" "), None).expect("unset"), None);
        assert_eq!(Token::resolve(None, None).expect("unset"), None);
    }

    #[test]
    fn token_files_hold_the_first_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "abc123\n").expect("write");
        let t = Token::resolve(None, Some(&path)).expect("read");
        assert_eq!(t.map(|t| t.expose().to_string()).as_deref(), Some("abc123"));
        let err = Token::resolve(None, Some(&dir.path().join("missing"))).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn open_paths_pass_and_others_need_the_token() {
        let layer = grpc_layer(Some(Token::new("t0k", "test").expect("valid")));
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            layer.check("/grpc.health.v1.Health/Check", &headers),
            Ok(())
        );
        assert_eq!(
            layer.check("/etl.v1.Extractor/StartRun", &headers),
            Err(Refusal::Missing)
        );
        headers.insert(AUTHORIZATION, "Bearer nope".parse().expect("header"));
        assert_eq!(
            layer.check("/etl.v1.Extractor/StartRun", &headers),
            Err(Refusal::Invalid)
        );
        headers.insert(AUTHORIZATION, "Bearer t0k".parse().expect("header"));
        assert_eq!(layer.check("/etl.v1.Extractor/StartRun", &headers), Ok(()));
        let open = grpc_layer(None);
        assert_eq!(
            open.check("/etl.v1.Extractor/StartRun", &http::HeaderMap::new()),
            Ok(())
        );
    }
}
