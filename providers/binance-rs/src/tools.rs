//! The tools this provider offers: their JSON Schemas, argument validation and execution.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::analytics::{self, FlowTrade};
use crate::args::{ArgError, Args, INTERVALS, SYMBOL_PATTERN, parse_object};
use crate::binance::{BinanceClient, Deadline, Depth, Kline, Ticker24h, Trade, UpstreamError};
use crate::config::Config;
use crate::output;
use crate::report::{ReportCache, ReportKey};

pub const GET_TICKER: &str = "binance.get_ticker";
pub const GET_ORDER_BOOK: &str = "binance.get_order_book";
pub const GET_KLINES: &str = "binance.get_klines";
pub const GET_RECENT_TRADES: &str = "binance.get_recent_trades";
pub const MARKET_REPORT: &str = "binance.market_report";

/// `/api/v3/depth` accepts 1..=5000 levels.
pub const DEPTH_MAX: u32 = 5000;
/// `/api/v3/klines` and `/api/v3/trades` return at most 1000 rows.
pub const ROWS_MAX: u32 = 1000;

/// The kind of a tool failure; maps one-to-one onto `provider.v1.ErrorCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArguments,
    UnknownTool,
    UpstreamUnavailable,
    UpstreamRejected,
    Timeout,
    Internal,
}

/// A tool failure as returned in `InvokeResponse.error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    pub kind: ErrorKind,
    pub message: String,
    /// Binance's own error code when it sent one, else 0.
    pub upstream_code: i64,
}

impl ToolError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            upstream_code: 0,
        }
    }
}

impl From<ArgError> for ToolError {
    fn from(e: ArgError) -> Self {
        Self::new(ErrorKind::InvalidArguments, e.0)
    }
}

impl From<UpstreamError> for ToolError {
    fn from(e: UpstreamError) -> Self {
        let message = e.to_string();
        match e {
            UpstreamError::Timeout { .. } => Self::new(ErrorKind::Timeout, message),
            UpstreamError::Unavailable { code, .. } => Self {
                kind: ErrorKind::UpstreamUnavailable,
                message,
                upstream_code: code,
            },
            UpstreamError::Rejected { code, .. } => Self {
                kind: ErrorKind::UpstreamRejected,
                message,
                upstream_code: code,
            },
        }
    }
}

/// A successful tool result: structured JSON plus an optional markdown rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub json: Value,
    pub text: String,
}

/// One entry of `ListCapabilities`.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub input_schema: Value,
    /// The JSON Schema every successful result of the tool validates against.
    pub output_schema: Value,
}

fn symbol_schema() -> Value {
    json!({
        "type": "string",
        "pattern": SYMBOL_PATTERN,
        "description": "Binance spot symbol, base then quote asset, e.g. \"BTCUSDT\" (case-insensitive, sent upper-cased; no spaces)."
    })
}

fn int_schema(default: u32, min: u32, max: u32, description: &str) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max, "default": default, "description": description})
}

fn interval_schema(default: &str) -> Value {
    let names: Vec<&str> = INTERVALS.iter().map(|(n, _)| *n).collect();
    json!({"type": "string", "enum": names, "default": default, "description": "Kline interval (Binance enum: s=seconds, m=minutes, h=hours, d=days, w=weeks, M=months)."})
}

fn object_schema(properties: Value) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": properties,
        "required": ["symbol"],
        "additionalProperties": false
    })
}

// Defaults and bounds, shared by the schemas and the validation so they cannot drift apart.
const BOOK_LIMIT_DEFAULT: u32 = 100;
const KLINES_LIMIT_DEFAULT: u32 = 100;
const TRADES_LIMIT_DEFAULT: u32 = 100;
const KLINES_INTERVAL_DEFAULT: &str = "1h";
const REPORT_INTERVAL_DEFAULT: &str = "1h";
const REPORT_KLINES_DEFAULT: u32 = 24;
const REPORT_KLINES_MIN: u32 = 3;
const REPORT_DEPTH_DEFAULT: u32 = 100;
const REPORT_TRADES_DEFAULT: u32 = 500;

