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

    /// standalone: this worker alone runs every connector, kept in
    /// `<data-dir>/connectors.json`. distributed: workers started with the same
    /// `--group-id` form one cluster; connectors, task status and source
    /// offsets live in Kafka's compacted topics and the tasks are shared.
    #[arg(long, env = "ETL_MODE", value_enum, default_value_t = Mode::Standalone)]
    pub mode: Mode,

    /// The cluster's name, in distributed mode (Kafka Connect's `group.id`):
    /// the Kafka consumer group the workers join to share tasks.
    #[arg(long, env = "ETL_GROUP_ID", default_value = "connect-cluster")]
    pub group_id: String,

    /// Compacted topic holding connector configs and target states, in
    /// distributed mode (Kafka Connect's `config.storage.topic`).
    #[arg(
        long,
        env = "ETL_CONFIG_STORAGE_TOPIC",
        default_value = "connect-configs"
    )]
    pub config_storage_topic: String,

    /// Compacted topic holding connector and task status, in distributed mode
    /// (Kafka Connect's `status.storage.topic`).
    #[arg(
        long,
        env = "ETL_STATUS_STORAGE_TOPIC",
        default_value = "connect-status"
    )]
    pub status_storage_topic: String,

    /// Compacted topic holding source offsets (files sent, pinned schema), in
    /// distributed mode (Kafka Connect's `offset.storage.topic`).
    #[arg(
        long,
        env = "ETL_OFFSET_STORAGE_TOPIC",
        default_value = "connect-offsets"
    )]
    pub offset_storage_topic: String,

    /// Topic whose partitions are the cluster's task slots, in distributed
    /// mode: the workers' consumer group shares them out, so Kafka decides
    /// which worker runs which task and moves tasks when a worker joins or dies.
    #[arg(
        long,
        env = "ETL_ASSIGNMENT_TOPIC",
        default_value = "connect-assignments"
    )]
    pub assignment_topic: String,

    /// Compression of the records every producer of this worker writes
    /// (Kafka Connect's worker setting `producer.compression.type`, whose
    /// default is none too). lz4 cuts what the broker stores and serves to a
    /// tenth (the envelope repeats its schema in every record) and the durable
    /// broker's CPU by a sixth, but librdkafka's compression and decompression
    /// buffers took connect-manager's peak RSS from 49 to 104 MB in a 100k-row
    /// burst, past the 100 MB a service may use here.
    #[arg(
        long,
        env = "ETL_PRODUCER_COMPRESSION_TYPE",
        value_enum,
        default_value_t = Compression::None
    )]
    pub producer_compression_type: Compression,

    /// The gRPC and REST APIs' token and TLS (`--api-token-file`, `--tls-cert`, …).
    #[command(flatten)]
    pub security: etl_service::ApiSecurity,
}

/// A producer's `compression.type` (`--producer-compression-type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// librdkafka's (and Kafka's) name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How a connect-manager shares its work (`--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One worker, connectors in a local file.
    #[default]
    Standalone,
    /// Several workers sharing connectors and tasks through Kafka.
    Distributed,
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
            mode: Mode::Standalone,
            group_id: "connect-cluster".into(),
            config_storage_topic: "connect-configs".into(),
            status_storage_topic: "connect-status".into(),
            offset_storage_topic: "connect-offsets".into(),
            assignment_topic: "connect-assignments".into(),
            producer_compression_type: Compression::default(),
            security: etl_service::ApiSecurity::default(),
        }
    }
}
