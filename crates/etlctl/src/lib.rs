//! etlctl