/// The tools with their descriptions and input schemas (JSON Schema draft 2020-12).
pub fn catalog() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: GET_TICKER,
            description: "Latest price and 24-hour rolling statistics (change, high, low, volume, best bid/ask) of a Binance spot symbol.",
            input_schema: object_schema(json!({"symbol": symbol_schema()})),
            output_schema: output::ticker_result(),
        },
        ToolSpec {
            name: GET_ORDER_BOOK,
            description: "Order book of a Binance spot symbol: bid and ask levels, best bid/ask, mid price, spread (absolute and in basis points), depth per side and bid/ask imbalance.",
            input_schema: object_schema(json!({
                "symbol": symbol_schema(),
                "limit": int_schema(BOOK_LIMIT_DEFAULT, 1, DEPTH_MAX, "Number of levels per side."),
            })),
            output_schema: output::order_book_result(),
        },
        ToolSpec {
            name: GET_KLINES,
            description: "Candlesticks (open, high, low, close, volume, trades) of a Binance spot symbol, most recent last.",
            input_schema: object_schema(json!({
                "symbol": symbol_schema(),
                "interval": interval_schema(KLINES_INTERVAL_DEFAULT),
                "limit": int_schema(KLINES_LIMIT_DEFAULT, 1, ROWS_MAX, "Number of candles."),
            })),
            output_schema: output::klines_result(),
        },
        ToolSpec {
            name: GET_RECENT_TRADES,
            description: "Most recent trades of a Binance spot symbol with the taker side of each, plus aggregated buy/sell flow and VWAP.",
            input_schema: object_schema(json!({
                "symbol": symbol_schema(),
                "limit": int_schema(TRADES_LIMIT_DEFAULT, 1, ROWS_MAX, "Number of trades."),
            })),
            output_schema: output::recent_trades_result(),
        },
        ToolSpec {
            name: MARKET_REPORT,
            description: "Markdown market report of a Binance spot symbol: price overview (24h), spread and depth, volatility over recent candles, and recent taker buy/sell flow. The JSON result holds the same figures.",
            input_schema: object_schema(json!({
                "symbol": symbol_schema(),
                "interval": interval_schema(REPORT_INTERVAL_DEFAULT),
                "kline_limit": int_schema(REPORT_KLINES_DEFAULT, REPORT_KLINES_MIN, ROWS_MAX, "Candles used for the volatility section."),
                "depth_limit": int_schema(REPORT_DEPTH_DEFAULT, 1, DEPTH_MAX, "Order-book levels per side used for depth and imbalance."),
                "trade_limit": int_schema(REPORT_TRADES_DEFAULT, 1, ROWS_MAX, "Recent trades used for the flow section."),
            })),
            output_schema: output::market_report_result(),
        },
    ]
}

/// Executes tools against Binance; shared by all gRPC calls.
#[derive(Clone)]
pub struct Tools {
    client: BinanceClient,
    reports: Arc<ReportCache>,
}

impl Tools {
    pub fn new(config: &Config) -> Result<Self, String> {
        Ok(Self {
            client: BinanceClient::new(config)?,
            reports: Arc::new(ReportCache::new(config.report_ttl)),
        })
    }

    /// Runs `tool` with its JSON arguments, its Binance requests bounded by `deadline`. Arguments
    /// are fully validated before Binance is called.
    pub async fn invoke(
        &self,
        tool: &str,
        arguments_json: &str,
        deadline: Deadline,
    ) -> Result<ToolOutput, ToolError> {
        let known = catalog();
        if !known.iter().any(|t| t.name == tool) {
            let names: Vec<&str> = known.iter().map(|t| t.name).collect();
            return Err(ToolError::new(
                ErrorKind::UnknownTool,
                format!(
                    "unknown tool {}; this provider offers: {}",
                    crate::echo::quoted(tool),
                    names.join(", ")
                ),
            ));
        }
        let mut args = Args::new(parse_object(arguments_json)?);
        match tool {
            GET_TICKER => {
                let symbol = args.symbol()?;
                args.finish()?;
                let t = self.client.ticker_24h(&symbol, deadline).await?;
                Ok(json_only(ticker_json(&t)))
            }
            GET_ORDER_BOOK => {
                let symbol = args.symbol()?;
                let limit = args.int("limit", BOOK_LIMIT_DEFAULT, 1, DEPTH_MAX)?;
                args.finish()?;
                let d = self.client.depth(&symbol, limit, deadline).await?;
                Ok(json_only(book_json(&symbol, limit, &d, true)))
            }
            GET_KLINES => {
                let symbol = args.symbol()?;
                let interval = args.interval(KLINES_INTERVAL_DEFAULT)?;
                let limit = args.int("limit", KLINES_LIMIT_DEFAULT, 1, ROWS_MAX)?;
                args.finish()?;
                let k = self
                    .client
                    .klines(&symbol, interval, limit, deadline)
                    .await?;
                Ok(json_only(json!({
                    "symbol": symbol,
                    "interval": interval,
                    "klines": k.iter().map(kline_json).collect::<Vec<_>>(),
                })))
            }
            GET_RECENT_TRADES => {
                let symbol = args.symbol()?;
                let limit = args.int("limit", TRADES_LIMIT_DEFAULT, 1, ROWS_MAX)?;
                args.finish()?;
                let trades = self.client.trades(&symbol, limit, deadline).await?;
                Ok(json_only(json!({
                    "symbol": symbol,
                    "trades": trades.iter().map(trade_json).collect::<Vec<_>>(),
                    "flow": analytics::flow(&flow_trades(&trades)),
                })))
            }
            MARKET_REPORT => {
                let key = ReportKey {
                    symbol: args.symbol()?,
                    interval: args.interval(REPORT_INTERVAL_DEFAULT)?,
                    kline_limit: args.int(
                        "kline_limit",
                        REPORT_KLINES_DEFAULT,
                        REPORT_KLINES_MIN,
                        ROWS_MAX,
                    )?,
                    depth_limit: args.int("depth_limit", REPORT_DEPTH_DEFAULT, 1, DEPTH_MAX)?,
                    trade_limit: args.int("trade_limit", REPORT_TRADES_DEFAULT, 1, ROWS_MAX)?,
                };
                args.finish()?;
                self.reports.get_or_build(key, &self.client, deadline).await
            }
            other => Err(ToolError::new(
                ErrorKind::Internal,
                format!("tool {other:?} is listed but has no implementation"),
            )),
        }
    }
}

