//! Bounded echoes of values the provider did not choose (arguments, tool names, request ids,
//! Binance's messages) in errors and logs.
//!
//! A tool error lands in a model's context and a log line in a log store: a 1 MB symbol must not
//! come back whole. A cut value ends with a marker giving its original length, so the reader
//! knows it was cut and by how much.

use std::borrow::Cow;

/// Longest part of a caller's value quoted in an error message.
pub const ARG_MAX_CHARS: usize = 64;
/// Longest part of a value written into a log field or an upstream message.
pub const LOG_MAX_CHARS: usize = 200;

/// `value` cut to `max` characters, with `… (N characters)` appended when it was longer.
pub fn clip(value: &str, max: usize) -> Cow<'_, str> {
    match value.char_indices().nth(max) {
        None => Cow::Borrowed(value),
        Some((end, _)) => {
            let total = value.chars().count();
            Cow::Owned(format!("{}… ({total} characters)", &value[..end]))
        }
    }
}

/// `value` in double quotes with escapes (as `{:?}` writes it), cut to [`ARG_MAX_CHARS`]:
/// `"BTCUSDTBTC…"… (1048576 characters)`.
pub fn quoted(value: &str) -> String {
    match value.char_indices().nth(ARG_MAX_CHARS) {
        None => format!("{value:?}"),
        Some((end, _)) => {
            let total = value.chars().count();
            format!("{:?}… ({total} characters)", &value[..end])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_unchanged() {
        assert_eq!(clip("BTCUSDT", 7), "BTCUSDT");
        assert!(matches!(clip("BTCUSDT", 7), Cow::Borrowed(_)));
        assert_eq!(quoted("a\"b"), r#""a\"b""#);
        assert_eq!(quoted(&"x".repeat(ARG_MAX_CHARS)).len(), ARG_MAX_CHARS + 2);
    }

    #[test]
    fn long_values_are_cut_with_their_length() {
        let huge = "A".repeat(1 << 20);
        let q = quoted(&huge);
        assert_eq!(
            q,
            format!("\"{}\"… (1048576 characters)", "A".repeat(ARG_MAX_CHARS))
        );
        assert_eq!(clip(&huge, 3), "AAA… (1048576 characters)");
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        // Multi-byte characters count as one each and are never split.
        assert_eq!(clip("ééééé", 2), "éé… (5 characters)");
    }
}
