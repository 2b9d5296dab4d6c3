//! Span names and attribute keys, in one place so every service emits the same
//! names (OpenTelemetry semantic conventions where one exists).

pub const TOPIC_DEFAULT: &str = "review-etl";

// Kafka record headers that carry lineage and trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_FILE: &str = "etl.file";
pub const HEADER_ROW: &str = "etl.row";
pub const HEADER_RUN: &str = "etl.run";

// Messaging semantic conventions.
pub const MESSAGING_SYSTEM: &str = "messaging.system";
pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
pub const MESSAGING_BATCH_COUNT: &str = "messaging.batch.message_count";

// Database semantic conventions.
pub const DB_SYSTEM: &str = "db.system.name";
pub const DB_OPERATION: &str = "db.operation.name";
pub const DB_COLLECTION: &str = "db.collection.name";
pub const DB_ROWS: &str = "db.response.returned_rows";