fn json_only(json: Value) -> ToolOutput {
    ToolOutput {
        json,
        text: String::new(),
    }
}

pub(crate) fn ticker_json(t: &Ticker24h) -> Value {
    json!({
        "symbol": t.symbol,
        "last_price": t.last_price.0,
        "last_qty": t.last_qty.0,
        "price_change": t.price_change.0,
        "price_change_percent": t.price_change_percent.0,
        "weighted_avg_price": t.weighted_avg_price.0,
        "prev_close_price": t.prev_close_price.0,
        "open_price": t.open_price.0,
        "high_price": t.high_price.0,
        "low_price": t.low_price.0,
        "bid_price": t.bid_price.0,
        "bid_qty": t.bid_qty.0,
        "ask_price": t.ask_price.0,
        "ask_qty": t.ask_qty.0,
        "volume": t.volume.0,
        "quote_volume": t.quote_volume.0,
        "open_time": t.open_time,
        "close_time": t.close_time,
        "first_trade_id": t.first_id,
        "last_trade_id": t.last_id,
        "trade_count": t.count,
    })
}

/// Order-book analytics; `with_levels` adds the raw levels (the report leaves them out).
pub(crate) fn book_json(symbol: &str, limit: u32, d: &Depth, with_levels: bool) -> Value {
    let bids: Vec<(f64, f64)> = d.bids.iter().map(|(p, q)| (p.0, q.0)).collect();
    let asks: Vec<(f64, f64)> = d.asks.iter().map(|(p, q)| (p.0, q.0)).collect();
    let s = analytics::spread(bids.first().map(|l| l.0), asks.first().map(|l| l.0));
    let (bid_qty, bid_notional) = analytics::depth(&bids);
    let (ask_qty, ask_notional) = analytics::depth(&asks);
    let mut v = json!({
        "symbol": symbol,
        "last_update_id": d.last_update_id,
        "limit": limit,
        "best_bid": bids.first().map(|l| l.0),
        "best_bid_qty": bids.first().map(|l| l.1),
        "best_ask": asks.first().map(|l| l.0),
        "best_ask_qty": asks.first().map(|l| l.1),
        "mid": s.map(|s| s.mid),
        "spread": s.map(|s| s.spread),
        "spread_bps": s.map(|s| s.spread_bps),
        "bid_depth": {"levels": bids.len(), "qty": bid_qty, "notional": bid_notional},
        "ask_depth": {"levels": asks.len(), "qty": ask_qty, "notional": ask_notional},
        "imbalance": analytics::imbalance(bid_qty, ask_qty),
    });
    if with_levels {
        let levels = |side: &[(f64, f64)]| {
            side.iter()
                .map(|(p, q)| json!({"price": p, "qty": q}))
                .collect::<Vec<_>>()
        };
        v["bids"] = Value::from(levels(&bids));
        v["asks"] = Value::from(levels(&asks));
    }
    v
}

fn kline_json(k: &Kline) -> Value {
    json!({
        "open_time": k.0,
        "open": k.1.0,
        "high": k.2.0,
        "low": k.3.0,
        "close": k.4.0,
        "volume": k.5.0,
        "close_time": k.6,
        "quote_volume": k.7.0,
        "trades": k.8,
        "taker_buy_base_volume": k.9.0,
        "taker_buy_quote_volume": k.10.0,
    })
}

fn trade_json(t: &Trade) -> Value {
    json!({
        "id": t.id,
        "price": t.price.0,
        "qty": t.qty.0,
        "quote_qty": t.quote_qty.0,
        "time": t.time,
        // isBuyerMaker means the resting order was the buy, so the aggressor (taker) sold.
        "taker_side": if t.is_buyer_maker { "sell" } else { "buy" },
        "is_buyer_maker": t.is_buyer_maker,
    })
}

