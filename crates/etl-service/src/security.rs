//! The security flags every service (and etlctl, as a client) shares, with
//! their env twins, and what they turn into at start: a [`ServerSecurity`]
//! for the servers and a [`ClientAuth`] for the calls a service makes.
//!
//! | flag | env | what |
//! |---|---|---|
//! | `--api-token` | `ETL_API_TOKEN` | the control-plane token (prefer the env or a file: a flag shows in `ps`) |
//! | `--api-token-file` | `ETL_API_TOKEN_FILE` | a file holding it (first line) |
//! | `--tls-cert`, `--tls-key` | `ETL_TLS_CERT`, `ETL_TLS_KEY` | PEM certificate chain and key: the gRPC and REST listeners serve TLS |
//! | `--tls-ca` | `ETL_TLS_CA` | PEM CA the service's own clients trust for `https://` peers |

use std::{fmt, path::PathBuf};

use crate::{
    auth::{Token, TokenError},
    client::ClientAuth,
    tls::{TlsCa, TlsError, TlsIdentity},
};

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// What a client needs: the token and the CA of `https://` servers.
#[derive(Clone, Default, clap::Args)]
pub struct ClientSecurity {
    /// The control-plane API token: sent as `authorization: Bearer <token>` on every
    /// gRPC and REST call; servers given one refuse calls without it (health checks
    /// stay open). Prefer ETL_API_TOKEN or --api-token-file: a flag shows in `ps`.
    #[arg(
        long = "api-token",
        env = "ETL_API_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// A file holding the API token (first line), e.g. a compose secret or the local
    /// stack's `.etl/api-token`. Instead of --api-token, not with it.
    #[arg(long, env = "ETL_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,

    /// PEM CA certificate(s) trusted for https:// URLs of the other services.
    #[arg(long, env = "ETL_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
}

impl fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("api_token", &self.api_token.as_ref().map(|_| "***"))
            .field("api_token_file", &self.api_token_file)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

impl ClientSecurity {
    /// The configured token, read from its file if it is in one.
    pub fn token(&self) -> Result<Option<Token>, TokenError> {
        Token::resolve(self.api_token.as_deref(), self.api_token_file.as_deref())
    }

    /// Reads the token and the CA now.
    pub fn auth(&self) -> Result<ClientAuth, SecurityError> {
        let ca = match self.tls_ca.as_deref().filter(|p| !p.as_os_str().is_empty()) {
            Some(path) => Some(TlsCa::load(path)?),
            None => None,
        };
        Ok(ClientAuth::new(self.token()?, ca))
    }
}

/// A service's flags: the client's, plus the certificate and key its own
/// listeners serve.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ApiSecurity {
    #[command(flatten)]
    pub client: ClientSecurity,

    /// PEM certificate chain of this service's gRPC (and REST) listeners; with
    /// --tls-key they serve TLS only (clients then use https:// URLs).
    #[arg(long, env = "ETL_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "ETL_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

impl ApiSecurity {
    /// Only a token (tests, in-process stacks).
    pub fn with_token(token: &str) -> Self {
        Self {
            client: ClientSecurity {
                api_token: Some(token.to_string()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Reads every file now, so a missing or bad one stops the start with
    /// an error naming it.
    pub fn server(&self) -> Result<ServerSecurity, SecurityError> {
        let nonempty = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        Ok(ServerSecurity {
            token: self.client.token()?,
            tls: TlsIdentity::from_paths(
                nonempty(&self.tls_cert).as_deref(),
                nonempty(&self.tls_key).as_deref(),
            )?,
        })
    }

    /// What this service's own calls to its peers carry.
    pub fn client(&self) -> Result<ClientAuth, SecurityError> {
        self.client.auth()
    }
}

/// What a server enforces: the token (None: calls need none) and TLS.
#[derive(Clone, Debug, Default)]
pub struct ServerSecurity {
    pub token: Option<Token>,
    pub tls: Option<TlsIdentity>,
}

impl ServerSecurity {
    /// Nothing enforced.
    pub fn open() -> Self {
        Self::default()
    }

    /// `auth=token|none tls=on|off`, for the start log line.
    pub fn describe(&self) -> String {
        format!(
            "auth={} tls={}",
            if self.token.is_some() {
                "token"
            } else {
                "none"
            },
            if self.tls.is_some() { "on" } else { "off" }
        )
    }
}
