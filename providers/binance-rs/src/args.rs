//! Argument parsing and validation for the tools, with messages that name the bad value and what is valid.
//!
//! Symbols are accepted in any case and upper-cased before validation ("btcusdt" means "BTCUSDT"), because
//! Binance symbols are upper-case and MCP clients often type them lower-case.

use serde_json::{Map, Value};

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

/// Validates and normalizes a trading-pair symbol: upper-cased, 2 to 20 letters or digits.
pub fn normalize_symbol(raw: &str) -> Result<String, ArgError> {
    let symbol = raw.trim().to_ascii_uppercase();
    let ok = (2..=20).contains(&symbol.len()) && symbol.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(symbol)
    } else {
        Err(ArgError(format!(
            "symbol {raw:?} is not a Binance symbol: expected 2 to 20 letters or digits, e.g. \"BTCUSDT\""
        )))
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
        let value = match self.map.get(name) {
            None | Some(Value::Null) => return Ok(default),
            Some(v) => v,
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
            _ => Err(ArgError(format!("{name} must be {}, got {value}", range()))),
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
            None | Some(Value::Null) => Ok(default),
            Some(Value::String(s)) => INTERVALS
                .iter()
                .find(|(n, _)| *n == s.as_str())
                .map(|(n, _)| *n)
                .ok_or_else(|| {
                    ArgError(format!(
                        "interval {s:?} is not a Binance kline interval; valid: {}",
                        valid()
                    ))
                }),
            Some(other) => Err(ArgError(format!(
                "interval must be a string (one of {}), got {}",
                valid(),
                kind(other)
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
        Err(ArgError(format!(
            "unknown argument(s) {}; this tool accepts: {}",
            unknown
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", "),
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
        assert_eq!(normalize_symbol(" ETHBTC ").unwrap(), "ETHBTC");
        assert_eq!(normalize_symbol("1000SATSUSDT").unwrap(), "1000SATSUSDT");
        for bad in [
            "",
            "B",
            "BTC-USDT",
            "BTC/USDT",
            "ÄBC",
            "ABCDEFGHIJKLMNOPQRSTU",
        ] {
            let e = normalize_symbol(bad).unwrap_err();
            assert!(e.0.contains(&format!("{bad:?}")), "{e}");
        }
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
