//! Test harness: a fake of Binance's public REST API serving the documented response shapes, and the
//! real provider server started on a loopback port.
#![allow(dead_code)] // Each test crate uses a different part of the harness.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use binance_provider::config::Config;
use binance_provider::proto::invoke_response::Outcome;
use binance_provider::proto::provider_client::ProviderClient;
use binance_provider::proto::{ErrorCode, InvokeRequest, ToolError, ToolResult};
use binance_provider::server::{ServeError, serve};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How the fake answers while it still has failures to hand out.
#[derive(Clone, Debug)]
pub enum Mode {
    /// HTTP 500 with a plain-text body.
    ServerError,
    /// 429 (or 418) with Binance's rate-limit error body and an optional Retry-After (seconds).
    RateLimited {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Never answers in time.
    Hang,
    /// Answers normally, but only after this long.
    Slow(Duration),
    /// 200 with a truncated JSON body.
    Malformed,
    /// 400 with a Binance `{code,msg}` body.
    Reject { code: i64, msg: String },
}

struct FakeState {
    mode: Mutex<Option<Mode>>,
    /// How many more requests get `mode`; after that the fake answers normally.
    failures_left: AtomicUsize,
    /// Every request as (path, query map).
    hits: Mutex<Vec<(String, HashMap<String, String>)>>,
}

/// A fake Binance on 127.0.0.1:random; stops when dropped.
pub struct FakeBinance {
    pub url: String,
    state: Arc<FakeState>,
    task: JoinHandle<()>,
}

impl Drop for FakeBinance {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBinance {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await
    }

    /// Starts the fake on `addr` (port 0 picks a free port).
    pub async fn start_on(addr: &str) -> Self {
        let state = Arc::new(FakeState {
            mode: Mutex::new(None),
            failures_left: AtomicUsize::new(0),
            hits: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind(addr).await.expect("bind fake");
        let addr = listener.local_addr().expect("fake addr");
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake serve");
        });
        Self {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// Answer the next `times` requests with `mode` (usize::MAX = always).
    pub fn fail(&self, mode: Mode, times: usize) {
        *self.state.mode.lock().unwrap() = Some(mode);
        self.state.failures_left.store(times, Ordering::SeqCst);
    }

    /// Requests received so far for `path`, with their query parameters.
    pub fn hits(&self, path: &str) -> Vec<HashMap<String, String>> {
        self.state
            .hits
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, q)| q.clone())
            .collect()
    }

    pub fn total_hits(&self) -> usize {
        self.state.hits.lock().unwrap().len()
    }

    /// Waits until a request for `path` has arrived (a call is in flight), for at most 10 s.
    pub async fn wait_for_hit(&self, path: &str) {
        let hits = poll(
            Duration::from_secs(10),
            || self.hits(path).len(),
            |n| *n > 0,
        )
        .await;
        assert!(hits > 0, "no request reached the fake at {path}");
    }
}

/// Reads `read` every 10 ms until `done` accepts its value or `limit` has passed, and returns the
/// last value read: for what happens in the background (a server task, a child process).
pub async fn poll<T>(limit: Duration, mut read: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let value = read();
        if done(&value) || std::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn binance_error(status: StatusCode, code: i64, msg: &str) -> Response {
    (status, axum::Json(json!({"code": code, "msg": msg}))).into_response()
}

async fn handle(
    State(state): State<Arc<FakeState>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = uri.path().to_string();
    state
        .hits
        .lock()
        .unwrap()
        .push((path.clone(), query.clone()));

    let failing = state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            usize::MAX => Some(usize::MAX),
            n => Some(n - 1),
        })
        .is_ok();
    if failing {
        let mode = state.mode.lock().unwrap().clone();
        match mode {
            Some(Mode::Slow(delay)) => tokio::time::sleep(delay).await,
            Some(mode) => return failure(mode).await,
            None => {}
        }
    }

