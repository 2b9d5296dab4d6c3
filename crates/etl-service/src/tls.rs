//! Optional TLS for the control plane: the gRPC servers (tonic's rustls
//! acceptor) and connect-manager's REST API ([`TlsListener`]) read the same
//! certificate and key files; clients trust a CA file ([`crate::client`]).
//! rustls with the aws-lc-rs provider, the crypto russh already builds.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    },
    server::TlsStream,
};

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS {what} {path} holds no usable PEM {expected}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error(
        "--tls-cert and --tls-key (ETL_TLS_CERT, ETL_TLS_KEY) go together: give both or neither"
    )]
    Half,
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Makes aws-lc-rs the process's rustls provider (tonic's server asks for
/// the process default); a no-op when one is installed already.
fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A server's certificate chain and private key, PEM, as read at start.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    cert_path: PathBuf,
    key_path: PathBuf,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish()
    }
}

impl TlsIdentity {
    /// Reads and checks both files (so a bad file fails the start, not the
    /// first client).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        install_provider();
        let identity = Self {
            cert_pem: read("certificate", cert)?,
            key_pem: read("key", key)?,
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
        };
        identity.rustls_config(&[])?;
        Ok(identity)
    }

    /// Both paths given, or neither; one alone is a mistake.
    pub fn from_paths(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Self>, TlsError> {
        match (cert, key) {
            (Some(c), Some(k)) => Self::load(c, k).map(Some),
            (None, None) => Ok(None),
            _ => Err(TlsError::Half),
        }
    }

    /// For tonic's server.
    pub fn tonic(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ))
    }

    fn rustls_config(&self, alpn: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        let certs = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| TlsError::Pem {
                what: "certificate",
                path: self.cert_path.clone(),
                expected: "CERTIFICATE",
            })?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|_| TlsError::Pem {
            what: "key",
            path: self.key_path.clone(),
            expected: "PRIVATE KEY",
        })?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// An acceptor for HTTP servers (HTTP/1.1 and HTTP/2 by ALPN).
    pub fn http_acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(Arc::new(
            self.rustls_config(&[b"h2", b"http/1.1"])?,
        )))
    }
}

/// A TCP listener whose connections come out TLS-wrapped. Handshakes run
/// concurrently in their own tasks (a slow client delays no one) with a
/// timeout; failed ones are logged and dropped.
pub struct TlsListener {
    local: SocketAddr,
    accepted: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            local,
            accepted,
            task,
        })
    }

    /// The next connection whose handshake completed; `None` once the
    /// listener stopped.
    pub async fn accept(&mut self) -> Option<(TlsStream<tokio::net::TcpStream>, SocketAddr)> {
        self.accepted.recv().await
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match TlsListener::accept(self).await {
            Some(c) => c,
            // The accept loop only ends when aborted, which only Drop does.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The CA a client trusts for `https://` URLs, PEM, as read at start.
#[derive(Clone)]
pub struct TlsCa {
    pem: Arc<Vec<u8>>,
}

impl std::fmt::Debug for TlsCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsCa")
    }
}

impl TlsCa {
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        install_provider();
        let pem = read("CA file", path)?;
        if CertificateDer::pem_slice_iter(&pem).next().is_none() {
            return Err(TlsError::Pem {
                what: "CA file",
                path: path.to_path_buf(),
                expected: "CERTIFICATE",
            });
        }
        Ok(Self { pem: Arc::new(pem) })
    }

    pub fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.pem.as_slice()))
    }

    /// A rustls client config trusting only this CA (for HTTP clients).
    pub fn rustls_client(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.pem) {
            let cert = cert.map_err(|e| TlsError::Config(e.to_string()))?;
            roots
                .add(cert)
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth())
    }
}
