//! `binance-provider`: a `provider.v1` gRPC service exposing read-only Binance spot market data as tools.
//!
//! The crate is a library plus a thin binary so that integration tests can start the real server on a
//! listener of their choice ([`server::serve`]) and stop it with a future of their choice.

pub mod analytics;
pub mod args;
pub mod binance;
pub mod chain;
pub mod config;
pub mod echo;
pub mod healthcheck;
pub mod output;
pub mod report;
pub mod server;
pub mod tools;

/// Generated `provider.v1` messages, server and client (from `providers/proto`).
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("provider.v1");

    /// The encoded `FileDescriptorSet` of `provider.v1`, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("provider_v1");
}

/// The provider name reported by `ListCapabilities`; every tool name is prefixed with it.
pub const PROVIDER_NAME: &str = "binance";

/// The crate version, reported by `ListCapabilities` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
