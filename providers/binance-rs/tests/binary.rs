//! The compiled `binance-provider` binary: CLI, `healthcheck` both ways, shutdown on signals.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use binance_provider::proto::invoke_response::Outcome;
use common::{FakeBinance, Mode, Provider, invoke, ok, poll, test_config};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const BIN: &str = env!("CARGO_BIN_EXE_binance-provider");

/// The binary with a clean environment for the variables it reads.
fn command() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "PROVIDER_ADDR",
        "BINANCE_BASE_URL",
        "BINANCE_TIMEOUT_MS",
        "BINANCE_CONNECT_TIMEOUT_MS",
        "BINANCE_CALL_TIMEOUT_MS",
        "BINANCE_MAX_RETRIES",
        "BINANCE_RETRY_BACKOFF_MS",
        "BINANCE_RETRY_AFTER_MAX_MS",
        "REPORT_CACHE_TTL_MS",
        "SHUTDOWN_DRAIN_MS",
        "SHUTDOWN_GRACE_MS",
        "HEALTHCHECK_TIMEOUT_MS",
        "LOG_FORMAT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info").kill_on_drop(true);
    cmd
}

async fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("binary did not exit")
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn help_and_version() {
    let (code, stdout, _) = run(command().arg("--help")).await;
    assert_eq!(code, 0);
    for needle in [
        "healthcheck",
        "PROVIDER_ADDR",
        "BINANCE_BASE_URL",
        "BINANCE_TIMEOUT_MS",
    ] {
        assert!(stdout.contains(needle), "--help lacks {needle}:\n{stdout}");
    }
    let (code, stdout, _) = run(command().arg("--version")).await;
    assert_eq!(code, 0);
    assert_eq!(
        stdout.trim(),
        format!("binance-provider {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test]
async fn the_binary_defaults_are_the_configs() {
    // config::defaults is the one source: --help shows what the binary uses, and Config::new
    // (what the unit tests build) reads the same constants.
    use binance_provider::config::{DEFAULT_ADDR, DEFAULT_BASE_URL, defaults as d};
    let (_, serve, _) = run(command().arg("--help")).await;
    let (_, health, _) = run(command().args(["healthcheck", "--help"])).await;
    let cases = [
        (&serve, "PROVIDER_ADDR", DEFAULT_ADDR.to_string()),
        (&serve, "BINANCE_BASE_URL", DEFAULT_BASE_URL.to_string()),
        (
            &serve,
            "BINANCE_CONNECT_TIMEOUT_MS",
            d::CONNECT_TIMEOUT_MS.to_string(),
        ),
        (
            &serve,
            "BINANCE_TIMEOUT_MS",
            d::REQUEST_TIMEOUT_MS.to_string(),
        ),
        (
            &serve,
            "BINANCE_CALL_TIMEOUT_MS",
            d::CALL_TIMEOUT_MS.to_string(),
        ),
        (&serve, "BINANCE_MAX_RETRIES", d::MAX_RETRIES.to_string()),
        (
            &serve,
            "BINANCE_RETRY_BACKOFF_MS",
            d::RETRY_BACKOFF_MS.to_string(),
        ),
        (
            &serve,
            "BINANCE_RETRY_AFTER_MAX_MS",
            d::RETRY_AFTER_MAX_MS.to_string(),
        ),
        (
            &serve,
            "REPORT_CACHE_TTL_MS",
            d::REPORT_CACHE_TTL_MS.to_string(),
        ),
        (
            &serve,
            "SHUTDOWN_DRAIN_MS",
            d::SHUTDOWN_DRAIN_MS.to_string(),
        ),
        (
            &serve,
            "SHUTDOWN_GRACE_MS",
            d::SHUTDOWN_GRACE_MS.to_string(),
        ),
        (
            &health,
            "HEALTHCHECK_TIMEOUT_MS",
            d::HEALTHCHECK_TIMEOUT_MS.to_string(),
        ),
    ];
    for (help, var, value) in cases {
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        let want = format!("[env: {var}=] [default: {value}]");
        assert!(flat.contains(&want), "--help lacks {want}:\n{help}");
    }
    let config = binance_provider::config::Config::default();
    assert_eq!(
        config.call_timeout,
        Duration::from_millis(d::CALL_TIMEOUT_MS)
    );
    assert_eq!(
        config.shutdown_drain,
        Duration::from_millis(d::SHUTDOWN_DRAIN_MS)
    );
}

#[tokio::test]
async fn healthcheck_succeeds_against_a_serving_server() {
    let fake = FakeBinance::start().await;
    let provider = Provider::start(test_config(&fake.url)).await;
    // 0.0.0.0 (what the container listens on) is dialled as 127.0.0.1.
    let addr = format!("0.0.0.0:{}", provider.addr.port());
    let (code, _, stderr) = run(command().arg("healthcheck").env("PROVIDER_ADDR", addr)).await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run(command()
        .args(["healthcheck", "--service", "provider.v1.Provider", "--addr"])
        .arg(provider.addr.to_string()))
    .await;
    assert_eq!(code, 0, "{stderr}");
}

#[tokio::test]
async fn healthcheck_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let (code, _, stderr) = run(command()
        .arg("healthcheck")
        .env("PROVIDER_ADDR", format!("127.0.0.1:{port}")))
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("unhealthy"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn healthcheck_fails_against_a_server_that_is_not_grpc() {
    // The fake Binance speaks HTTP/1 only: connecting works, the health call does not.
    let fake = FakeBinance::start().await;
    let addr = fake.url.trim_start_matches("http://").to_string();
    let (code, _, stderr) = run(command()
        .arg("healthcheck")
        .env("PROVIDER_ADDR", addr)
        .env("HEALTHCHECK_TIMEOUT_MS", "1000"))
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("unhealthy"), "{stderr}");
}

#[tokio::test]
async fn healthcheck_fails_for_an_unknown_service() {
    let fake = FakeBinance::start().await;
    let provider = Provider::start(test_config(&fake.url)).await;
    let (code, _, stderr) = run(command()
        .args(["healthcheck", "--service", "nope.v1.Nope"])
        .env("PROVIDER_ADDR", provider.addr.to_string()))
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("unhealthy"), "{stderr}");
}

#[tokio::test]
async fn a_bad_base_url_is_refused_at_startup() {
    let (code, _, stderr) = run(command()
        .env("PROVIDER_ADDR", "127.0.0.1:0")
        .env("BINANCE_BASE_URL", "ftp://example.com"))
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("BINANCE_BASE_URL"), "{stderr}");

    // The same failure as structured logs: one JSON object per line.
    let (code, _, stderr) = run(command()
        .env("PROVIDER_ADDR", "127.0.0.1:0")
        .env("BINANCE_BASE_URL", "ftp://example.com")
        .env("LOG_FORMAT", "json"))
    .await;
    assert_ne!(code, 0);
    let line: serde_json::Value = serde_json::from_str(stderr.lines().next().expect("a log line"))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stderr}"));
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("ftp://example.com"),
        "{line}"
    );
}

