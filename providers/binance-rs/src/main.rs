//! The `binance-provider` binary: serve (default) or run the container healthcheck.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing::error;
use tracing_subscriber::EnvFilter;

use binance_provider::config::{Config, DEFAULT_ADDR, DEFAULT_BASE_URL, defaults};
use binance_provider::{healthcheck, server};

/// gRPC market-data provider (provider.v1) serving read-only Binance spot data as tools.
///
/// Without a subcommand it serves. Every option can also be set by the environment variable shown.
#[derive(Parser, Debug)]
#[command(
    name = "binance-provider",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve provider.v1.Provider and grpc.health.v1 (the default).
    Serve(ServeArgs),
    /// Exit 0 only if the local server's gRPC health service answers SERVING (for container healthchecks).
    Healthcheck(HealthcheckArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "PROVIDER_ADDR", default_value = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Base URL of Binance's REST API (point it at a fake for tests).
    #[arg(long, env = "BINANCE_BASE_URL", default_value = DEFAULT_BASE_URL)]
    binance_base_url: String,
    /// Connect timeout for Binance, in milliseconds.
    #[arg(long, env = "BINANCE_CONNECT_TIMEOUT_MS", default_value_t = defaults::CONNECT_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    binance_connect_timeout_ms: u64,
    /// Timeout of one whole request to Binance, in milliseconds.
    #[arg(long, env = "BINANCE_TIMEOUT_MS", default_value_t = defaults::REQUEST_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    binance_timeout_ms: u64,
    /// Limit for one tool call's Binance requests together (retries and waits included), in ms;
    /// a caller's shorter gRPC deadline shortens it.
    #[arg(long, env = "BINANCE_CALL_TIMEOUT_MS", default_value_t = defaults::CALL_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    binance_call_timeout_ms: u64,
    /// Retries after the first attempt on HTTP 429/418/5xx and connection failures.
    #[arg(long, env = "BINANCE_MAX_RETRIES", default_value_t = defaults::MAX_RETRIES, value_parser = clap::value_parser!(u32).range(0..=10))]
    binance_max_retries: u32,
    /// First backoff between retries when Binance sends no Retry-After (doubles each retry), in ms.
    #[arg(long, env = "BINANCE_RETRY_BACKOFF_MS", default_value_t = defaults::RETRY_BACKOFF_MS)]
    binance_retry_backoff_ms: u64,
    /// Longest Retry-After to wait for, in ms; a longer one fails the call at once.
    #[arg(long, env = "BINANCE_RETRY_AFTER_MAX_MS", default_value_t = defaults::RETRY_AFTER_MAX_MS)]
    binance_retry_after_max_ms: u64,
    /// How long a market report is reused for identical calls, in ms (0 disables reuse of finished reports).
    #[arg(long, env = "REPORT_CACHE_TTL_MS", default_value_t = defaults::REPORT_CACHE_TTL_MS)]
    report_cache_ttl_ms: u64,
    /// After SIGTERM/SIGINT, how long to keep serving while health reports NOT_SERVING, in ms.
    #[arg(long, env = "SHUTDOWN_DRAIN_MS", default_value_t = defaults::SHUTDOWN_DRAIN_MS)]
    shutdown_drain_ms: u64,
    /// After the drain, how long in-flight calls may take to finish, in ms.
    #[arg(long, env = "SHUTDOWN_GRACE_MS", default_value_t = defaults::SHUTDOWN_GRACE_MS)]
    shutdown_grace_ms: u64,
    /// Log format on stderr: "text" or "json" (filter with RUST_LOG, default "info").
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Args, Debug)]
struct HealthcheckArgs {
    /// Address the server listens on (0.0.0.0 / [::] are dialled as loopback).
    #[arg(long, env = "PROVIDER_ADDR", default_value = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Give up after this many milliseconds.
    #[arg(long, env = "HEALTHCHECK_TIMEOUT_MS", default_value_t = defaults::HEALTHCHECK_TIMEOUT_MS, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Service to check; "" means the whole server.
    #[arg(long, default_value = "")]
    service: String,
}

impl ServeArgs {
    fn config(&self) -> Config {
        Config {
            base_url: self.binance_base_url.clone(),
            connect_timeout: Duration::from_millis(self.binance_connect_timeout_ms),
            request_timeout: Duration::from_millis(self.binance_timeout_ms),
            call_timeout: Duration::from_millis(self.binance_call_timeout_ms),
            max_retries: self.binance_max_retries,
            retry_backoff: Duration::from_millis(self.binance_retry_backoff_ms),
            retry_after_cap: Duration::from_millis(self.binance_retry_after_max_ms),
            report_ttl: Duration::from_millis(self.report_cache_ttl_ms),
            shutdown_drain: Duration::from_millis(self.shutdown_drain_ms),
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        }
    }
}

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A future that completes on the first SIGTERM or SIGINT.
///
/// The handlers are installed when this is called, not when the future is first polled: called
/// before the port is bound, a signal sent once the server is up always starts the graceful
/// shutdown instead of killing the process with the default action.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!(signal = "SIGINT", "received"),
            _ = term.recv() => tracing::info!(signal = "SIGTERM", "received"),
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!(signal = "SIGINT", "received");
        } else {
            std::future::pending::<()>().await;
        }
    })
}

async fn run_server(args: ServeArgs) -> ExitCode {
    init_logging(&args.log_format);
    let config = args.config();
    // Refuse a bad configuration before taking the port, so a restart loop says why at once.
    if let Err(e) = binance_provider::binance::BinanceClient::new(&config) {
        error!(error = %e, "invalid configuration");
        return ExitCode::FAILURE;
    }
    let shutdown = match shutdown_signal() {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM/SIGINT");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            error!(addr = %args.addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match server::serve(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "server stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run_healthcheck(args: HealthcheckArgs) -> ExitCode {
    let timeout = Duration::from_millis(args.timeout_ms);
    match healthcheck::check(args.addr, &args.service, timeout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("unhealthy: {msg}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => run_server(args).await,
        Command::Healthcheck(args) => run_healthcheck(args).await,
    }
}
