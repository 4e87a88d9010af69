//! A small client for Binance's public spot REST API (`/api/v3/...`): timeouts, bounded retries with
//! backoff on 429/418/5xx honouring `Retry-After`, Binance `{code,msg}` errors, and typed decoding that
//! reports malformed bodies instead of panicking.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};
use tracing::{debug, warn};

use crate::chain::chain;

use crate::config::Config;
use crate::echo::{LOG_MAX_CHARS, clip};

/// Why a call to Binance failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No answer within the request timeout or before the call's deadline.
    #[error("{message}")]
    Timeout { message: String },
    /// Unreachable, 5xx or rate-limited past the retries, or an unparseable body.
    /// `code` is Binance's own error code when the answer carried one, else 0.
    #[error("{message}")]
    Unavailable { message: String, code: i64 },
    /// A 4xx answer: Binance refused the request (`code`/`msg` from its error body when present).
    #[error("Binance rejected {endpoint} (HTTP {status}): {msg}")]
    Rejected {
        endpoint: String,
        status: u16,
        code: i64,
        msg: String,
    },
}

/// Binance's error body: `{"code": -1121, "msg": "Invalid symbol."}`.
#[derive(Debug, Deserialize)]
struct ApiError {
    code: i64,
    msg: String,
}

/// A decimal that Binance sends as a JSON string ("4.00000200"); plain numbers are accepted too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal number or a string holding one")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Num, E> {
                s.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .map(Num)
                    .ok_or_else(|| E::custom(format!("{s:?} is not a decimal number")))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// `GET /api/v3/ticker/24hr?symbol=` (FULL response).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticker24h {
    pub symbol: String,
    pub price_change: Num,
    pub price_change_percent: Num,
    pub weighted_avg_price: Num,
    pub prev_close_price: Num,
    pub last_price: Num,
    pub last_qty: Num,
    pub bid_price: Num,
    pub bid_qty: Num,
    pub ask_price: Num,
    pub ask_qty: Num,
    pub open_price: Num,
    pub high_price: Num,
    pub low_price: Num,
    pub volume: Num,
    pub quote_volume: Num,
    pub open_time: i64,
    pub close_time: i64,
    pub first_id: i64,
    pub last_id: i64,
    pub count: u64,
}

/// `GET /api/v3/depth`: bids best first (descending), asks best first (ascending); `[price, qty]` pairs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Depth {
    pub last_update_id: i64,
    pub bids: Vec<(Num, Num)>,
    pub asks: Vec<(Num, Num)>,
}

/// One `GET /api/v3/klines` row: a 12-element array.
#[derive(Debug, Clone, Deserialize)]
pub struct Kline(
    pub i64, // open time
    pub Num, // open
    pub Num, // high
    pub Num, // low
    pub Num, // close
    pub Num, // volume
    pub i64, // close time
    pub Num, // quote asset volume
    pub u64, // number of trades
    pub Num, // taker buy base asset volume
    pub Num, // taker buy quote asset volume
    pub IgnoredAny,
);

/// One `GET /api/v3/trades` element.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trade {
    pub id: i64,
    pub price: Num,
    pub qty: Num,
    pub quote_qty: Num,
    pub time: i64,
    pub is_buyer_maker: bool,
    #[serde(default)]
    pub is_best_match: Option<bool>,
}

/// When one tool call must be answered: every attempt and wait of its Binance requests fits before
/// it, so retries with backoff and `Retry-After` cannot add up past what the caller waits.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self {
            at: Instant::now() + budget,
            budget,
        }
    }

    fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    fn budget_ms(&self) -> u128 {
        self.budget.as_millis()
    }
}

/// The Binance REST client; cheap to clone (the HTTP pool is shared).
#[derive(Clone)]
pub struct BinanceClient {
    http: reqwest::Client,
    base_url: String,
    request_timeout: Duration,
    max_retries: u32,
    retry_backoff: Duration,
    retry_after_cap: Duration,
}

/// The result of one HTTP attempt, before the retry decision.
enum Attempt {
    Done(bytes::Bytes),
    Retryable {
        reason: String,
        code: i64,
        retry_after: Option<Duration>,
    },
    Fatal(UpstreamError),
}

