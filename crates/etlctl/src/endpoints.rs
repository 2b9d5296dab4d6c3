//! Where the services are: the local stack's `stack.json`, or, with `--stack external`
//! (compose's one-shot job), the `--*-url` flags and their `ETL_*_URL` twins.

use etl_service::{ClientAuth, ClientSecurity};

use crate::cli::EndpointArgs;
use crate::stack::{Ports, Service, StackDir, StackInfo};

/// The Jaeger UI of the local stack when nothing else is known.
pub const DEFAULT_JAEGER_URL: &str = "http://127.0.0.1:16686";

/// The gRPC URLs of the four services, and the Jaeger UI if known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub extractor: String,
    pub gateway: String,
    pub connect: String,
    pub verifier: String,
    pub jaeger: Option<String>,
}

impl Endpoints {
    /// An external stack: each URL from its flag, else the design's port on 127.0.0.1.
    pub fn external(args: &EndpointArgs) -> Self {
        let ports = Ports::default();
        let or_default = |url: &Option<String>, service: Service| {
            url.clone()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| format!("http://127.0.0.1:{}", ports.grpc(service)))
        };
        Endpoints {
            extractor: or_default(&args.extractor_url, Service::Extractor),
            gateway: or_default(&args.gateway_url, Service::SftpGateway),
            connect: or_default(&args.connect_url, Service::ConnectManager),
            verifier: or_default(&args.verifier_url, Service::SinkVerifier),
            jaeger: Some(
                args.jaeger_url
                    .clone()
                    .filter(|u| !u.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_JAEGER_URL.to_owned()),
            ),
        }
    }

    /// The local stack of `stack.json`; `--jaeger-url` overrides its Jaeger.
    pub fn local(stack: &StackInfo, args: &EndpointArgs) -> anyhow::Result<Self> {
        let url = |service: Service| {
            stack
                .grpc_url(service)
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("stack.json names no {service}"))
        };
        Ok(Endpoints {
            extractor: url(Service::Extractor)?,
            gateway: url(Service::SftpGateway)?,
            connect: url(Service::ConnectManager)?,
            verifier: url(Service::SinkVerifier)?,
            jaeger: jaeger_url(args.jaeger_url.as_deref(), Some(stack)),
        })
    }

    pub fn grpc_url(&self, service: Service) -> &str {
        match service {
            Service::Extractor => &self.extractor,
            Service::SftpGateway => &self.gateway,
            Service::ConnectManager => &self.connect,
            Service::SinkVerifier => &self.verifier,
        }
    }
}

/// What etlctl's calls carry. For the local stack (`local`: its directory),
/// the token `etlctl up` made there (`<dir>/api-token`) wins over any other;
/// otherwise `--api-token` / `--api-token-file` (`ETL_API_TOKEN`,
/// `ETL_API_TOKEN_FILE`). `--tls-ca` (`ETL_TLS_CA`) either way.
pub fn client_auth(
    security: &ClientSecurity,
    local: Option<&StackDir>,
) -> anyhow::Result<ClientAuth> {
    let stack_token = match local {
        Some(dir) => dir.read_api_token()?,
        None => None,
    };
    match stack_token {
        Some(token) => {
            let ca_only = ClientSecurity {
                api_token: None,
                api_token_file: None,
                ..security.clone()
            };
            Ok(ca_only.auth()?.with_token(Some(token)))
        }
        None => Ok(security.auth()?),
    }
}

/// Jaeger's URL: the flag, else the local stack's embedded collector, else none
/// (tracing off, or an external collector whose UI we do not know).
pub fn jaeger_url(flag: Option<&str>, stack: Option<&StackInfo>) -> Option<String> {
    flag.map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .or_else(|| stack.and_then(|s| s.tracing.jaeger_url.clone()))
}

/// The Jaeger UI page of one trace.
pub fn trace_page(jaeger: &str, trace_id: &str) -> String {
    format!("{}/trace/{trace_id}", jaeger.trim_end_matches('/'))
}
