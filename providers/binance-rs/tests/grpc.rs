//! The real server over gRPC against a fake Binance: every tool, every error kind, the health service.

mod common;

use std::time::{Duration, Instant};

use binance_provider::config::Config;
use binance_provider::proto::ErrorCode;
use binance_provider::proto::ListCapabilitiesRequest;
use common::{FakeBinance, Mode, Provider, close, err, invoke, invoke_btc, ok, test_config};
use serde_json::{Value, json};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn setup() -> (FakeBinance, Provider) {
    let fake = FakeBinance::start().await;
    let provider = Provider::start(test_config(&fake.url)).await;
    (fake, provider)
}

#[tokio::test]
async fn lists_five_tools_with_json_schemas() {
    let (_fake, provider) = setup().await;
    let caps = provider
        .client()
        .await
        .list_capabilities(ListCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.provider, "binance");
    assert_eq!(caps.version, env!("CARGO_PKG_VERSION"));
    let names: Vec<&str> = caps.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "binance.get_ticker",
            "binance.get_order_book",
            "binance.get_klines",
            "binance.get_recent_trades",
            "binance.market_report"
        ]
    );
    for t in &caps.tools {
        assert!(!t.description.is_empty());
        let schema: Value = serde_json::from_str(&t.input_schema_json).unwrap();
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["required"], json!(["symbol"]));
    }
    let klines: Value = serde_json::from_str(&caps.tools[2].input_schema_json).unwrap();
    assert!(
        klines["properties"]["interval"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("15m"))
    );
    assert_eq!(klines["properties"]["limit"]["maximum"], 1000);
    provider.stop().await.unwrap();
}

#[tokio::test]
async fn get_ticker_normalizes_the_symbol_and_maps_the_fields() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    let (j, r) = ok(invoke(
        &mut client,
        "binance.get_ticker",
        json!({"symbol": "bnbbtc"}),
    )
    .await);
    assert_eq!(fake.hits("/api/v3/ticker/24hr")[0]["symbol"], "BNBBTC");
    assert_eq!(j["symbol"], "BNBBTC");
    assert!(close(j["last_price"].as_f64().unwrap(), 4.000002));
    assert!(close(j["price_change_percent"].as_f64().unwrap(), -95.96));
    assert!(close(j["high_price"].as_f64().unwrap(), 100.0));
    assert_eq!(j["trade_count"], 76);
    assert_eq!(r.text, "");
}

#[tokio::test]
async fn get_order_book_computes_spread_depth_and_imbalance() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    let (j, _) = ok(invoke(
        &mut client,
        "binance.get_order_book",
        json!({"symbol": "BNBBTC", "limit": 3}),
    )
    .await);
    assert_eq!(fake.hits("/api/v3/depth")[0]["limit"], "3");
    assert_eq!(j["bids"].as_array().unwrap().len(), 3);
    assert_eq!(j["asks"].as_array().unwrap().len(), 3);
    assert!(close(j["best_bid"].as_f64().unwrap(), 4.0));
    assert!(close(j["best_ask"].as_f64().unwrap(), 4.000002));
    assert!(close(j["spread"].as_f64().unwrap(), 0.000002));
    assert!(close(j["mid"].as_f64().unwrap(), 4.000001));
    assert!(close(
        j["spread_bps"].as_f64().unwrap(),
        0.000002 / 4.000001 * 1e4
    ));
    // Bids 10+20+30 = 60, asks 5+10+15 = 30: imbalance (60-30)/90.
    assert!(close(j["bid_depth"]["qty"].as_f64().unwrap(), 60.0));
    assert!(close(j["ask_depth"]["qty"].as_f64().unwrap(), 30.0));
    assert!(close(j["imbalance"].as_f64().unwrap(), 1.0 / 3.0));
    assert!(close(j["bids"][1]["price"].as_f64().unwrap(), 3.99));
}

