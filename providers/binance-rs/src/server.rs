//! The gRPC server: `provider.v1.Provider`, `grpc.health.v1.Health` and gRPC reflection (v1 and
//! v1alpha), with a drain and a bounded graceful shutdown.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tracing::{Instrument, error, info, info_span, warn};

use crate::binance::Deadline;
use crate::config::Config;
use crate::echo::{LOG_MAX_CHARS, clip};
use crate::proto::provider_server::{Provider, ProviderServer};
use crate::proto::{
    ErrorCode, InvokeRequest, InvokeResponse, ListCapabilitiesRequest, ListCapabilitiesResponse,
    Tool, ToolError as ProtoToolError, ToolResult, invoke_response::Outcome,
};
use crate::tools::{ErrorKind, ToolError, Tools, catalog};
use crate::{PROVIDER_NAME, VERSION};

/// The fully qualified gRPC service name, also registered with the health service.
pub const SERVICE_NAME: &str = "provider.v1.Provider";

/// Implements `provider.v1.Provider` on top of [`Tools`].
pub struct ProviderService {
    tools: Tools,
    call_timeout: Duration,
}

impl ProviderService {
    pub fn new(config: &Config) -> Result<Self, String> {
        Ok(Self {
            tools: Tools::new(config)?,
            call_timeout: config.call_timeout,
        })
    }

    /// How long this call may take: the configured limit, or less when the caller's own gRPC
    /// deadline is sooner. A margin is kept so the answer (a TIMEOUT tool error that names the
    /// limit) reaches the caller before its deadline turns the call into a bare CANCELLED.
    fn budget<T>(&self, request: &Request<T>) -> Duration {
        match caller_timeout(request.metadata()) {
            Some(t) => {
                let margin = (t / 10).min(Duration::from_millis(500));
                self.call_timeout.min(t.saturating_sub(margin))
            }
            None => self.call_timeout,
        }
    }
}

/// The caller's deadline from the `grpc-timeout` header (gRPC over HTTP/2: up to 8 digits and a
/// unit, e.g. `15S`, `14999906u`); `None` when absent or malformed.
fn caller_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn proto_code(kind: ErrorKind) -> ErrorCode {
    match kind {
        ErrorKind::InvalidArguments => ErrorCode::InvalidArguments,
        ErrorKind::UnknownTool => ErrorCode::UnknownTool,
        ErrorKind::UpstreamUnavailable => ErrorCode::UpstreamUnavailable,
        ErrorKind::UpstreamRejected => ErrorCode::UpstreamRejected,
        ErrorKind::Timeout => ErrorCode::Timeout,
        ErrorKind::Internal => ErrorCode::Internal,
    }
}

#[tonic::async_trait]
impl Provider for ProviderService {
    async fn list_capabilities(
        &self,
        _request: Request<ListCapabilitiesRequest>,
    ) -> Result<Response<ListCapabilitiesResponse>, Status> {
        let tools = catalog()
            .into_iter()
            .map(|t| Tool {
                name: t.name.to_string(),
                description: t.description.to_string(),
                input_schema_json: t.input_schema.to_string(),
                output_schema_json: t.output_schema.to_string(),
                // Every Binance tool reads public market data and changes nothing.
                read_only: true,
            })
            .collect();
        Ok(Response::new(ListCapabilitiesResponse {
            provider: PROVIDER_NAME.to_string(),
            version: VERSION.to_string(),
            tools,
        }))
    }

