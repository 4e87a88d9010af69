//! Argument parsing and validation for the tools, with messages that name the bad value and what is valid.
//!
//! Symbols are accepted in any case and upper-cased before validation ("btcusdt" means "BTCUSDT"), because
//! Binance symbols are upper-case and MCP clients often type them lower-case. Nothing else is
//! normalized: what the input schemas accept is exactly what the tools accept, so a client that
//! validates against the schema and one that does not get the same answer.
//!
//! Every value quoted back in an error is bounded ([`crate::echo`]).

use serde_json::{Map, Value};

use crate::echo::{self, quoted};

/// Binance kline intervals (`/api/v3/klines` `interval` enum), with their length in seconds.
/// `1M` is a calendar month; 30.4375 days is its average, used only to annualize volatility.
pub const INTERVALS: &[(&str, f64)] = &[
    ("1s", 1.0),
    ("1m", 60.0),
    ("3m", 180.0),
    ("5m", 300.0),
    ("15m", 900.0),
    ("30m", 1_800.0),
    ("1h", 3_600.0),
    ("2h", 7_200.0),
    ("4h", 14_400.0),
    ("6h", 21_600.0),
    ("8h", 28_800.0),
    ("12h", 43_200.0),
    ("1d", 86_400.0),
    ("3d", 259_200.0),
    ("1w", 604_800.0),
    ("1M", 2_629_800.0),
];

/// The JSON Schema pattern of a symbol as the client may send it (case-insensitive).
pub const SYMBOL_PATTERN: &str = "^[A-Za-z0-9]{2,20}$";

/// How many unknown argument names an error lists before it only counts them.
const UNKNOWN_NAMED: usize = 5;

/// An argument problem, reported as INVALID_ARGUMENTS.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArgError(pub String);

/// Seconds in one kline interval; `None` for an interval Binance does not have.
pub fn interval_seconds(interval: &str) -> Option<f64> {
    INTERVALS
        .iter()
        .find(|(name, _)| *name == interval)
        .map(|(_, s)| *s)
}

/// Validates and normalizes a trading-pair symbol: 2 to 20 letters or digits ([`SYMBOL_PATTERN`]),
/// upper-cased. Surrounding whitespace is refused like any other character, as the pattern does.
pub fn normalize_symbol(raw: &str) -> Result<String, ArgError> {
    let ok = (2..=20).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(raw.to_ascii_uppercase())
    } else {
        let hint = if raw.trim() != raw {
            " (remove the surrounding whitespace)"
        } else {
            ""
        };
        Err(ArgError(format!(
            "symbol {} is not a Binance symbol: expected 2 to 20 letters or digits, e.g. \"BTCUSDT\"{hint}",
            quoted(raw)
        )))
    }
}

/// Optional arguments are omitted for their default, as the schemas say (`null` is not a value
/// of their type): a caller that sent `null` is told so.
fn null_hint(v: &Value, name: &str, default: &str) -> String {
    if v.is_null() {
        format!(" (omit {name} for the default, {default})")
    } else {
        String::new()
    }
}

/// A JSON value as written in an error message, bounded.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => quoted(s),
        other => echo::clip(&other.to_string(), echo::ARG_MAX_CHARS).into_owned(),
    }
}

