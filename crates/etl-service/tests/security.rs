//! The control-plane token and TLS over real connections: a gRPC server (health,
//! reflection and a small `etl.v1.Extractor`) and an HTTP API served by
//! `etl_service` on port 0, called by tonic clients, a raw HTTP/1.1 client and a
//! rustls client. Certificates come from `openssl` (a CA and a server
//! certificate for 127.0.0.1).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    process::Command,
    sync::Arc,
};

use etl_proto::v1::{
    RunProgress, StartRunRequest, StartRunResponse, WatchRunRequest,
    extractor_client::ExtractorClient,
    extractor_server::{Extractor, ExtractorServer},
};
use etl_service::{
    ApiSecurity, ClientAuth, ServerSecurity, Shutdown,
    auth::{Refusal, Token},
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const TOKEN: &str = "test-token-0123456789abcdef";

/// Answers StartRun with "run-ok": enough to tell a call that got through.
struct Echo;

#[tonic::async_trait]
impl Extractor for Echo {
    type WatchRunStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<RunProgress, Status>> + Send>>;

    async fn start_run(
        &self,
        _request: Request<StartRunRequest>,
    ) -> Result<Response<StartRunResponse>, Status> {
        Ok(Response::new(StartRunResponse {
            run_id: "run-ok".into(),
        }))
    }

    async fn watch_run(
        &self,
        _request: Request<WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        Err(Status::not_found("no runs here"))
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn grpc_server(security: ServerSecurity) -> Server {
    let listener = etl_service::bind("grpc", "127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (mut routes, health) = etl_service::grpc::base_routes("etl.v1.Extractor")
        .await
        .expect("routes");
    routes.add_service(ExtractorServer::new(Echo));
    health.set(true).await;
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        etl_service::serve_until_shutdown(listener, routes.routes(), health, security, stop)
            .await
            .expect("serves")
    });
    Server { addr, shutdown }
}

fn start_run() -> StartRunRequest {
    StartRunRequest {
        sources: Vec::new(),
        run_id: String::new(),
        chunk_size: 0,
    }
}

async fn call(url: &str, auth: &ClientAuth) -> Result<String, Status> {
    let channel = auth.connect(url).await.expect("connects");
    ExtractorClient::new(channel)
        .start_run(start_run())
        .await
        .map(|r| r.into_inner().run_id)
}

fn token() -> Token {
    Token::new(TOKEN, "test").expect("valid")
}

#[tokio::test]
async fn grpc_calls_need_the_token_and_health_and_reflection_do_not() {
    let server = grpc_server(ServerSecurity {
        token: Some(token()),
        tls: None,
    })
    .await;
    let url = format!("http://{}", server.addr);

    let refused = call(&url, &ClientAuth::none()).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert_eq!(refused.message(), Refusal::Missing.message());

    let wrong = ClientAuth::token(Token::new("not-the-token", "test").expect("valid"));
    let refused = call(&url, &wrong).await.expect_err("wrong token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(!refused.message().contains(TOKEN), "{refused:?}");

    assert_eq!(
        call(&url, &ClientAuth::token(token()))
            .await
            .expect("with the token"),
        "run-ok"
    );

    // A token given in another case of the scheme and with spaces still counts.
    let channel = ClientAuth::none().connect(&url).await.expect("connects");
    let mut request = Request::new(start_run());
    request.metadata_mut().insert(
        "authorization",
        format!("bearer  {TOKEN}").parse().expect("header"),
    );
    ExtractorClient::new(channel)
        .start_run(request)
        .await
        .expect("bearer in lower case");

    // Health: open, so probes and `<binary> healthcheck` need no secret.
    assert!(
        etl_service::probe_health(&url)
            .await
            .expect("health answers")
    );
    let health = HealthClient::new(ClientAuth::none().connect(&url).await.expect("connects"))
        .check(HealthCheckRequest {
            service: "etl.v1.Extractor".into(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");

    // Reflection: open, so `grpcurl describe` works.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let mut reflection =
        ServerReflectionClient::new(ClientAuth::none().connect(&url).await.expect("connects"));
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers without a token")
        .into_inner();
    let first = answers.message().await.expect("a message").expect("one");
    assert!(
        format!("{first:?}").contains("etl.v1.Extractor"),
        "{first:?}"
    );
}

#[tokio::test]
async fn without_a_token_configured_everything_is_open() {
    let server = grpc_server(ServerSecurity::open()).await;
    let url = format!("http://{}", server.addr);
    assert_eq!(
        call(&url, &ClientAuth::none()).await.expect("open"),
        "run-ok"
    );
    // A client that sends a token anyway is fine too.
    assert_eq!(
        call(&url, &ClientAuth::token(token())).await.expect("open"),
        "run-ok"
    );
}

#[tokio::test]
async fn token_files_and_flags_are_read_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("api-token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write");
    let security = ApiSecurity {
        client: etl_service::ClientSecurity {
            api_token_file: Some(file.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let server = grpc_server(security.server().expect("reads")).await;
    let url = format!("http://{}", server.addr);
    let client = security.client().expect("reads");
    assert!(client.has_token());
    assert_eq!(call(&url, &client).await.expect("file token"), "run-ok");
    let missing = ApiSecurity {
        client: etl_service::ClientSecurity {
            api_token_file: Some(dir.path().join("nope")),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = missing.server().expect_err("missing file").to_string();
    assert!(err.contains("nope"), "{err}");
    let half = ApiSecurity {
        tls_cert: Some(file),
        ..Default::default()
    };
    assert!(half.server().is_err(), "a certificate without its key");
}

/// A CA and a certificate for 127.0.0.1 / localhost signed by it.
struct Certs {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (the tests need the openssl command)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn certs() -> Certs {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    for ca in ["ca", "other-ca"] {
        openssl(
            p,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=file-etl test {ca}"),
            ],
        );
    }
    openssl(
        p,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        p.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    openssl(
        p,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    Certs {
        ca: p.join("ca.pem"),
        cert: p.join("server.pem"),
        key: p.join("server.key"),
        other_ca: p.join("other-ca.pem"),
        _dir: dir,
    }
}

fn tls_security(c: &Certs) -> ApiSecurity {
    ApiSecurity {
        client: etl_service::ClientSecurity {
            api_token: Some(TOKEN.into()),
            api_token_file: None,
            tls_ca: Some(c.ca.clone()),
        },
        tls_cert: Some(c.cert.clone()),
        tls_key: Some(c.key.clone()),
    }
}

#[tokio::test]
async fn grpc_over_tls_with_the_token() {
    let c = certs();
    let security = tls_security(&c);
    let server = grpc_server(security.server().expect("reads the certificate")).await;
    let https = format!("https://{}", server.addr);
    let client = security.client().expect("reads the CA");
    assert_eq!(call(&https, &client).await.expect("TLS + token"), "run-ok");
    assert!(
        etl_service::probe_health_with(&https, &client)
            .await
            .expect("health over TLS")
    );

    // Without the token, TLS alone does not let a call through.
    let no_token = client.clone().with_token(None);
    let refused = call(&https, &no_token).await.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Plain text to a TLS listener, or a CA that did not sign it: no connection.
    let plain = format!("http://{}", server.addr);
    assert!(
        ExtractorClient::new(ClientAuth::none().connect_lazy(&plain).expect("lazy"))
            .start_run(start_run())
            .await
            .is_err()
    );
    let stranger = etl_service::ClientSecurity {
        tls_ca: Some(c.other_ca.clone()),
        ..Default::default()
    }
    .auth()
    .expect("reads")
    .with_token(Some(token()));
    assert!(stranger.connect(&https).await.is_err(), "unknown CA");
}

/// Serves a one-route router the way connect-manager serves its REST API.
async fn http_server(security: ServerSecurity) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = axum::Router::new().route("/connectors", axum::routing::get(|| async { "[]" }));
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        etl_service::http::serve_http(listener, router, &security, reject, stop)
            .await
            .expect("serves")
    });
    Server { addr, shutdown }
}

fn reject(refusal: Refusal) -> http::Response<axum::body::Body> {
    http::Response::builder()
        .status(401)
        .body(axum::body::Body::from(format!(
            "{{\"error_code\":401,\"message\":\"{}\"}}",
            refusal.message()
        )))
        .expect("response")
}

/// One HTTP/1.1 GET over `io`; the status line and the body.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, token: Option<&str>) -> String {
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    io.write_all(
        format!("GET /connectors HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut out = Vec::new();
    // A TLS peer may end without close_notify; what arrived is enough.
    let _ = io.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn http_calls_need_the_token() {
    let server = http_server(ServerSecurity {
        token: Some(token()),
        tls: None,
    })
    .await;
    let connect = || tokio::net::TcpStream::connect(server.addr);
    let refused = get(connect().await.expect("tcp"), None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("\"error_code\":401"), "{refused}");
    let wrong = get(connect().await.expect("tcp"), Some("nope")).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let ok = get(connect().await.expect("tcp"), Some(TOKEN)).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("[]"), "{ok}");
}

#[tokio::test]
async fn http_over_tls() {
    let c = certs();
    let security = tls_security(&c);
    let server = http_server(security.server().expect("reads")).await;
    let ca = etl_service::tls::TlsCa::load(&c.ca).expect("CA");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(ca.rustls_client().expect("config")));
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector
        .connect(
            name.clone(),
            tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("tcp"),
        )
        .await
        .expect("TLS handshake with the server's certificate");
    let ok = get(tls, Some(TOKEN)).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let tls = connector
        .connect(
            name,
            tokio::net::TcpStream::connect(server.addr)
                .await
                .expect("tcp"),
        )
        .await
        .expect("TLS handshake");
    let refused = get(tls, None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    // Plain HTTP to the TLS listener gets no answer.
    let plain = get(
        tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("tcp"),
        Some(TOKEN),
    )
    .await;
    assert!(!plain.contains("200"), "{plain}");
}