#[tokio::test]
async fn get_klines_forwards_interval_and_limit() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    let (j, _) = ok(invoke(
        &mut client,
        "binance.get_klines",
        json!({"symbol": "ETHBTC", "interval": "1d", "limit": 7}),
    )
    .await);
    let hit = &fake.hits("/api/v3/klines")[0];
    assert_eq!(
        (hit["interval"].as_str(), hit["limit"].as_str()),
        ("1d", "7")
    );
    let k = j["klines"].as_array().unwrap();
    assert_eq!(k.len(), 7);
    assert_eq!(k[0]["open_time"], 1_499_040_000_000_i64);
    assert!(close(k[1]["close"].as_f64().unwrap(), 110.0));
    assert_eq!(k[0]["trades"], 308);
    assert_eq!(j["interval"], "1d");

    // Defaults: 1h, 100 candles.
    ok(invoke(
        &mut client,
        "binance.get_klines",
        json!({"symbol": "ETHBTC"}),
    )
    .await);
    let hit = &fake.hits("/api/v3/klines")[1];
    assert_eq!(
        (hit["interval"].as_str(), hit["limit"].as_str()),
        ("1h", "100")
    );
}

#[tokio::test]
async fn get_recent_trades_reports_taker_sides_and_flow() {
    let (_fake, provider) = setup().await;
    let mut client = provider.client().await;
    let (j, _) = ok(invoke(
        &mut client,
        "binance.get_recent_trades",
        json!({"symbol": "BNBBTC", "limit": 4}),
    )
    .await);
    let trades = j["trades"].as_array().unwrap();
    assert_eq!(trades.len(), 4);
    assert_eq!(trades[0]["taker_side"], "buy");
    assert_eq!(trades[1]["taker_side"], "sell");
    // 2 buys of 1.0 @ 4.0, 2 sells of 3.0 @ 4.1.
    let f = &j["flow"];
    assert_eq!(
        (f["buy_trades"].as_u64(), f["sell_trades"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(close(f["buy_share"].as_f64().unwrap(), 0.25));
    assert!(close(f["vwap"].as_f64().unwrap(), (8.0 + 24.6) / 8.0));
}

#[tokio::test]
async fn market_report_renders_markdown_and_a_json_summary() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    let (j, r) = ok(invoke(
        &mut client,
        "binance.market_report",
        json!({"symbol": "bnbbtc", "interval": "1h", "kline_limit": 4, "depth_limit": 5, "trade_limit": 10}),
    )
    .await);
    for section in [
        "# BNBBTC market report",
        "## Price overview (24h)",
        "## Spread and depth",
        "## Volatility (1h candles)",
        "## Recent flow (10 trades)",
    ] {
        assert!(
            r.text.contains(section),
            "missing {section:?} in\n{}",
            r.text
        );
    }
    assert!(r.text.contains("| last price | 4.000002 |"), "{}", r.text);
    assert!(
        r.text.contains("| buy share of volume | 25.0 % |"),
        "{}",
        r.text
    );
    assert_eq!(j["symbol"], "BNBBTC");
    assert_eq!(j["options"]["kline_limit"], 4);
    assert!(close(j["book"]["best_bid"].as_f64().unwrap(), 4.0));
    assert!(
        j["book"].get("bids").is_none(),
        "report keeps raw levels out"
    );
    // Closes 100, 110, 100, 110 -> three returns, the same series as the analytics unit test.
    let m = 1.1f64.ln() / 3.0;
    let stdev = (24.0 * m * m / 2.0).sqrt();
    assert_eq!(j["volatility"]["returns"], 3);
    assert!(close(
        j["volatility"]["stdev_per_interval"].as_f64().unwrap(),
        stdev
    ));
    assert!(close(
        j["volatility"]["annualized"].as_f64().unwrap(),
        stdev * (365.25f64 * 24.0).sqrt()
    ));
    assert!(close(j["flow"]["buy_share"].as_f64().unwrap(), 0.25));
    assert_eq!(fake.hits("/api/v3/depth")[0]["limit"], "5");
    assert_eq!(fake.hits("/api/v3/trades")[0]["limit"], "10");
    assert_eq!(fake.hits("/api/v3/klines")[0]["limit"], "4");
}

#[tokio::test]
async fn a_burst_of_identical_reports_makes_one_upstream_round() {
    let (fake, provider) = setup().await;
    let client = provider.client().await;
    let calls = (0..12).map(|_| {
        let mut c = client.clone();
        async move {
            invoke(
                &mut c,
                "binance.market_report",
                json!({"symbol": "BTCUSDT"}),
            )
            .await
        }
    });
    let outcomes = futures_join_all(calls).await;
    let first = ok(outcomes[0].clone()).1.json;
    for o in outcomes {
        assert_eq!(ok(o).1.json, first, "every caller gets the same report");
    }
    for path in [
        "/api/v3/ticker/24hr",
        "/api/v3/depth",
        "/api/v3/klines",
        "/api/v3/trades",
    ] {
        assert_eq!(fake.hits(path).len(), 1, "{path} requested more than once");
    }
    // Lower-case is the same symbol: still cached. Other options are a different report.
    let mut c = client.clone();
    ok(invoke(
        &mut c,
        "binance.market_report",
        json!({"symbol": "btcusdt"}),
    )
    .await);
    assert_eq!(fake.total_hits(), 4);
    ok(invoke(
        &mut c,
        "binance.market_report",
        json!({"symbol": "BTCUSDT", "depth_limit": 5}),
    )
    .await);
    assert_eq!(fake.total_hits(), 8);
}

/// Runs futures concurrently on the current task set and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn failed_reports_are_not_cached() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    fake.fail(Mode::ServerError, usize::MAX);
    err(
        invoke_btc(&mut client, "binance.market_report").await,
        ErrorCode::UpstreamUnavailable,
    );
    fake.fail(Mode::ServerError, 0);
    ok(invoke_btc(&mut client, "binance.market_report").await);
}

#[tokio::test]
async fn upstream_500_is_retried_then_reported_unavailable() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    fake.fail(Mode::ServerError, usize::MAX);
    let e = err(
        invoke_btc(&mut client, "binance.get_ticker").await,
        ErrorCode::UpstreamUnavailable,
    );
    assert!(e.message.contains("HTTP 500"), "{}", e.message);
    assert!(
        e.message.contains("gave up after 3 attempts"),
        "{}",
        e.message
    );
    assert_eq!(
        fake.hits("/api/v3/ticker/24hr").len(),
        3,
        "1 try + 2 retries"
    );
}

