//! The test suite's fake Binance REST API as a standalone server, for running the provider locally
//! without network access: `cargo run --example fake_binance -- 127.0.0.1:8089`.
//!
//! It serves `/api/v3/ticker/24hr`, `/api/v3/depth`, `/api/v3/klines` (intervals 1m, 1h, 1d, 1M) and
//! `/api/v3/trades` in Binance's documented shapes with fixed data; the symbol `NOPE` gets Binance's
//! `{"code":-1121,"msg":"Invalid symbol."}`.

#[path = "../tests/common/mod.rs"]
mod common;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8089".to_string());
    let fake = common::FakeBinance::start_on(&addr).await;
    println!("fake Binance listening on {}", fake.url);
    println!("run the provider with BINANCE_BASE_URL={}", fake.url);
    let _ = tokio::signal::ctrl_c().await;
}
