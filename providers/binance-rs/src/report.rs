//! `binance.market_report`: fetches ticker, book, klines and trades concurrently, computes the
//! analytics and renders markdown. Finished reports are cached briefly per symbol and options, and
//! concurrent identical calls share one upstream round (single-flight).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::OnceCell;

use crate::analytics::{self, Flow, Volatility};
use crate::args::interval_seconds;
use crate::binance::{BinanceClient, Deadline};
use crate::tools::{ErrorKind, ToolError, ToolOutput, book_json, flow_trades, ticker_json};

/// What makes two report calls identical.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReportKey {
    pub symbol: String,
    pub interval: &'static str,
    pub kline_limit: u32,
    pub depth_limit: u32,
    pub trade_limit: u32,
}

type Slot = Arc<OnceCell<(Instant, Result<ToolOutput, ToolError>)>>;

/// Single-flight TTL cache of reports.
pub struct ReportCache {
    ttl: Duration,
    slots: Mutex<HashMap<ReportKey, Slot>>,
}

impl ReportCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Returns a fresh cached report, joins a report being built, or builds a new one.
    ///
    /// Errors are shared with the callers that waited for the same build but are not kept:
    /// the next call after a failure tries Binance again. A build runs within the deadline of
    /// the call that started it; each caller still waits no longer than its own.
    pub async fn get_or_build(
        &self,
        key: ReportKey,
        client: &BinanceClient,
        deadline: Deadline,
    ) -> Result<ToolOutput, ToolError> {
        let slot = self.slot(&key)?;
        let (_, result) = slot
            .get_or_init(|| async {
                let result = build(&key, client, deadline).await;
                (Instant::now(), result)
            })
            .await;
        if result.is_err() {
            let mut slots = self.lock()?;
            if slots.get(&key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                slots.remove(&key);
            }
        }
        result.clone()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<ReportKey, Slot>>, ToolError> {
        self.slots
            .lock()
            .map_err(|_| ToolError::new(ErrorKind::Internal, "report cache lock poisoned"))
    }

    /// The slot to use for `key`: an in-flight or fresh one, else a new empty one.
    fn slot(&self, key: &ReportKey) -> Result<Slot, ToolError> {
        let mut slots = self.lock()?;
        let usable = |s: &Slot| match s.get() {
            None => true,
            Some((built, result)) => result.is_ok() && built.elapsed() < self.ttl,
        };
        // Drop finished entries that are stale so the map stays as small as the set of hot keys.
        slots.retain(|_, s| usable(s));
        if let Some(s) = slots.get(key) {
            return Ok(Arc::clone(s));
        }
        let s: Slot = Arc::new(OnceCell::new());
        slots.insert(key.clone(), Arc::clone(&s));
        Ok(s)
    }
}

/// One upstream round: four concurrent requests, then the analytics and the markdown.
async fn build(
    key: &ReportKey,
    client: &BinanceClient,
    deadline: Deadline,
) -> Result<ToolOutput, ToolError> {
    let (ticker, depth, klines, trades) = tokio::try_join!(
        client.ticker_24h(&key.symbol, deadline),
        client.depth(&key.symbol, key.depth_limit, deadline),
        client.klines(&key.symbol, key.interval, key.kline_limit, deadline),
        client.trades(&key.symbol, key.trade_limit, deadline),
    )?;
    let generated_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);

    let closes: Vec<f64> = klines.iter().map(|k| k.4.0).collect();
    let per_year = 365.25 * 86_400.0 / interval_seconds(key.interval).unwrap_or(3_600.0);
    let vol = analytics::volatility(&closes, per_year);
    let window_high = klines.iter().map(|k| k.2.0).fold(f64::NAN, f64::max);
    let window_low = klines.iter().map(|k| k.3.0).fold(f64::NAN, f64::min);
    let window_change_pct = match (klines.first(), klines.last()) {
        (Some(first), Some(last)) if first.1.0 > 0.0 => {
            Some((last.4.0 - first.1.0) / first.1.0 * 100.0)
        }
        _ => None,
    };
    let flow = analytics::flow(&flow_trades(&trades));
    let book = book_json(&key.symbol, key.depth_limit, &depth, false);

    let json = json!({
        "symbol": key.symbol,
        "generated_at": iso8601(generated_ms),
        "options": {
            "interval": key.interval,
            "kline_limit": key.kline_limit,
            "depth_limit": key.depth_limit,
            "trade_limit": key.trade_limit,
        },
        "ticker": ticker_json(&ticker),
        "book": book,
        "volatility": {
            "klines": klines.len(),
            "interval": key.interval,
            "returns": vol.map(|v| v.returns),
            "stdev_per_interval": vol.map(|v| v.stdev_per_interval),
            "annualized": vol.map(|v| v.annualized),
            "window_high": finite(window_high),
            "window_low": finite(window_low),
            "window_change_percent": window_change_pct,
        },
        "flow": flow,
    });
    let text = render(key, &json, vol, &flow);
    Ok(ToolOutput { json, text })
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Formats a number with up to 8 decimals, trailing zeros trimmed.
fn num(v: f64) -> String {
    let s = format!("{v:.8}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

fn opt(v: &Value, digits: usize, suffix: &str) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.digits$}{suffix}"),
        None => "n/a".into(),
    }
}