    // Real Binance validates parameters the same way: unknown symbol -1121, bad interval -1120.
    let Some(symbol) = query.get("symbol") else {
        return binance_error(
            StatusCode::BAD_REQUEST,
            -1102,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        );
    };
    if symbol == "NOPE" {
        return binance_error(StatusCode::BAD_REQUEST, -1121, "Invalid symbol.");
    }
    let limit = |default: usize| {
        query
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let body = match path.as_str() {
        "/api/v3/ticker/24hr" => ticker(symbol),
        "/api/v3/depth" => depth(limit(100)),
        "/api/v3/klines" => {
            let interval = query.get("interval").cloned().unwrap_or_default();
            if !["1m", "1h", "1d", "1M"].contains(&interval.as_str()) {
                return binance_error(StatusCode::BAD_REQUEST, -1120, "Invalid interval.");
            }
            klines(limit(500))
        }
        "/api/v3/trades" => trades(limit(500)),
        _ => return (StatusCode::NOT_FOUND, "<html>404 Not Found</html>").into_response(),
    };
    axum::Json(body).into_response()
}

async fn failure(mode: Mode) -> Response {
    match mode {
        Mode::ServerError => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
        Mode::RateLimited {
            status,
            retry_after,
        } => {
            let mut headers = HeaderMap::new();
            if let Some(secs) = retry_after {
                headers.insert("retry-after", HeaderValue::from(secs));
            }
            let status = StatusCode::from_u16(status).unwrap();
            let body = json!({"code": -1003, "msg": "Too many requests; current limit is 6000 request weight per 1 MINUTE."});
            (status, headers, axum::Json(body)).into_response()
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Mode::Malformed => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"symbol":"BNBBTC","lastPrice":"4.0"#,
        )
            .into_response(),
        Mode::Reject { code, msg } => binance_error(StatusCode::BAD_REQUEST, code, &msg),
        Mode::Slow(_) => unreachable!("a slow answer is a normal one, later"),
    }
}

/// The FULL `/api/v3/ticker/24hr` example from Binance's rest-api.md.
pub fn ticker(symbol: &str) -> Value {
    json!({
        "symbol": symbol,
        "priceChange": "-94.99999800",
        "priceChangePercent": "-95.960",
        "weightedAvgPrice": "0.29628482",
        "prevClosePrice": "0.10002000",
        "lastPrice": "4.00000200",
        "lastQty": "200.00000000",
        "bidPrice": "4.00000000",
        "bidQty": "100.00000000",
        "askPrice": "4.00000200",
        "askQty": "100.00000000",
        "openPrice": "99.00000000",
        "highPrice": "100.00000000",
        "lowPrice": "0.10000000",
        "volume": "8913.30000000",
        "quoteVolume": "15.30000000",
        "openTime": 1499783499040_i64,
        "closeTime": 1499869899040_i64,
        "firstId": 28385,
        "lastId": 28460,
        "count": 76
    })
}

/// A book of 5 bids (4.0 down by 0.01) and 5 asks (4.000002 up by 0.01), quantities 10, 20, ... on
/// bids and 5, 10, ... on asks; truncated to `limit` levels per side like Binance does.
pub fn depth(limit: usize) -> Value {
    let bids: Vec<Value> = (0..5)
        .map(|i| {
            json!([
                format!("{:.8}", 4.0 - 0.01 * i as f64),
                format!("{:.8}", 10.0 * (i + 1) as f64)
            ])
        })
        .take(limit)
        .collect();
    let asks: Vec<Value> = (0..5)
        .map(|i| {
            json!([
                format!("{:.8}", 4.000002 + 0.01 * i as f64),
                format!("{:.8}", 5.0 * (i + 1) as f64)
            ])
        })
        .take(limit)
        .collect();
    json!({"lastUpdateId": 1027024, "bids": bids, "asks": asks})
}

/// `limit` hourly klines whose closes alternate 100, 110, 100, ... (the 12-element array shape).
pub fn klines(limit: usize) -> Value {
    let start = 1_499_040_000_000_i64;
    Value::from(
        (0..limit)
            .map(|i| {
                let open_time = start + i as i64 * 3_600_000;
                let close = if i % 2 == 0 { 100.0 } else { 110.0 };
                json!([
                    open_time,
                    "100.00000000",
                    "111.00000000",
                    "99.00000000",
                    format!("{close:.8}"),
                    "148976.11427815",
                    open_time + 3_599_999,
                    "2434.19055334",
                    308,
                    "1756.87402397",
                    "28.46694368",
                    "0"
                ])
            })
            .collect::<Vec<_>>(),
    )
}

/// `limit` trades: even ids taker buys of 1.0 at 4.0, odd ids taker sells of 3.0 at 4.1.
pub fn trades(limit: usize) -> Value {
    Value::from(
        (0..limit)
            .map(|i| {
                let buy = i % 2 == 0;
                let (price, qty) = if buy { (4.0, 1.0) } else { (4.1, 3.0) };
                json!({
                    "id": 28457 + i,
                    "price": format!("{price:.8}"),
                    "qty": format!("{qty:.8}"),
                    "quoteQty": format!("{:.8}", price * qty),
                    "time": 1499865549590_i64 + i as i64,
                    "isBuyerMaker": !buy,
                    "isBestMatch": true
                })
            })
            .collect::<Vec<_>>(),
    )
}

/// Settings that keep the suite fast: short backoff and no drain. The timeouts stay generous
/// (a loaded CI machine can take hundreds of ms to answer from the in-process fake); the tests
/// of timeouts set their own.
pub fn test_config(base_url: &str) -> Config {
    Config {
        base_url: base_url.to_string(),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(4),
        call_timeout: Duration::from_secs(5),
        max_retries: 2,
        retry_backoff: Duration::from_millis(10),
        retry_after_cap: Duration::from_millis(2_000),
        report_ttl: Duration::from_secs(30),
        // No drain: the tests that stop a server need it gone at once (the drain has its own).
        shutdown_drain: Duration::ZERO,
        shutdown_grace: Duration::from_secs(2),
    }
}

/// The real provider server on 127.0.0.1:random, stopped through a oneshot.
pub struct Provider {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), ServeError>>,
}

