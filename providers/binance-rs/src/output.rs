//! JSON Schemas (draft 2020-12) of the tools' results (`ToolResult.json`), published as each MCP
//! tool's `outputSchema`.
//!
//! Objects are closed (`additionalProperties: false`) and list every field as required, so the
//! schema documents the whole result and the tests, which validate every tool's real result
//! against it, catch a field added to a result but not to its schema. A figure that cannot be
//! computed (an empty book side, no traded quantity) is `null`, never absent.

use serde_json::{Map, Value, json};

use crate::args::INTERVALS;

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// An object whose every property is required and which allows no others.
fn closed(description: &str, properties: Value) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .map_or(Vec::new(), |p| p.keys().collect());
    json!({
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

/// `schema` as a document: the top-level object with its `$schema`.
fn document(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        let mut doc = Map::new();
        doc.insert("$schema".into(), DRAFT.into());
        doc.append(map);
        return Value::Object(doc);
    }
    schema
}

fn number(description: &str) -> Value {
    json!({"type": "number", "description": description})
}

fn maybe_number(description: &str) -> Value {
    json!({"type": ["number", "null"], "description": description})
}

fn integer(description: &str) -> Value {
    json!({"type": "integer", "description": description})
}

fn count() -> Value {
    json!({"type": "integer", "minimum": 0})
}

fn millis(description: &str) -> Value {
    json!({"type": "integer", "description": format!("{description}, ms since the Unix epoch")})
}

fn symbol() -> Value {
    json!({"type": "string", "description": "The symbol, upper-cased as sent to Binance."})
}

fn interval() -> Value {
    let names: Vec<&str> = INTERVALS.iter().map(|(n, _)| *n).collect();
    json!({"type": "string", "enum": names})
}

fn ticker() -> Value {
    closed(
        "24-hour rolling statistics (prices in the quote asset, quantities in the base asset).",
        json!({
            "symbol": symbol(),
            "last_price": number("Last traded price."),
            "last_qty": number("Quantity of the last trade."),
            "price_change": number("Last price minus the price 24 h ago."),
            "price_change_percent": number("The change in percent."),
            "weighted_avg_price": number("Volume-weighted average price over 24 h."),
            "prev_close_price": number("Close of the previous day."),
            "open_price": number("Price 24 h ago."),
            "high_price": number("24 h high."),
            "low_price": number("24 h low."),
            "bid_price": number("Best bid."),
            "bid_qty": number("Quantity at the best bid."),
            "ask_price": number("Best ask."),
            "ask_qty": number("Quantity at the best ask."),
            "volume": number("24 h volume in the base asset."),
            "quote_volume": number("24 h volume in the quote asset."),
            "open_time": millis("Start of the window"),
            "close_time": millis("End of the window"),
            "first_trade_id": integer("First trade in the window (-1 when none)."),
            "last_trade_id": integer("Last trade in the window (-1 when none)."),
            "trade_count": count(),
        }),
    )
}

fn side_depth() -> Value {
    closed(
        "One side of the book over the returned levels.",
        json!({
            "levels": count(),
            "qty": number("Total base quantity."),
            "notional": number("Sum of price × quantity, in the quote asset."),
        }),
    )
}

/// The book analytics; `with_levels` adds the raw levels (`get_order_book`; the report omits them).
fn book(with_levels: bool) -> Value {
    let mut properties = json!({
        "symbol": symbol(),
        "last_update_id": integer("Binance's book update id."),
        "limit": integer("Levels requested per side."),
        "best_bid": maybe_number("Highest bid (null when there are no bids)."),
        "best_bid_qty": maybe_number("Quantity at the best bid."),
        "best_ask": maybe_number("Lowest ask (null when there are no asks)."),
        "best_ask_qty": maybe_number("Quantity at the best ask."),
        "mid": maybe_number("(best bid + best ask) / 2; null without both sides."),
        "spread": maybe_number("Best ask minus best bid."),
        "spread_bps": maybe_number("The spread relative to the mid, in basis points."),
        "bid_depth": side_depth(),
        "ask_depth": side_depth(),
        "imbalance": maybe_number("(bid qty - ask qty) / (bid qty + ask qty), from -1 to 1; null for an empty book."),
    });
    if with_levels {
        let levels = |description: &str| {
            json!({
                "type": "array",
                "description": description,
                "items": closed("One price level.", json!({"price": number("Price."), "qty": number("Base quantity.")})),
            })
        };
        properties["bids"] = levels("Bids, best (highest) first.");
        properties["asks"] = levels("Asks, best (lowest) first.");
    }
    closed("Order book analytics.", properties)
}

fn flow() -> Value {
    closed(
        "Taker flow of the trades: a taker buy lifted an ask, a taker sell hit a bid.",
        json!({
            "trades": count(),
            "buy_trades": count(),
            "sell_trades": count(),
            "buy_qty": number("Base quantity bought by takers."),
            "sell_qty": number("Base quantity sold by takers."),
            "buy_share": maybe_number("buy_qty / (buy_qty + sell_qty), 0 to 1; null when nothing traded."),
            "vwap": maybe_number("Volume-weighted average price; null when nothing traded."),
        }),
    )
}

/// Result of `binance.get_ticker`.
pub fn ticker_result() -> Value {
    document(ticker())
}

/// Result of `binance.get_order_book`.
pub fn order_book_result() -> Value {
    document(book(true))
}

/// Result of `binance.get_klines`.
pub fn klines_result() -> Value {
    let candle = closed(
        "One candle.",
        json!({
            "open_time": millis("Open time"),
            "open": number("Open price."),
            "high": number("High price."),
            "low": number("Low price."),
            "close": number("Close price."),
            "volume": number("Volume in the base asset."),
            "close_time": millis("Close time"),
            "quote_volume": number("Volume in the quote asset."),
            "trades": count(),
            "taker_buy_base_volume": number("Base volume bought by takers."),
            "taker_buy_quote_volume": number("Quote volume bought by takers."),
        }),
    );
    document(closed(
        "Candlesticks, oldest first.",
        json!({
            "symbol": symbol(),
            "interval": interval(),
            "klines": {"type": "array", "items": candle},
        }),
    ))
}

/// Result of `binance.get_recent_trades`.
pub fn recent_trades_result() -> Value {
    let trade = closed(
        "One trade.",
        json!({
            "id": integer("Binance's trade id."),
            "price": number("Price."),
            "qty": number("Base quantity."),
            "quote_qty": number("Quote quantity."),
            "time": millis("Trade time"),
            "taker_side": {"type": "string", "enum": ["buy", "sell"], "description": "The aggressor's side."},
            "is_buyer_maker": {"type": "boolean", "description": "Binance's isBuyerMaker (true: the taker sold)."},
        }),
    );
    document(closed(
        "Recent trades, oldest first, and their taker flow.",
        json!({
            "symbol": symbol(),
            "trades": {"type": "array", "items": trade},
            "flow": flow(),
        }),
    ))
}

/// Result of `binance.market_report` (the JSON beside the markdown).
pub fn market_report_result() -> Value {
    document(closed(
        "The report's figures; ToolResult.text holds the same as markdown.",
        json!({
            "symbol": symbol(),
            "generated_at": {"type": "string", "format": "date-time", "description": "When the report was built (UTC)."},
            "options": closed("The options the report was built with.", json!({
                "interval": interval(),
                "kline_limit": count(),
                "depth_limit": count(),
                "trade_limit": count(),
            })),
            "ticker": ticker(),
            "book": book(false),
            "volatility": closed("Volatility of log returns of the candle closes.", json!({
                "klines": count(),
                "interval": interval(),
                "returns": {"type": ["integer", "null"], "minimum": 0, "description": "Log returns used; null with fewer than 3 positive closes."},
                "stdev_per_interval": maybe_number("Sample standard deviation per candle, as a fraction (0.01 = 1 %)."),
                "annualized": maybe_number("The standard deviation scaled to a year, as a fraction."),
                "window_high": maybe_number("Highest high of the candles."),
                "window_low": maybe_number("Lowest low of the candles."),
                "window_change_percent": maybe_number("First open to last close, in percent."),
            })),
            "flow": flow(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics;
    use crate::binance::Depth;
    use crate::tools::book_json;

    fn assert_valid(schema: &Value, instance: &Value) {
        let validator = jsonschema::validator_for(schema).expect("schema compiles");
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?} in {instance}");
    }

    #[test]
    fn an_empty_book_and_no_trades_validate_with_nulls() {
        // The null branches the fake Binance never produces: no levels on either side, no trades.
        let empty = Depth {
            last_update_id: 7,
            bids: Vec::new(),
            asks: Vec::new(),
        };
        let book = book_json("BTCUSDT", 5, &empty, true);
        assert!(book["mid"].is_null() && book["imbalance"].is_null());
        assert_valid(&order_book_result(), &book);
        let trades = json!({"symbol": "BTCUSDT", "trades": [], "flow": analytics::flow(&[])});
        assert_valid(&recent_trades_result(), &trades);
    }

    #[test]
    fn every_object_lists_all_its_properties_as_required() {
        fn walk(v: &Value, path: &str) {
            if let Some(props) = v.get("properties").and_then(Value::as_object) {
                let required: Vec<&str> = v["required"]
                    .as_array()
                    .expect("required")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert_eq!(required.len(), props.len(), "{path}");
                assert_eq!(v["additionalProperties"], false, "{path}");
                for (name, p) in props {
                    walk(p, &format!("{path}.{name}"));
                }
            }
            if let Some(items) = v.get("items") {
                walk(items, &format!("{path}[]"));
            }
        }
        for (name, schema) in [
            ("ticker", ticker_result()),
            ("order_book", order_book_result()),
            ("klines", klines_result()),
            ("recent_trades", recent_trades_result()),
            ("market_report", market_report_result()),
        ] {
            assert_eq!(schema["$schema"], DRAFT, "{name}");
            walk(&schema, name);
        }
    }
}
