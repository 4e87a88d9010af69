//! Pure market-data arithmetic: spread, book imbalance, volatility, trade flow.
//!
//! Everything here is side-effect free so it can be unit-tested exactly; callers pass parsed numbers.

use serde::Serialize;

/// Best bid/ask and the distance between them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    pub best_bid: f64,
    pub best_ask: f64,
    /// `(best_bid + best_ask) / 2`.
    pub mid: f64,
    /// `best_ask - best_bid` in quote currency.
    pub spread: f64,
    /// The spread relative to the mid price, in basis points (1 bp = 0.01 %).
    pub spread_bps: f64,
}

/// Spread of a book from its best levels; `None` when a side is empty or prices are not positive.
pub fn spread(best_bid: Option<f64>, best_ask: Option<f64>) -> Option<Spread> {
    let (bid, ask) = (best_bid?, best_ask?);
    if bid.is_nan() || ask.is_nan() || bid <= 0.0 || ask <= 0.0 {
        return None;
    }
    let mid = (bid + ask) / 2.0;
    let spread = ask - bid;
    Some(Spread {
        best_bid: bid,
        best_ask: ask,
        mid,
        spread,
        spread_bps: spread / mid * 10_000.0,
    })
}

/// Order-book imbalance over the given levels: `(bid_qty - ask_qty) / (bid_qty + ask_qty)`.
///
/// Ranges from -1 (only asks) to +1 (only bids); `None` when both sides hold no quantity.
pub fn imbalance(bid_qty: f64, ask_qty: f64) -> Option<f64> {
    let total = bid_qty + ask_qty;
    if total > 0.0 {
        Some((bid_qty - ask_qty) / total)
    } else {
        None
    }
}

/// Total quantity and quote notional (`Σ price × qty`) of one side of a book.
pub fn depth(levels: &[(f64, f64)]) -> (f64, f64) {
    levels
        .iter()
        .fold((0.0, 0.0), |(qty, notional), &(price, q)| {
            (qty + q, notional + price * q)
        })
}

/// Volatility of a close-price series.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Volatility {
    /// Number of log returns the statistic is computed from (closes - 1).
    pub returns: usize,
    /// Sample standard deviation of the log returns, per interval, as a fraction (0.01 = 1 %).
    pub stdev_per_interval: f64,
    /// `stdev_per_interval × √(intervals per year)`, as a fraction.
    pub annualized: f64,
}

/// Sample standard deviation of log returns of `closes`, annualized with `intervals_per_year`.
///
/// Needs at least three positive closes (two returns); `None` otherwise.
pub fn volatility(closes: &[f64], intervals_per_year: f64) -> Option<Volatility> {
    if closes.len() < 3 || closes.iter().any(|c| c.is_nan() || *c <= 0.0) {
        return None;
    }
    let returns: Vec<f64> = closes.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let variance = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let stdev = variance.sqrt();
    Some(Volatility {
        returns: returns.len(),
        stdev_per_interval: stdev,
        annualized: stdev * intervals_per_year.sqrt(),
    })
}

/// Aggregated taker flow of a list of trades.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Flow {
    pub trades: usize,
    /// Trades where the taker bought (the buyer was not the maker).
    pub buy_trades: usize,
    pub sell_trades: usize,
    /// Base quantity bought by takers.
    pub buy_qty: f64,
    /// Base quantity sold by takers.
    pub sell_qty: f64,
    /// `buy_qty / (buy_qty + sell_qty)`; `None` when no quantity traded.
    pub buy_share: Option<f64>,
    /// Volume-weighted average price; `None` when no quantity traded.
    pub vwap: Option<f64>,
}

/// One trade as the flow computation needs it.
#[derive(Clone, Copy, Debug)]
pub struct FlowTrade {
    pub price: f64,
    pub qty: f64,
    /// Binance's `isBuyerMaker`: true means the taker sold.
    pub buyer_is_maker: bool,
}