/// The lines a spawned server wrote to stderr so far.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<String>>>);

impl Logs {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A running binary: the process, its address and its log lines.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
    logs: Logs,
}

/// Starts the binary on a random port and waits for its "listening" log line.
async fn spawn_server(fake: &FakeBinance, env: &[(&str, &str)]) -> Server {
    let mut child = command()
        .env("PROVIDER_ADDR", "127.0.0.1:0")
        .env("BINANCE_BASE_URL", &fake.url)
        .env("BINANCE_TIMEOUT_MS", "5000")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn binary");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            if line.contains("listening") {
                let token = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .expect("addr= in the listening line");
                return token.parse().expect("socket address");
            }
        }
        panic!("binary exited before listening");
    })
    .await
    .expect("no listening line");
    // Keep draining stderr so the child never blocks on a full pipe.
    let logs = Logs::default();
    let sink = logs.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            sink.0.lock().unwrap().push(line);
        }
    });
    Server { child, addr, logs }
}

async fn stops_on(signal: libc::c_int) {
    let fake = FakeBinance::start().await;
    let Server {
        mut child, addr, ..
    } = spawn_server(&fake, &[("SHUTDOWN_DRAIN_MS", "100")]).await;
    let mut client =
        binance_provider::proto::provider_client::ProviderClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    ok(invoke(
        &mut client,
        "binance.get_ticker",
        json!({"symbol": "BTCUSDT"}),
    )
    .await);

    let pid = child.id().expect("pid") as libc::pid_t;
    let started = Instant::now();
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("did not exit within 5 s of the signal")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    stops_on(libc::SIGTERM).await;
}

