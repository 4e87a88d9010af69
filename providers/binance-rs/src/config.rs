//! Runtime settings of the service, with the defaults used in production.
//!
//! [`defaults`] is the one place the default values live: the command line (`main.rs`, shown by
//! `--help`), [`Config::new`] and the tests all read them from there.

use std::time::Duration;

/// Where Binance's public REST API lives unless `BINANCE_BASE_URL` says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.binance.com";
/// The listen address unless `PROVIDER_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "0.0.0.0:50053";

/// Default values of the settings, in the unit of their environment variable (milliseconds).
pub mod defaults {
    /// `BINANCE_CONNECT_TIMEOUT_MS`.
    pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
    /// `BINANCE_TIMEOUT_MS`: one whole request.
    pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
    /// `BINANCE_CALL_TIMEOUT_MS`: every attempt and wait of one call. Under the gateway's 15 s
    /// default so that the gateway gets the provider's own answer, not a deadline of its own.
    pub const CALL_TIMEOUT_MS: u64 = 12_000;
    /// `BINANCE_MAX_RETRIES`.
    pub const MAX_RETRIES: u32 = 2;
    /// `BINANCE_RETRY_BACKOFF_MS`.
    pub const RETRY_BACKOFF_MS: u64 = 250;
    /// `BINANCE_RETRY_AFTER_MAX_MS`.
    pub const RETRY_AFTER_MAX_MS: u64 = 5_000;
    /// `REPORT_CACHE_TTL_MS`.
    pub const REPORT_CACHE_TTL_MS: u64 = 5_000;
    /// `SHUTDOWN_DRAIN_MS`: long enough for a health-checking proxy or orchestrator to see
    /// NOT_SERVING and stop routing here, short enough that a plain `docker stop` stays quick.
    pub const SHUTDOWN_DRAIN_MS: u64 = 1_000;
    /// `SHUTDOWN_GRACE_MS`.
    pub const SHUTDOWN_GRACE_MS: u64 = 5_000;
    /// `HEALTHCHECK_TIMEOUT_MS`.
    pub const HEALTHCHECK_TIMEOUT_MS: u64 = 2_000;
}

/// Everything the server needs besides its listener.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL of Binance's REST API (scheme and host, optionally a path prefix).
    pub base_url: String,
    /// Limit for establishing a TCP/TLS connection to Binance.
    pub connect_timeout: Duration,
    /// Limit for one whole HTTP request to Binance (connect, send, read the body).
    pub request_timeout: Duration,
    /// Limit for one tool call's Binance requests together, retries and their waits included;
    /// a caller's shorter gRPC deadline shortens it.
    pub call_timeout: Duration,
    /// Retries after the first attempt on 429/418/5xx answers and connection failures.
    pub max_retries: u32,
    /// First backoff between retries when Binance sends no `Retry-After`; doubles each retry.
    pub retry_backoff: Duration,
    /// Longest `Retry-After` the provider is willing to wait; a longer one fails the call at once.
    pub retry_after_cap: Duration,
    /// How long a finished market report is reused for identical calls.
    pub report_ttl: Duration,
    /// After SIGTERM/SIGINT: how long the server keeps accepting and serving while its health
    /// service already reports NOT_SERVING, so load balancers move away before it stops.
    pub shutdown_drain: Duration,
    /// After the drain: how long in-flight calls may take to finish before the server stops anyway.
    pub shutdown_grace: Duration,
}

impl Config {
    /// Production defaults against the given Binance base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        let ms = Duration::from_millis;
        Self {
            base_url: base_url.into(),
            connect_timeout: ms(defaults::CONNECT_TIMEOUT_MS),
            request_timeout: ms(defaults::REQUEST_TIMEOUT_MS),
            call_timeout: ms(defaults::CALL_TIMEOUT_MS),
            max_retries: defaults::MAX_RETRIES,
            retry_backoff: ms(defaults::RETRY_BACKOFF_MS),
            retry_after_cap: ms(defaults::RETRY_AFTER_MAX_MS),
            report_ttl: ms(defaults::REPORT_CACHE_TTL_MS),
            shutdown_drain: ms(defaults::SHUTDOWN_DRAIN_MS),
            shutdown_grace: ms(defaults::SHUTDOWN_GRACE_MS),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(DEFAULT_BASE_URL)
    }
}