fn numv(v: &Value) -> String {
    v.as_f64().map_or_else(|| "n/a".into(), num)
}

fn render(key: &ReportKey, j: &Value, vol: Option<Volatility>, flow: &Flow) -> String {
    let t = &j["ticker"];
    let b = &j["book"];
    let v = &j["volatility"];
    let mut md = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(md, "# {} market report\n", key.symbol);
    let _ = writeln!(
        md,
        "_Binance spot data, generated {}; {} × {} candles, {} book levels, {} recent trades._\n",
        j["generated_at"].as_str().unwrap_or(""),
        key.kline_limit,
        key.interval,
        key.depth_limit,
        key.trade_limit
    );

    let _ = writeln!(md, "## Price overview (24h)\n");
    let _ = writeln!(md, "| metric | value |\n| --- | --- |");
    let _ = writeln!(md, "| last price | {} |", numv(&t["last_price"]));
    let _ = writeln!(
        md,
        "| change | {} ({}) |",
        numv(&t["price_change"]),
        opt(&t["price_change_percent"], 2, " %")
    );
    let _ = writeln!(
        md,
        "| high / low | {} / {} |",
        numv(&t["high_price"]),
        numv(&t["low_price"])
    );
    let _ = writeln!(
        md,
        "| weighted average price | {} |",
        numv(&t["weighted_avg_price"])
    );
    let _ = writeln!(
        md,
        "| volume (base / quote) | {} / {} |",
        numv(&t["volume"]),
        numv(&t["quote_volume"])
    );
    let _ = writeln!(md, "| trades | {} |\n", t["trade_count"]);

    let _ = writeln!(md, "## Spread and depth\n");
    let _ = writeln!(md, "| metric | value |\n| --- | --- |");
    let _ = writeln!(
        md,
        "| best bid / ask | {} / {} |",
        numv(&b["best_bid"]),
        numv(&b["best_ask"])
    );
    let _ = writeln!(md, "| mid price | {} |", numv(&b["mid"]));
    let _ = writeln!(
        md,
        "| spread | {} ({}) |",
        numv(&b["spread"]),
        opt(&b["spread_bps"], 2, " bps")
    );
    let _ = writeln!(
        md,
        "| bid depth ({} levels) | {} base, {} quote |",
        b["bid_depth"]["levels"],
        numv(&b["bid_depth"]["qty"]),
        numv(&b["bid_depth"]["notional"])
    );
    let _ = writeln!(
        md,
        "| ask depth ({} levels) | {} base, {} quote |",
        b["ask_depth"]["levels"],
        numv(&b["ask_depth"]["qty"]),
        numv(&b["ask_depth"]["notional"])
    );
    let lean = match b["imbalance"].as_f64() {
        Some(x) if x > 0.1 => " (bids heavier)",
        Some(x) if x < -0.1 => " (asks heavier)",
        Some(_) => " (balanced)",
        None => "",
    };
    let _ = writeln!(
        md,
        "| imbalance (-1 asks … +1 bids) | {}{lean} |\n",
        opt(&b["imbalance"], 3, "")
    );

    let _ = writeln!(md, "## Volatility ({} candles)\n", key.interval);
    let _ = writeln!(md, "| metric | value |\n| --- | --- |");
    match vol {
        Some(vol) => {
            let _ = writeln!(
                md,
                "| stdev of log returns per candle | {:.3} % |",
                vol.stdev_per_interval * 100.0
            );
            let _ = writeln!(md, "| annualized | {:.1} % |", vol.annualized * 100.0);
        }
        None => {
            let _ = writeln!(
                md,
                "| stdev of log returns | n/a (fewer than 3 candles with positive closes) |"
            );
        }
    }
    let _ = writeln!(
        md,
        "| window high / low | {} / {} |",
        numv(&v["window_high"]),
        numv(&v["window_low"])
    );
    let _ = writeln!(
        md,
        "| window change (first open → last close) | {} |\n",
        opt(&v["window_change_percent"], 2, " %")
    );

    let _ = writeln!(md, "## Recent flow ({} trades)\n", flow.trades);
    let _ = writeln!(md, "| metric | value |\n| --- | --- |");
    let _ = writeln!(
        md,
        "| taker buys | {} trades, {} base |",
        flow.buy_trades,
        num(flow.buy_qty)
    );
    let _ = writeln!(
        md,
        "| taker sells | {} trades, {} base |",
        flow.sell_trades,
        num(flow.sell_qty)
    );
    let _ = writeln!(
        md,
        "| buy share of volume | {} |",
        flow.buy_share
            .map_or_else(|| "n/a".into(), |s| format!("{:.1} %", s * 100.0))
    );
    let _ = writeln!(
        md,
        "| VWAP | {} |",
        flow.vwap.map_or_else(|| "n/a".into(), num)
    );
    md
}

/// `2026-11-28T13:45:00.123Z` from milliseconds since the Unix epoch (proleptic Gregorian, UTC).
fn iso8601(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_499_040_000_000), "2017-07-03T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
    }

    #[test]
    fn numbers_are_trimmed() {
        assert_eq!(num(4.000002), "4.000002");
        assert_eq!(num(100.0), "100");
        assert_eq!(num(-0.0), "0");
    }
}