/// Splits trades into taker buys and taker sells and computes the VWAP.
pub fn flow(trades: &[FlowTrade]) -> Flow {
    let mut f = Flow {
        trades: trades.len(),
        buy_trades: 0,
        sell_trades: 0,
        buy_qty: 0.0,
        sell_qty: 0.0,
        buy_share: None,
        vwap: None,
    };
    let mut notional = 0.0;
    for t in trades {
        if t.buyer_is_maker {
            f.sell_trades += 1;
            f.sell_qty += t.qty;
        } else {
            f.buy_trades += 1;
            f.buy_qty += t.qty;
        }
        notional += t.price * t.qty;
    }
    let total = f.buy_qty + f.sell_qty;
    if total > 0.0 {
        f.buy_share = Some(f.buy_qty / total);
        f.vwap = Some(notional / total);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn spread_of_a_normal_book() {
        let s = spread(Some(99.0), Some(101.0)).expect("spread");
        assert!(close(s.mid, 100.0));
        assert!(close(s.spread, 2.0));
        assert!(close(s.spread_bps, 200.0));
    }

    #[test]
    fn spread_needs_both_sides_and_positive_prices() {
        assert_eq!(spread(None, Some(1.0)), None);
        assert_eq!(spread(Some(1.0), None), None);
        assert_eq!(spread(Some(0.0), Some(1.0)), None);
        assert_eq!(spread(Some(f64::NAN), Some(1.0)), None);
    }

    #[test]
    fn crossed_book_gives_a_negative_spread() {
        let s = spread(Some(101.0), Some(100.0)).expect("spread");
        assert!(s.spread < 0.0 && s.spread_bps < 0.0);
    }

    #[test]
    fn imbalance_ranges_from_minus_one_to_one() {
        assert!(close(imbalance(3.0, 1.0).unwrap(), 0.5));
        assert!(close(imbalance(1.0, 3.0).unwrap(), -0.5));
        assert!(close(imbalance(2.0, 0.0).unwrap(), 1.0));
        assert!(close(imbalance(0.0, 2.0).unwrap(), -1.0));
        assert_eq!(imbalance(0.0, 0.0), None);
    }

    #[test]
    fn depth_sums_quantity_and_notional() {
        let (qty, notional) = depth(&[(10.0, 1.0), (9.0, 2.0)]);
        assert!(close(qty, 3.0));
        assert!(close(notional, 28.0));
        assert_eq!(depth(&[]), (0.0, 0.0));
    }

    #[test]
    fn volatility_of_alternating_returns() {
        // Returns: ln(1.1), ln(1/1.1), ln(1.1): mean m = ln(1.1)/3, deviations 2m, -4m, 2m.
        let closes = [100.0, 110.0, 100.0, 110.0];
        let v = volatility(&closes, 4.0).expect("volatility");
        let m = 1.1f64.ln() / 3.0;
        let expected = ((4.0 * m * m + 16.0 * m * m + 4.0 * m * m) / 2.0).sqrt();
        assert_eq!(v.returns, 3);
        assert!(close(v.stdev_per_interval, expected));
        assert!(close(v.annualized, expected * 2.0));
    }

    #[test]
    fn volatility_of_a_flat_series_is_zero() {
        let v = volatility(&[5.0, 5.0, 5.0], 1.0).expect("volatility");
        assert!(close(v.stdev_per_interval, 0.0));
    }

    #[test]
    fn volatility_needs_three_positive_closes() {
        assert_eq!(volatility(&[1.0, 2.0], 1.0), None);
        assert_eq!(volatility(&[1.0, 0.0, 2.0], 1.0), None);
    }

    #[test]
    fn flow_splits_taker_sides() {
        let trades = [
            FlowTrade {
                price: 10.0,
                qty: 1.0,
                buyer_is_maker: false,
            },
            FlowTrade {
                price: 20.0,
                qty: 3.0,
                buyer_is_maker: true,
            },
        ];
        let f = flow(&trades);
        assert_eq!((f.buy_trades, f.sell_trades), (1, 1));
        assert!(close(f.buy_qty, 1.0) && close(f.sell_qty, 3.0));
        assert!(close(f.buy_share.unwrap(), 0.25));
        assert!(close(f.vwap.unwrap(), 70.0 / 4.0));
        let empty = flow(&[]);
        assert_eq!((empty.buy_share, empty.vwap), (None, None));
    }
}