#[tokio::test]
async fn a_transient_500_is_retried_to_success() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    fake.fail(Mode::ServerError, 1);
    ok(invoke_btc(&mut client, "binance.get_order_book").await);
    assert_eq!(fake.hits("/api/v3/depth").len(), 2);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    fake.fail(
        Mode::RateLimited {
            status: 429,
            retry_after: Some(1),
        },
        1,
    );
    let started = Instant::now();
    ok(invoke_btc(&mut client, "binance.get_ticker").await);
    // The configured backoff is 10 ms; only Retry-After explains a wait of a second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.hits("/api/v3/ticker/24hr").len(), 2);
}

#[tokio::test]
async fn persistent_429_is_unavailable_with_binance_code() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    fake.fail(
        Mode::RateLimited {
            status: 429,
            retry_after: None,
        },
        usize::MAX,
    );
    let e = err(
        invoke_btc(&mut client, "binance.get_recent_trades").await,
        ErrorCode::UpstreamUnavailable,
    );
    assert!(e.message.contains("rate-limited"), "{}", e.message);
    assert_eq!(e.upstream_code, -1003);
    assert_eq!(fake.hits("/api/v3/trades").len(), 3);
}

#[tokio::test]
async fn a_418_ban_longer_than_the_cap_fails_at_once() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    fake.fail(
        Mode::RateLimited {
            status: 418,
            retry_after: Some(120),
        },
        usize::MAX,
    );
    let started = Instant::now();
    let e = err(
        invoke_btc(&mut client, "binance.get_ticker").await,
        ErrorCode::UpstreamUnavailable,
    );
    assert!(e.message.contains("banned"), "{}", e.message);
    assert!(e.message.contains("retry after 120 s"), "{}", e.message);
    assert_eq!(fake.hits("/api/v3/ticker/24hr").len(), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn retries_stop_at_the_calls_deadline() {
    // Retry-After 1 s on every answer: 3 attempts would take 2 s, the call may take 1.5 s.
    let fake = FakeBinance::start().await;
    let provider = Provider::start(Config {
        call_timeout: Duration::from_millis(1_500),
        ..test_config(&fake.url)
    })
    .await;
    let mut client = provider.client().await;
    fake.fail(
        Mode::RateLimited {
            status: 429,
            retry_after: Some(1),
        },
        usize::MAX,
    );
    let started = Instant::now();
    let e = err(
        invoke_btc(&mut client, "binance.get_ticker").await,
        ErrorCode::UpstreamUnavailable,
    );
    let elapsed = started.elapsed();
    assert!(
        e.message.contains(
            "gave up after 2 attempts: a retry in 1000 ms would pass this call's 1500 ms deadline"
        ),
        "{}",
        e.message
    );
    assert_eq!(e.upstream_code, -1003);
    assert_eq!(fake.hits("/api/v3/ticker/24hr").len(), 2);
    assert!(elapsed < Duration::from_millis(1_500), "{elapsed:?}");
}

#[tokio::test]
async fn a_callers_shorter_grpc_deadline_gets_a_timeout_answer_in_time() {
    // Binance hangs and the provider's own limits are long: the caller's 2 s deadline decides,
    // and the caller gets the provider's TIMEOUT answer (at 1.8 s) rather than a bare CANCELLED.
    let fake = FakeBinance::start().await;
    let provider = Provider::start(Config {
        request_timeout: Duration::from_secs(20),
        call_timeout: Duration::from_secs(30),
        ..test_config(&fake.url)
    })
    .await;
    let client = provider.client().await;
    fake.fail(Mode::Hang, usize::MAX);
    let calls = ["binance.get_ticker", "binance.market_report"].map(|tool| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut request = tonic::Request::new(binance_provider::proto::InvokeRequest {
                tool: tool.into(),
                arguments_json: r#"{"symbol":"BTCUSDT"}"#.into(),
                request_id: "short-deadline".into(),
            });
            request.set_timeout(Duration::from_secs(2));
            let started = Instant::now();
            let outcome = client
                .invoke(request)
                .await
                .unwrap_or_else(|s| panic!("{tool}: a gRPC error instead of an answer: {s}"))
                .into_inner()
                .outcome
                .unwrap();
            (tool, outcome, started.elapsed())
        })
    });
    for call in calls {
        let (tool, outcome, elapsed) = call.await.unwrap();
        let e = err(outcome, ErrorCode::Timeout);
        assert!(e.message.contains("deadline"), "{tool}: {}", e.message);
        assert!(
            elapsed >= Duration::from_millis(1_700),
            "{tool}: {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn a_hanging_upstream_times_out() {
    let fake = FakeBinance::start().await;
    let provider = Provider::start(Config {
        request_timeout: Duration::from_millis(400),
        ..test_config(&fake.url)
    })
    .await;
    let mut client = provider.client().await;
    fake.fail(Mode::Hang, usize::MAX);
    let started = Instant::now();
    let e = err(
        invoke_btc(&mut client, "binance.get_klines").await,
        ErrorCode::Timeout,
    );
    assert!(e.message.contains("within 400 ms"), "{}", e.message);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_malformed_body_is_reported() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    fake.fail(Mode::Malformed, usize::MAX);
    let e = err(
        invoke_btc(&mut client, "binance.get_ticker").await,
        ErrorCode::UpstreamUnavailable,
    );
    assert!(
        e.message
            .contains("malformed response for /api/v3/ticker/24hr"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn binance_rejections_carry_its_code() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    let e = err(
        invoke(&mut client, "binance.get_ticker", json!({"symbol": "NOPE"})).await,
        ErrorCode::UpstreamRejected,
    );
    assert_eq!(e.upstream_code, -1121);
    assert!(e.message.contains("Invalid symbol."), "{}", e.message);
    assert!(e.message.contains("HTTP 400"), "{}", e.message);

    // A rejection is final: no retry.
    fake.fail(
        Mode::Reject {
            code: -1100,
            msg: "Illegal characters found in parameter 'symbol'.".into(),
        },
        usize::MAX,
    );
    let e = err(
        invoke_btc(&mut client, "binance.market_report").await,
        ErrorCode::UpstreamRejected,
    );
    assert_eq!(e.upstream_code, -1100);
    assert_eq!(fake.hits("/api/v3/ticker/24hr").len(), 2);
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let provider = Provider::start(test_config(&format!("http://127.0.0.1:{port}"))).await;
    let mut client = provider.client().await;
    let e = err(
        invoke_btc(&mut client, "binance.get_ticker").await,
        ErrorCode::UpstreamUnavailable,
    );
    assert!(e.message.contains("cannot connect"), "{}", e.message);
}

#[tokio::test]
async fn unknown_tools_and_bad_arguments_never_reach_binance() {
    let (fake, provider) = setup().await;
    let mut client = provider.client().await;
    let e = err(
        invoke(&mut client, "binance.place_order", json!({})).await,
        ErrorCode::UnknownTool,
    );
    assert!(
        e.message.contains("\"binance.place_order\""),
        "{}",
        e.message
    );

    let cases = [
        (
            "binance.get_ticker",
            json!({}),
            "missing required argument \"symbol\"",
        ),
        (
            "binance.get_ticker",
            json!({"symbol": "BTC-USDT"}),
            "\"BTC-USDT\"",
        ),
        (
            "binance.get_ticker",
            json!({"symbol": " btcusdt "}),
            "remove the surrounding whitespace",
        ),
        (
            "binance.get_klines",
            json!({"symbol": "BTCUSDT", "limit": null}),
            "omit limit for the default, 100",
        ),
        (
            "binance.get_order_book",
            json!({"symbol": "BTCUSDT", "limit": 5001}),
            "limit must be an integer from 1 to 5000, got 5001",
        ),
        (
            "binance.get_klines",
            json!({"symbol": "BTCUSDT", "interval": "2m"}),
            "interval \"2m\" is not a Binance kline interval",
        ),
        (
            "binance.get_recent_trades",
            json!({"symbol": "BTCUSDT", "limit": "ten"}),
            "limit must be an integer from 1 to 1000",
        ),
        (
            "binance.market_report",
            json!({"symbol": "BTCUSDT", "verbose": true}),
            "unknown argument(s) \"verbose\"",
        ),
    ];
    for (tool, args, want) in cases {
        let e = err(
            invoke(&mut client, tool, args.clone()).await,
            ErrorCode::InvalidArguments,
        );
        assert!(e.message.contains(want), "{tool} {args}: {}", e.message);
    }
    let mut raw = provider.client().await;
    let resp = raw
        .invoke(binance_provider::proto::InvokeRequest {
            tool: "binance.get_ticker".into(),
            arguments_json: "{not json".into(),
            request_id: "raw".into(),
        })
        .await
        .unwrap()
        .into_inner();
    err(resp.outcome.unwrap(), ErrorCode::InvalidArguments);
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn health_service_reports_serving() {
    let (_fake, provider) = setup().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", provider.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "provider.v1.Provider"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    provider.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let (_fake, provider) = setup().await;
    let addr = provider.addr;
    let started = Instant::now();
    provider.stop().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn accepted_connections_have_tcp_nodelay() {
    // Nagle's algorithm plus the peer's delayed ACK adds ~40 ms to each call of a one-at-a-time
    // caller; the option must be on every socket the server accepts.
    let (_fake, provider) = setup().await;
    let mut client = provider.client().await;
    client
        .list_capabilities(ListCapabilitiesRequest {})
        .await
        .unwrap();
    // A raw client socket too: its own side keeps the kernel default (off), which shows the
    // reading distinguishes the two.
    let raw = tokio::net::TcpStream::connect(provider.addr).await.unwrap();
    let raw_local = raw.local_addr().unwrap();
    // (Linux may give the same ephemeral port to connections to other peers: filter by peer.)
    let raw_side: Vec<bool> = common::connected_sockets(raw_local)
        .into_iter()
        .filter(|(peer, _)| *peer == provider.addr)
        .map(|(_, nodelay)| nodelay)
        .collect();
    assert_eq!(raw_side, [false]);
    // The server accepts in the background: poll until both connections are accepted.
    let accepted = common::poll(
        Duration::from_secs(5),
        || common::connected_sockets(provider.addr),
        |a| a.len() >= 2,
    )
    .await;
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(accepted.iter().all(|(_, nodelay)| *nodelay), "{accepted:?}");
    assert!(accepted.iter().any(|(peer, _)| *peer == raw_local));
}

#[tokio::test]
async fn every_result_validates_against_its_declared_output_schema() {
    let (_fake, provider) = setup().await;
    let mut client = provider.client().await;
    let caps = client
        .list_capabilities(ListCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let calls = [
        ("binance.get_ticker", json!({"symbol": "btcusdt"})),
        ("binance.get_order_book", json!({"symbol": "BTCUSDT"})),
        (
            "binance.get_order_book",
            json!({"symbol": "BTCUSDT", "limit": 1}),
        ),
        ("binance.get_klines", json!({"symbol": "BTCUSDT"})),
        (
            "binance.get_klines",
            json!({"symbol": "BTCUSDT", "interval": "1M", "limit": 1}),
        ),
        ("binance.get_recent_trades", json!({"symbol": "BTCUSDT"})),
        ("binance.market_report", json!({"symbol": "BTCUSDT"})),
        (
            "binance.market_report",
            json!({"symbol": "ETHBTC", "interval": "1d", "kline_limit": 3, "depth_limit": 1, "trade_limit": 1}),
        ),
    ];
    for tool in &caps.tools {
        assert!(tool.read_only, "{}", tool.name);
        let schema: Value = serde_json::from_str(&tool.output_schema_json)
            .unwrap_or_else(|e| panic!("{}: output schema is not JSON: {e}", tool.name));
        assert_eq!(
            schema["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(schema["type"], "object", "{}", tool.name);
        jsonschema::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{}: not a valid 2020-12 schema: {e}", tool.name));
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap();
        let mut called = 0;
        for (_, args) in calls.iter().filter(|(name, _)| *name == tool.name) {
            let (result, _) = ok(invoke(&mut client, &tool.name, args.clone()).await);
            let errors: Vec<String> = validator
                .iter_errors(&result)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(errors.is_empty(), "{} {args}: {errors:?}", tool.name);
            // The schema is exact: a result without one of its fields, or with an extra one, fails.
            let mut missing = result.clone();
            let first = schema["required"][0].as_str().unwrap();
            missing.as_object_mut().unwrap().remove(first);
            assert!(!validator.is_valid(&missing), "{}: {first}", tool.name);
            let mut extra = result.clone();
            extra["undeclared"] = json!(1);
            assert!(!validator.is_valid(&extra), "{}", tool.name);
            called += 1;
        }
        assert!(called > 0, "no call exercises {}", tool.name);
    }
}

/// Asks the reflection service `$v` (v1 or v1alpha) of `addr` for its services and for the file
/// that defines `provider.v1.Provider`, as grpcurl does; returns the names and that file.
macro_rules! reflect {
    ($v:ident, $addr:expr) => {{
        use prost::Message;
        use tonic_reflection::pb::$v::ServerReflectionRequest;
        use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", $addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ServerReflectionClient::new(channel);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol("provider.v1.Provider".into()),
        ]
        .map(|r| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r),
        });
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .unwrap()
            .into_inner();
        let mut services = Vec::new();
        let mut file = None;
        while let Some(answer) = answers.message().await.unwrap() {
            match answer.message_response.unwrap() {
                MessageResponse::ListServicesResponse(list) => {
                    services = list.service.into_iter().map(|s| s.name).collect::<Vec<_>>();
                }
                MessageResponse::FileDescriptorResponse(files) => {
                    file = Some(
                        prost_types::FileDescriptorProto::decode(
                            &files.file_descriptor_proto[0][..],
                        )
                        .unwrap(),
                    );
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
        (services, file.expect("no file for provider.v1.Provider"))
    }};
}

#[tokio::test]
async fn reflection_lists_both_services_in_v1_and_v1alpha() {
    let (_fake, provider) = setup().await;
    for (version, (mut services, file)) in [
        ("v1", reflect!(v1, provider.addr)),
        ("v1alpha", reflect!(v1alpha, provider.addr)),
    ] {
        services.sort();
        assert_eq!(
            services,
            [
                "grpc.health.v1.Health".to_string(),
                format!("grpc.reflection.{version}.ServerReflection"),
                "provider.v1.Provider".to_string(),
            ],
            "{version}"
        );
        // Enough for a client to call Invoke without the .proto: the service and its methods.
        assert_eq!(file.package(), "provider.v1");
        let service = file
            .service
            .iter()
            .find(|s| s.name() == "Provider")
            .unwrap();
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["ListCapabilities", "Invoke"], "{version}");
        assert!(
            file.message_type
                .iter()
                .any(|m| m.name() == "InvokeRequest")
        );
    }
}
