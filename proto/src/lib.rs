//! The file-etl control plane: one gRPC service per component, generated from
//! `etl/v1/*.proto` at build time.
//!
//! # Layout
//! - [`v1`]: messages, `*_client` and `*_server` modules of `etl.v1`.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, served by gRPC reflection.

/// Generated code of package `etl.v1`.
#[allow(clippy::all, clippy::pedantic, unreachable_pub, missing_docs)]
pub mod v1 {
    tonic::include_proto!("etl.v1");
}

/// Encoded `FileDescriptorSet` of `etl.v1`, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/etl_descriptor.bin"));