#[tokio::test]
async fn sigint_shuts_down_gracefully() {
    stops_on(libc::SIGINT).await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_a_stuck_call_beyond_the_grace_period() {
    let fake = FakeBinance::start().await;
    fake.fail(Mode::Hang, usize::MAX);
    let Server {
        mut child, addr, ..
    } = spawn_server(
        &fake,
        &[
            ("BINANCE_TIMEOUT_MS", "30000"),
            ("BINANCE_CALL_TIMEOUT_MS", "30000"),
            ("SHUTDOWN_DRAIN_MS", "0"),
            ("SHUTDOWN_GRACE_MS", "1000"),
        ],
    )
    .await;
    let mut client =
        binance_provider::proto::provider_client::ProviderClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    let call = tokio::spawn(async move {
        client
            .invoke(binance_provider::proto::InvokeRequest {
                tool: "binance.get_ticker".into(),
                arguments_json: r#"{"symbol":"BTCUSDT"}"#.into(),
                request_id: "stuck".into(),
            })
            .await
    });
    // Signal once the call is in flight (it has reached the fake).
    fake.wait_for_hit("/api/v3/ticker/24hr").await;
    let started = Instant::now();
    let pid = child.id().expect("pid") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("did not exit within 5 s of SIGTERM")
        .unwrap();
    let elapsed = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        elapsed >= Duration::from_millis(900),
        "did not wait for the grace period: {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    // The stuck call ends with a transport error instead of hanging the client.
    let outcome = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("client hung");
    assert!(outcome.unwrap().is_err());
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn healthcheck_connects_with_tcp_nodelay() {
    // A listener that accepts and never answers: the check's connection stays open while its
    // socket option is read.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let check = tokio::spawn(binance_provider::healthcheck::check(
        addr,
        "",
        Duration::from_secs(10),
    ));
    let (_conn, client_addr) = listener.accept().await.unwrap();
    // The client sets the option right after its connect completes, which may be just after our
    // accept: poll briefly rather than read once.
    // (Linux may give the same ephemeral port to connections to other peers: filter by peer.)
    let sockets = poll(
        Duration::from_secs(1),
        || {
            common::connected_sockets(client_addr)
                .into_iter()
                .filter(|(peer, _)| *peer == addr)
                .collect::<Vec<_>>()
        },
        |s| *s == [(addr, true)],
    )
    .await;
    assert_eq!(sockets, [(addr, true)]);
    check.abort();
}

