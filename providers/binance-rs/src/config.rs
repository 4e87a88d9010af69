//! Runtime settings of the service, with the defaults used in production.

use std::time::Duration;

/// Where Binance's public REST API lives unless `BINANCE_BASE_URL` says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.binance.com";
/// The listen address unless `PROVIDER_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "0.0.0.0:50053";

/// Everything the server needs besides its listener.
#[derive(Clone, Debug)]
pub struct Config {
    /// Base URL of Binance's REST API (scheme and host, optionally a path prefix).
    pub base_url: String,
    /// Limit for establishing a TCP/TLS connection to Binance.
    pub connect_timeout: Duration,
    /// Limit for one whole HTTP request to Binance (connect, send, read the body).
    pub request_timeout: Duration,
    /// Retries after the first attempt on 429/418/5xx answers and connection failures.
    pub max_retries: u32,
    /// First backoff between retries when Binance sends no `Retry-After`; doubles each retry.
    pub retry_backoff: Duration,
    /// Longest `Retry-After` the provider is willing to wait; a longer one fails the call at once.
    pub retry_after_cap: Duration,
    /// How long a finished market report is reused for identical calls.
    pub report_ttl: Duration,
    /// How long in-flight calls may take to finish after SIGTERM/SIGINT before the server stops anyway.
    pub shutdown_grace: Duration,
}

impl Config {
    /// Production defaults against the given Binance base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            connect_timeout: Duration::from_millis(3_000),
            request_timeout: Duration::from_millis(10_000),
            max_retries: 2,
            retry_backoff: Duration::from_millis(250),
            retry_after_cap: Duration::from_millis(5_000),
            report_ttl: Duration::from_millis(5_000),
            shutdown_grace: Duration::from_millis(5_000),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new(DEFAULT_BASE_URL)
    }
}