pub(crate) fn flow_trades(trades: &[Trade]) -> Vec<FlowTrade> {
    trades
        .iter()
        .map(|t| FlowTrade {
            price: t.price.0,
            qty: t.qty.0,
            buyer_is_maker: t.is_buyer_maker,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_is_a_closed_object_requiring_symbol() {
        let tools = catalog();
        assert_eq!(tools.len(), 5);
        for t in tools {
            assert!(t.name.starts_with("binance."), "{}", t.name);
            let s = &t.input_schema;
            assert_eq!(s["type"], "object");
            assert_eq!(s["additionalProperties"], false);
            assert_eq!(s["required"], json!(["symbol"]));
            assert_eq!(s["properties"]["symbol"]["pattern"], SYMBOL_PATTERN);
        }
    }

    fn soon() -> Deadline {
        Deadline::after(std::time::Duration::from_secs(5))
    }

    #[tokio::test]
    async fn the_input_schemas_accept_exactly_what_the_tools_accept() {
        // A client that validates against the published schema and one that does not must get
        // the same answer. Valid arguments get past validation and fail only at the (closed) port.
        let config = Config {
            max_retries: 0,
            ..Config::new("http://127.0.0.1:9")
        };
        let tools = Tools::new(&config).unwrap();
        let symbols = [
            json!("BTCUSDT"),
            json!("btcusdt"),
            json!("1000SATSUSDT"),
            json!(" btcusdt "),
            json!("BTCUSDT\n"),
            json!("BTC-USDT"),
            json!("B"),
            json!("ABCDEFGHIJKLMNOPQRST"),
            json!("ABCDEFGHIJKLMNOPQRSTU"),
            json!("ÄBC"),
            json!(""),
            json!(null),
            json!(7),
        ];
        let optional = [
            json!(1),
            json!(100),
            json!(1000),
            json!(5000),
            json!(5001),
            json!(0),
            json!(-1),
            json!(7.0),
            json!(2.5),
            json!("10"),
            json!(null),
            json!(true),
            json!("1h"),
            json!("1M"),
            json!("1H"),
            json!("2m"),
        ];
        let mut cases: Vec<(&str, Value)> = Vec::new();
        for t in catalog() {
            for s in &symbols {
                cases.push((t.name, json!({ "symbol": s })));
            }
            cases.push((t.name, json!({})));
            cases.push((t.name, json!({"symbol": "BTCUSDT", "extra": 1})));
            let names: Vec<String> = t.input_schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "symbol")
                .cloned()
                .collect();
            for name in names {
                for v in &optional {
                    cases.push((t.name, json!({"symbol": "BTCUSDT", name.clone(): v})));
                }
            }
        }
        let schemas: std::collections::HashMap<&str, Value> = catalog()
            .into_iter()
            .map(|t| (t.name, t.input_schema))
            .collect();
        for (tool, args) in cases {
            let by_schema = jsonschema::is_valid(&schemas[tool], &args);
            let by_code = match tools.invoke(tool, &args.to_string(), soon()).await {
                Err(e) => e.kind != ErrorKind::InvalidArguments,
                Ok(_) => true,
            };
            assert_eq!(by_schema, by_code, "{tool} {args}: schema vs code");
        }
    }

    #[tokio::test]
    async fn validation_happens_before_any_upstream_call() {
        // Port 9 (discard) on loopback is closed: a request would fail as unavailable, not invalid.
        let tools = Tools::new(&Config::new("http://127.0.0.1:9")).unwrap();
        let cases = [
            (GET_TICKER, r#"{}"#, "missing required argument"),
            (
                GET_ORDER_BOOK,
                r#"{"symbol":"BTCUSDT","limit":0}"#,
                "limit must be",
            ),
            (
                GET_KLINES,
                r#"{"symbol":"BTCUSDT","interval":"2m"}"#,
                "interval \"2m\"",
            ),
            (
                GET_RECENT_TRADES,
                r#"{"symbol":"BTC_USDT"}"#,
                "\"BTC_USDT\"",
            ),
            (
                MARKET_REPORT,
                r#"{"symbol":"BTCUSDT","kline_limit":2}"#,
                "kline_limit must be an integer from 3 to 1000",
            ),
            (
                GET_TICKER,
                r#"{"symbol":"BTCUSDT","x":1}"#,
                "unknown argument(s) \"x\"",
            ),
            (GET_TICKER, r#"["BTCUSDT"]"#, "must be a JSON object"),
        ];
        for (tool, args, want) in cases {
            let e = tools.invoke(tool, args, soon()).await.unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArguments, "{tool} {args}: {e}");
            assert!(e.message.contains(want), "{tool} {args}: {e}");
        }
        let e = tools
            .invoke("binance.nope", "{}", soon())
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::UnknownTool);
        assert!(e.message.contains("binance.get_ticker"));
    }
}
