//! Flags and their `ETL_*` environment twins.

use std::path::PathBuf;

/// Everything connect-manager needs to start. Every flag has an env twin.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// Address of the gRPC listener (etl.v1.ConnectManager, grpc.health.v1, reflection);
    /// port 0 picks a free port, which is logged.
    #[arg(long, env = "ETL_GRPC_ADDR", default_value = "127.0.0.1:50053")]
    pub grpc_addr: String,

    /// Address of the Kafka-Connect-compatible REST listener (GET/POST /connectors …).
    #[arg(long, env = "ETL_REST_ADDR", default_value = "127.0.0.1:8083")]
    pub rest_addr: String,

    /// Kafka bootstrap servers (comma-separated host:port).
    #[arg(long, env = "ETL_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Where connectors are kept (connectors.json), so they survive a restart.
    #[arg(long, env = "ETL_DATA_DIR", default_value = "./data/connect")]
    pub data_dir: PathBuf,

    /// The gRPC and REST APIs' token and TLS (`--api-token-file`, `--tls-cert`, …).
    #[command(flatten)]
    pub security: etl_service::ApiSecurity,
}

impl Config {
    /// Both listeners on `127.0.0.1:0`, the given brokers and data directory:
    /// what tests and in-process supervisors want.
    pub fn ephemeral(kafka_brokers: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            grpc_addr: "127.0.0.1:0".into(),
            rest_addr: "127.0.0.1:0".into(),
            kafka_brokers: kafka_brokers.into(),
            data_dir: data_dir.into(),
            security: etl_service::ApiSecurity::default(),
        }
    }
}