/// Parses the `arguments_json` of an Invoke call into an object; empty input means `{}`.
pub fn parse_object(arguments_json: &str) -> Result<Map<String, Value>, ArgError> {
    if arguments_json.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments_json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ArgError(format!(
            "arguments must be a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(ArgError(format!("arguments are not valid JSON: {e}"))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads the arguments of one tool call, remembering which names it knows so [`Args::finish`] can
/// reject the rest (the schemas say `additionalProperties: false`).
pub struct Args {
    map: Map<String, Value>,
    known: Vec<&'static str>,
}

impl Args {
    pub fn new(map: Map<String, Value>) -> Self {
        Self {
            map,
            known: Vec::new(),
        }
    }

    /// The required `symbol` argument, normalized.
    pub fn symbol(&mut self) -> Result<String, ArgError> {
        self.known.push("symbol");
        match self.map.get("symbol") {
            None | Some(Value::Null) => Err(ArgError(
                "missing required argument \"symbol\" (e.g. \"BTCUSDT\")".into(),
            )),
            Some(Value::String(s)) => normalize_symbol(s),
            Some(other) => Err(ArgError(format!(
                "symbol must be a string like \"BTCUSDT\", got {}",
                kind(other)
            ))),
        }
    }

    /// An optional integer argument within `min..=max`, `default` when absent.
    pub fn int(
        &mut self,
        name: &'static str,
        default: u32,
        min: u32,
        max: u32,
    ) -> Result<u32, ArgError> {
        self.known.push(name);
        let Some(value) = self.map.get(name) else {
            return Ok(default);
        };
        let range = || format!("an integer from {min} to {max}");
        // Accept 10 and 10.0 (some JSON encoders write integral floats), nothing fractional.
        let n = match value {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            _ => None,
        };
        match n {
            Some(n) if n >= i64::from(min) && n <= i64::from(max) => Ok(n as u32),
            _ => Err(ArgError(format!(
                "{name} must be {}, got {}{}",
                range(),
                shown(value),
                null_hint(value, name, &default.to_string())
            ))),
        }
    }

    /// The optional kline `interval`, `default` when absent.
    pub fn interval(&mut self, default: &'static str) -> Result<&'static str, ArgError> {
        self.known.push("interval");
        let valid = || {
            INTERVALS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.map.get("interval") {
            None => Ok(default),
            Some(Value::String(s)) => INTERVALS
                .iter()
                .find(|(n, _)| *n == s.as_str())
                .map(|(n, _)| *n)
                .ok_or_else(|| {
                    ArgError(format!(
                        "interval {} is not a Binance kline interval; valid: {}",
                        quoted(s),
                        valid()
                    ))
                }),
            Some(other) => Err(ArgError(format!(
                "interval must be a string (one of {}), got {}{}",
                valid(),
                kind(other),
                null_hint(other, "interval", default)
            ))),
        }
    }

    /// Rejects arguments the tool does not know, naming them and the known ones.
    pub fn finish(self) -> Result<(), ArgError> {
        let mut unknown: Vec<&str> = self
            .map
            .keys()
            .map(String::as_str)
            .filter(|k| !self.known.contains(k))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        // A caller may send any number of names of any length: name a few, count the rest.
        let mut named: Vec<String> = unknown
            .iter()
            .take(UNKNOWN_NAMED)
            .map(|k| quoted(k))
            .collect();
        if unknown.len() > UNKNOWN_NAMED {
            named.push(format!("and {} more", unknown.len() - UNKNOWN_NAMED));
        }
        Err(ArgError(format!(
            "unknown argument(s) {}; this tool accepts: {}",
            named.join(", "),
            self.known.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Args {
        Args::new(v.as_object().cloned().expect("object"))
    }

    #[test]
    fn symbols_are_upper_cased_and_checked() {
        assert_eq!(normalize_symbol("btcusdt").unwrap(), "BTCUSDT");
        assert_eq!(normalize_symbol("EthBtc").unwrap(), "ETHBTC");
        assert_eq!(normalize_symbol("1000SATSUSDT").unwrap(), "1000SATSUSDT");
        for bad in [
            "",
            "B",
            "BTC-USDT",
            "BTC/USDT",
            "ÄBC",
            "ABCDEFGHIJKLMNOPQRSTU",
            " btcusdt ",
            "BTCUSDT\n",
        ] {
            let e = normalize_symbol(bad).unwrap_err();
            assert!(e.0.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(
            normalize_symbol(" btcusdt ")
                .unwrap_err()
                .0
                .contains("remove the surrounding whitespace")
        );
    }

    #[test]
    fn echoed_values_are_bounded() {
        let huge = "A".repeat(1 << 20);
        let marker = "(1048576 characters)";
        let errors = [
            normalize_symbol(&huge).unwrap_err(),
            args(json!({"limit": huge}))
                .int("limit", 1, 1, 5)
                .unwrap_err(),
            args(json!({"interval": huge})).interval("1h").unwrap_err(),
            args(json!({ huge.clone(): 1 })).finish().unwrap_err(),
        ];
        for e in errors {
            assert!(e.0.len() < 400, "{} bytes", e.0.len());
            assert!(e.0.contains(marker), "{}", e.0);
        }
        let mut many = Map::new();
        for i in 0..10_000 {
            many.insert(format!("k{i:05}"), json!(1));
        }
        let e = Args::new(many).finish().unwrap_err();
        assert!(
            e.0.contains("\"k00000\"") && e.0.contains("and 9995 more"),
            "{e}"
        );
    }

    #[test]
    fn missing_or_mistyped_symbol() {
        assert!(args(json!({})).symbol().unwrap_err().0.contains("missing"));
        assert!(
            args(json!({"symbol": 5}))
                .symbol()
                .unwrap_err()
                .0
                .contains("a number")
        );
    }

    #[test]
    fn integer_limits() {
        assert_eq!(args(json!({})).int("limit", 100, 1, 5000).unwrap(), 100);
        assert_eq!(
            args(json!({"limit": 5000}))
                .int("limit", 100, 1, 5000)
                .unwrap(),
            5000
        );
        assert_eq!(
            args(json!({"limit": 7.0}))
                .int("limit", 100, 1, 5000)
                .unwrap(),
            7
        );
        for bad in [
            json!(0),
            json!(5001),
            json!(-1),
            json!(2.5),
            json!("10"),
            json!(true),
        ] {
            let e = args(json!({ "limit": bad }))
                .int("limit", 100, 1, 5000)
                .unwrap_err();
            assert!(e.0.contains("from 1 to 5000"), "{e}");
            assert!(e.0.contains(&bad.to_string()), "{e}");
        }
    }

    #[test]
    fn intervals_are_binance_enums() {
        assert_eq!(args(json!({})).interval("1h").unwrap(), "1h");
        assert_eq!(
            args(json!({"interval": "1M"})).interval("1h").unwrap(),
            "1M"
        );
        let e = args(json!({"interval": "7m"})).interval("1h").unwrap_err();
        assert!(e.0.contains("\"7m\"") && e.0.contains("15m"), "{e}");
        assert!(args(json!({"interval": 5})).interval("1h").is_err());
        assert_eq!(interval_seconds("1h"), Some(3600.0));
        assert_eq!(interval_seconds("1H"), None);
    }

    #[test]
    fn unknown_arguments_are_named() {
        let mut a = args(json!({"symbol": "BTCUSDT", "depth": 3, "foo": 1}));
        a.symbol().unwrap();
        let e = a.finish().unwrap_err();
        assert!(e.0.contains("\"depth\", \"foo\""), "{e}");
        assert!(e.0.contains("accepts: symbol"), "{e}");
    }

    #[test]
    fn arguments_must_be_an_object() {
        assert!(parse_object("").unwrap().is_empty());
        assert!(parse_object("[]").unwrap_err().0.contains("an array"));
        assert!(parse_object("{").unwrap_err().0.contains("not valid JSON"));
    }
}