impl BinanceClient {
    /// Builds the client; fails on a base URL that is not http(s).
    pub fn new(config: &Config) -> Result<Self, String> {
        let url = reqwest::Url::parse(&config.base_url)
            .map_err(|e| format!("BINANCE_BASE_URL {:?} is not a URL: {e}", config.base_url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(format!(
                "BINANCE_BASE_URL {:?} must be an http:// or https:// URL with a host",
                config.base_url
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("binance-provider/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))?;
        Ok(Self {
            http,
            base_url: config.base_url.trim_end_matches('/').to_string(),
            request_timeout: config.request_timeout,
            max_retries: config.max_retries,
            retry_backoff: config.retry_backoff,
            retry_after_cap: config.retry_after_cap,
        })
    }

    pub async fn ticker_24h(
        &self,
        symbol: &str,
        deadline: Deadline,
    ) -> Result<Ticker24h, UpstreamError> {
        self.get(
            "/api/v3/ticker/24hr",
            &[("symbol", symbol.to_string())],
            deadline,
        )
        .await
    }

    pub async fn depth(
        &self,
        symbol: &str,
        limit: u32,
        deadline: Deadline,
    ) -> Result<Depth, UpstreamError> {
        self.get(
            "/api/v3/depth",
            &[("symbol", symbol.to_string()), ("limit", limit.to_string())],
            deadline,
        )
        .await
    }

    pub async fn klines(
        &self,
        symbol: &str,
        interval: &str,
        limit: u32,
        deadline: Deadline,
    ) -> Result<Vec<Kline>, UpstreamError> {
        self.get(
            "/api/v3/klines",
            &[
                ("symbol", symbol.to_string()),
                ("interval", interval.to_string()),
                ("limit", limit.to_string()),
            ],
            deadline,
        )
        .await
    }

    pub async fn trades(
        &self,
        symbol: &str,
        limit: u32,
        deadline: Deadline,
    ) -> Result<Vec<Trade>, UpstreamError> {
        self.get(
            "/api/v3/trades",
            &[("symbol", symbol.to_string()), ("limit", limit.to_string())],
            deadline,
        )
        .await
    }

    /// GET `path` with `query`, retrying what is worth retrying within `deadline`, and decodes the
    /// JSON body as `T`.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &'static str,
        query: &[(&'static str, String)],
        deadline: Deadline,
    ) -> Result<T, UpstreamError> {
        let url = format!("{}{}", self.base_url, path);
        let mut retries = 0u32;
        loop {
            match self.attempt(&url, path, query, deadline).await {
                Attempt::Done(body) => {
                    return serde_json::from_slice(&body).map_err(|e| UpstreamError::Unavailable {
                        message: format!("Binance sent a malformed response for {path}: {e}"),
                        code: 0,
                    });
                }
                Attempt::Fatal(e) => return Err(e),
                Attempt::Retryable {
                    reason,
                    code,
                    retry_after,
                } => {
                    if retries >= self.max_retries {
                        let tries = retries + 1;
                        return Err(UpstreamError::Unavailable {
                            message: format!(
                                "{reason} (gave up after {tries} attempt{})",
                                if tries == 1 { "" } else { "s" }
                            ),
                            code,
                        });
                    }
                    let wait = match retry_after {
                        Some(wait) if wait > self.retry_after_cap => {
                            return Err(UpstreamError::Unavailable {
                                message: format!(
                                    "{reason}; Binance asked to retry after {} s, longer than this provider waits ({} ms)",
                                    wait.as_secs(),
                                    self.retry_after_cap.as_millis()
                                ),
                                code,
                            });
                        }
                        Some(wait) => wait,
                        None => self.retry_backoff.saturating_mul(1 << retries.min(16)),
                    };
                    if wait >= deadline.remaining() {
                        let tries = retries + 1;
                        return Err(UpstreamError::Unavailable {
                            message: format!(
                                "{reason} (gave up after {tries} attempt{}: a retry in {} ms would pass this call's {} ms deadline)",
                                if tries == 1 { "" } else { "s" },
                                wait.as_millis(),
                                deadline.budget_ms()
                            ),
                            code,
                        });
                    }
                    warn!(%reason, wait_ms = wait.as_millis() as u64, retry = retries + 1, "retrying Binance request");
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
            }
        }
    }

    async fn attempt(
        &self,
        url: &str,
        path: &str,
        query: &[(&'static str, String)],
        deadline: Deadline,
    ) -> Attempt {
        debug!(%url, ?query, "GET");
        // The request timeout, or what is left of the call's deadline when that is shorter.
        let remaining = deadline.remaining();
        let limit = self.request_timeout.min(remaining);
        let timeout = || {
            let message = if limit < self.request_timeout {
                format!(
                    "Binance did not answer {path} within this call's {} ms deadline",
                    deadline.budget_ms()
                )
            } else {
                format!(
                    "Binance did not answer {path} within {} ms",
                    self.request_timeout.as_millis()
                )
            };
            Attempt::Fatal(UpstreamError::Timeout { message })
        };
        if remaining.is_zero() {
            return timeout();
        }
        let resp = match self.http.get(url).query(query).timeout(limit).send().await {
            Ok(resp) => resp,
            Err(e) if e.is_timeout() => return timeout(),
            Err(e) if e.is_connect() => {
                return Attempt::Retryable {
                    reason: format!("cannot connect to Binance at {url}: {}", chain(&e)),
                    code: 0,
                    retry_after: None,
                };
            }
            Err(e) => {
                return Attempt::Fatal(UpstreamError::Unavailable {
                    message: format!("request to Binance {path} failed: {}", chain(&e)),
                    code: 0,
                });
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = match resp.bytes().await {
            Ok(body) => body,
            Err(e) if e.is_timeout() => return timeout(),
            Err(e) => {
                return Attempt::Retryable {
                    reason: format!("reading Binance's answer to {path} failed: {}", chain(&e)),
                    code: 0,
                    retry_after: None,
                };
            }
        };
        if status.is_success() {
            return Attempt::Done(body);
        }
        let api_error = serde_json::from_slice::<ApiError>(&body).ok();
        let detail = match &api_error {
            Some(e) => format!("{} (Binance code {})", clip(&e.msg, LOG_MAX_CHARS), e.code),
            None => snippet(&body),
        };
        let code = api_error.as_ref().map_or(0, |e| e.code);
        if status == StatusCode::TOO_MANY_REQUESTS
            || status.as_u16() == 418
            || status.is_server_error()
        {
            let what = match status.as_u16() {
                429 => "rate-limited us",
                418 => "has banned this IP for exceeding rate limits",
                _ => "failed",
            };
            return Attempt::Retryable {
                reason: format!(
                    "Binance {what} on {path} (HTTP {}): {detail}",
                    status.as_u16()
                ),
                code,
                retry_after,
            };
        }
        if status.is_client_error() {
            let msg = api_error.map_or(detail, |e| clip(&e.msg, LOG_MAX_CHARS).into_owned());
            return Attempt::Fatal(UpstreamError::Rejected {
                endpoint: path.to_string(),
                status: status.as_u16(),
                code,
                msg,
            });
        }
        Attempt::Fatal(UpstreamError::Unavailable {
            message: format!(
                "Binance answered {path} with unexpected HTTP {}: {detail}",
                status.as_u16()
            ),
            code,
        })
    }
}

/// The start of a non-JSON error body, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "empty body".into();
    }
    clip(text, LOG_MAX_CHARS).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_documented_shapes() {
        let depth: Depth = serde_json::from_str(
            r#"{"lastUpdateId":1027024,"bids":[["4.00000000","431.00000000"]],"asks":[["4.00000200","12.00000000"]]}"#,
        )
        .unwrap();
        assert_eq!(depth.bids[0].0, Num(4.0));
        assert_eq!(depth.asks[0].1, Num(12.0));
        let k: Vec<Kline> = serde_json::from_str(
            r#"[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499644799999,"2434.19055334",308,"1756.87402397","28.46694368","0"]]"#,
        )
        .unwrap();
        assert_eq!(k[0].4, Num(0.015771));
        assert_eq!(k[0].8, 308);
        let t: Vec<Trade> = serde_json::from_str(
            r#"[{"id":28457,"price":"4.00000100","qty":"12.00000000","quoteQty":"48.000012","time":1499865549590,"isBuyerMaker":true,"isBestMatch":true}]"#,
        )
        .unwrap();
        assert!(t[0].is_buyer_maker);
    }

    #[test]
    fn rejects_non_numeric_decimals() {
        let r =
            serde_json::from_str::<Depth>(r#"{"lastUpdateId":1,"bids":[["abc","1"]],"asks":[]}"#);
        assert!(
            r.unwrap_err()
                .to_string()
                .contains("\"abc\" is not a decimal")
        );
    }

    #[test]
    fn rejects_bad_base_urls() {
        assert!(BinanceClient::new(&Config::new("ftp://example.com")).is_err());
        assert!(BinanceClient::new(&Config::new("not a url")).is_err());
        assert!(BinanceClient::new(&Config::new("http://127.0.0.1:1/")).is_ok());
    }
}