#[tokio::test]
async fn a_huge_argument_is_echoed_bounded_in_the_error_and_the_log() {
    let fake = FakeBinance::start().await;
    let server = spawn_server(&fake, &[]).await;
    let mut client = binance_provider::proto::provider_client::ProviderClient::connect(format!(
        "http://{}",
        server.addr
    ))
    .await
    .unwrap();
    let huge = "A".repeat(1 << 20);
    let marker = "(1048576 characters)";
    let calls = [
        ("binance.get_ticker".to_string(), json!({ "symbol": huge })),
        (huge.clone(), json!({"symbol": "BTCUSDT"})),
    ];
    for (tool, args) in calls {
        let resp = client
            .invoke(binance_provider::proto::InvokeRequest {
                tool,
                arguments_json: args.to_string(),
                request_id: huge.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let Some(Outcome::Error(e)) = resp.outcome else {
            panic!("expected a tool error");
        };
        assert!(e.message.len() < 400, "{} bytes", e.message.len());
        assert!(e.message.contains(marker), "{}", e.message);
    }
    // The log lines of both calls are bounded too (the tool name and request id are the caller's).
    let failed = poll(
        Duration::from_secs(5),
        || {
            let lines = server.logs.lines();
            lines
                .into_iter()
                .filter(|l| l.contains("failed"))
                .collect::<Vec<_>>()
        },
        |f| f.len() >= 2,
    )
    .await;
    assert_eq!(failed.len(), 2, "{failed:?}");
    for line in failed {
        assert!(line.len() < 2_000, "a {}-byte log line", line.len());
        assert!(line.contains(marker), "{line}");
    }
    assert_eq!(fake.total_hits(), 0);
}

/// The health status of `service` at `addr`, over a new connection (as a probe makes one).
async fn probe(addr: std::net::SocketAddr, service: &str) -> Result<ServingStatus, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map_err(|s| format!("check: {s}"))?;
    Ok(resp.into_inner().status())
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("pid") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

#[tokio::test]
async fn sigterm_reports_not_serving_and_keeps_serving_for_the_drain() {
    let fake = FakeBinance::start().await;
    let Server {
        mut child,
        addr,
        logs,
    } = spawn_server(&fake, &[("SHUTDOWN_DRAIN_MS", "2000")]).await;
    assert_eq!(probe(addr, "").await, Ok(ServingStatus::Serving));
    let started = Instant::now();
    sigterm(&child);

    // At once NOT_SERVING, on new connections: a probe is refused nothing.
    let status = loop {
        let status = probe(addr, "").await;
        if status != Ok(ServingStatus::Serving) || started.elapsed() > Duration::from_secs(1) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        status,
        Ok(ServingStatus::NotServing),
        "{:?} after SIGTERM; exit: {:?}; logs: {:#?}",
        started.elapsed(),
        child.try_wait(),
        logs.lines()
    );
    assert_eq!(
        probe(addr, "provider.v1.Provider").await,
        Ok(ServingStatus::NotServing)
    );
    // The container healthcheck says so too.
    let (code, _, stderr) = run(command()
        .arg("healthcheck")
        .env("PROVIDER_ADDR", addr.to_string()))
    .await;
    assert_ne!(code, 0);
    assert!(stderr.contains("NOT_SERVING"), "{stderr}");
    // Calls that still arrive during the drain are served.
    let mut client =
        binance_provider::proto::provider_client::ProviderClient::connect(format!("http://{addr}"))
            .await
            .expect("accepting during the drain");
    ok(invoke(
        &mut client,
        "binance.get_ticker",
        json!({"symbol": "BTCUSDT"}),
    )
    .await);
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "the checks above took the whole drain ({:?}): inconclusive",
        started.elapsed()
    );

    // After the drain: exit 0, and nothing listens any more.
    let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
        .await
        .expect("did not exit after the drain")
        .unwrap();
    let elapsed = started.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        elapsed >= Duration::from_millis(1_900),
        "left before the drain ended: {elapsed:?}"
    );
    assert!(probe(addr, "").await.unwrap_err().starts_with("connect"));
}

#[tokio::test]
async fn in_flight_calls_finish_after_the_drain() {
    let fake = FakeBinance::start().await;
    let Server {
        mut child,
        addr,
        logs,
    } = spawn_server(
        &fake,
        &[("SHUTDOWN_DRAIN_MS", "200"), ("SHUTDOWN_GRACE_MS", "5000")],
    )
    .await;
    fake.fail(Mode::Slow(Duration::from_millis(1_500)), 1);
    let mut client =
        binance_provider::proto::provider_client::ProviderClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
    let call = tokio::spawn(async move {
        invoke(
            &mut client,
            "binance.get_ticker",
            json!({"symbol": "BTCUSDT"}),
        )
        .await
    });
    fake.wait_for_hit("/api/v3/ticker/24hr").await;
    let started = Instant::now();
    sigterm(&child);
    // The call outlives the 200 ms drain and is answered normally.
    let (j, _) = ok(tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the in-flight call hung")
        .unwrap());
    assert_eq!(j["symbol"], "BTCUSDT");
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("did not exit after its last call")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The last lines may still be in the pipe when the process is gone.
    let lines = poll(
        Duration::from_secs(5),
        || logs.lines(),
        |l| l.iter().any(|l| l.contains("stopped")),
    )
    .await;
    let order: Vec<usize> = ["draining", "shutting down", "stopped"]
        .iter()
        .map(|m| {
            lines
                .iter()
                .position(|l| l.contains(m))
                .unwrap_or_else(|| panic!("no {m:?} log line in {lines:#?}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{lines:#?}");
}