impl Provider {
    pub async fn start(config: Config) -> Self {
        // Bound before serving: connections made before the server polls the listener wait in
        // the backlog, so no readiness sleep is needed.
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind provider");
        let addr = listener.local_addr().expect("provider addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub async fn client(&self) -> ProviderClient<Channel> {
        ProviderClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to provider")
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("server task")
    }
}

/// Calls a tool and returns its outcome.
/// Invokes `tool` with `{"symbol": "BTCUSDT"}`, the symbol the fake serves.
pub async fn invoke_btc(client: &mut ProviderClient<Channel>, tool: &str) -> Outcome {
    invoke(client, tool, serde_json::json!({"symbol": "BTCUSDT"})).await
}

pub async fn invoke(client: &mut ProviderClient<Channel>, tool: &str, args: Value) -> Outcome {
    client
        .invoke(InvokeRequest {
            tool: tool.to_string(),
            arguments_json: args.to_string(),
            request_id: format!("test-{tool}"),
        })
        .await
        .expect("invoke RPC")
        .into_inner()
        .outcome
        .expect("outcome set")
}

/// The result of a call that must succeed, with its JSON parsed.
pub fn ok(outcome: Outcome) -> (Value, ToolResult) {
    match outcome {
        Outcome::Result(r) => (serde_json::from_str(&r.json).expect("result json"), r),
        Outcome::Error(e) => panic!("expected a result, got {e:?}"),
    }
}

/// The error of a call that must fail with `code`.
pub fn err(outcome: Outcome, code: ErrorCode) -> ToolError {
    match outcome {
        Outcome::Error(e) => {
            assert_eq!(e.code(), code, "unexpected error {e:?}");
            e
        }
        Outcome::Result(r) => panic!("expected {code:?}, got result {}", r.json),
    }
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * (1.0 + b.abs())
}

/// Every TCP socket of this process bound to `local` with a peer (the connections a listener on
/// `local` accepted, or a client's side when `local` is its ephemeral address), as
/// (peer address, TCP_NODELAY). Read from the kernel through `/proc/self/fd`, so a test sees
/// the option the code under test really set, not what it asked a library for.
#[cfg(target_os = "linux")]
pub fn connected_sockets(local: SocketAddr) -> Vec<(SocketAddr, bool)> {
    use std::os::fd::{BorrowedFd, RawFd};
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let Ok(entry) = entry else { continue };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<RawFd>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // SAFETY: the fd is only borrowed for the dup below; a duplicate is what we inspect and
        // close, so the owner's descriptor is never closed or altered.
        let Ok(owned) = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned() else {
            continue;
        };
        let stream = std::net::TcpStream::from(owned);
        if let (Ok(l), Ok(peer), Ok(nodelay)) =
            (stream.local_addr(), stream.peer_addr(), stream.nodelay())
            && l == local
        {
            found.push((peer, nodelay));
        }
    }
    found
}