    async fn invoke(
        &self,
        request: Request<InvokeRequest>,
    ) -> Result<Response<InvokeResponse>, Status> {
        let budget = self.budget(&request);
        let req = request.into_inner();
        // Both fields are the caller's: bounded, like every echoed value.
        let span = info_span!(
            "invoke",
            tool = %clip(&req.tool, LOG_MAX_CHARS),
            request_id = %clip(&req.request_id, LOG_MAX_CHARS)
        );
        let started = Instant::now();
        let tools = self.tools.clone();
        let (tool, args) = (req.tool.clone(), req.arguments_json);
        // A separate task isolates panics (reported as INTERNAL instead of tearing down the
        // connection) and lets a shared report build finish even if this caller goes away.
        // The Binance requests stop at the deadline; the outer timeout also bounds a caller that
        // joined a shared report build started by a caller with a later deadline.
        let call = async move {
            let deadline = Deadline::after(budget);
            tokio::time::timeout(budget, tools.invoke(&tool, &args, deadline)).await
        };
        let joined = tokio::spawn(call.instrument(span.clone())).await;
        let result = match joined {
            Ok(Ok(result)) => result,
            Ok(Err(_elapsed)) => Err(ToolError::new(
                ErrorKind::Timeout,
                format!(
                    "no answer within this call's {} ms deadline",
                    budget.as_millis()
                ),
            )),
            Err(e) => Err(ToolError::new(
                ErrorKind::Internal,
                format!("the tool failed unexpectedly: {e}"),
            )),
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let outcome = match result {
            Ok(out) => {
                span.in_scope(|| info!(elapsed_ms, "ok"));
                Outcome::Result(ToolResult {
                    json: out.json.to_string(),
                    text: out.text,
                })
            }
            Err(e) => {
                span.in_scope(|| match e.kind {
                    ErrorKind::Internal => error!(elapsed_ms, kind = ?e.kind, error = %e.message, "failed"),
                    _ => warn!(elapsed_ms, kind = ?e.kind, upstream_code = e.upstream_code, error = %e.message, "failed"),
                });
                Outcome::Error(ProtoToolError {
                    code: proto_code(e.kind) as i32,
                    message: e.message,
                    upstream_code: e.upstream_code,
                })
            }
        };
        Ok(Response::new(InvokeResponse {
            outcome: Some(outcome),
        }))
    }
}

/// Error starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Serves until `shutdown` completes, then drains and stops:
///
/// 1. the health service reports NOT_SERVING at once (`""` and `provider.v1.Provider`);
/// 2. for `config.shutdown_drain` the server keeps accepting and serving as before, so a rolling
///    deploy's health checks see NOT_SERVING (not "connection refused") and move traffic away
///    while calls that still arrive are answered;
/// 3. then it stops accepting (HTTP/2 GOAWAY to every connection) and lets in-flight calls finish
///    for at most `config.shutdown_grace`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let provider = ProviderService::new(&config).map_err(ServeError::Config)?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(SERVICE_NAME, ServingStatus::Serving)
        .await;

    // Reflection lets grpcurl, ghz, Postman and the like call the server without the .proto.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    // v1alpha for older clients (grpcurl before 1.9, many language runtimes' tooling).
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let local = listener.local_addr().ok();
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(health)
        .add_service(ProviderServer::new(provider))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        // Without TCP_NODELAY a one-at-a-time caller waits out Nagle + delayed ACK (~40 ms) on every
        // call; TcpIncoming::from ignores Server::tcp_nodelay, so it is set on the stream itself.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = drain_rx.await;
            },
        );
    tokio::pin!(server);
    if let Some(addr) = local {
        info!(%addr, binance = %config.base_url, version = VERSION, "listening");
    }
    tokio::select! {
        res = &mut server => return res.map_err(ServeError::from),
        () = shutdown => {}
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
        .await;
    info!(
        drain_ms = config.shutdown_drain.as_millis() as u64,
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "draining: health reports NOT_SERVING, still serving"
    );
    // The server future must keep being polled during the drain, or nothing would be served.
    tokio::select! {
        res = &mut server => return res.map_err(ServeError::from),
        () = tokio::time::sleep(config.shutdown_drain) => {}
    }
    info!("shutting down: no new connections, finishing in-flight calls");
    let _ = drain_tx.send(());
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(res) => {
            info!("stopped");
            res.map_err(ServeError::from)
        }
        Err(_) => {
            warn!("in-flight calls did not finish within the grace period; stopping anyway");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn timeout_of(value: &str) -> Option<Duration> {
        let mut m = MetadataMap::new();
        m.insert("grpc-timeout", value.parse().unwrap());
        caller_timeout(&m)
    }

    #[test]
    fn grpc_timeout_headers_are_read_in_every_unit() {
        assert_eq!(timeout_of("15S"), Some(Duration::from_secs(15)));
        assert_eq!(
            timeout_of("14999906u"),
            Some(Duration::from_micros(14_999_906))
        );
        assert_eq!(timeout_of("250m"), Some(Duration::from_millis(250)));
        assert_eq!(timeout_of("2M"), Some(Duration::from_secs(120)));
        assert_eq!(timeout_of("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(timeout_of("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(timeout_of(bad), None, "{bad:?}");
        }
        assert_eq!(caller_timeout(&MetadataMap::new()), None);
    }
}
