//! The gRPC server: `provider.v1.Provider` plus `grpc.health.v1.Health`, with bounded graceful shutdown.

use std::future::Future;
use std::time::Instant;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tracing::{Instrument, error, info, info_span, warn};

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
}

impl ProviderService {
    pub fn new(config: &Config) -> Result<Self, String> {
        Ok(Self {
            tools: Tools::new(config)?,
        })
    }
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
        let joined =
            tokio::spawn(async move { tools.invoke(&tool, &args).await }.instrument(span.clone()))
                .await;
        let result = joined.unwrap_or_else(|e| {
            Err(ToolError::new(
                ErrorKind::Internal,
                format!("the tool failed unexpectedly: {e}"),
            ))
        });
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
}

/// Serves until `shutdown` completes, then stops accepting calls, reports NOT_SERVING on the health
/// service and lets in-flight calls finish for at most `config.shutdown_grace`.
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

    let local = listener.local_addr().ok();
    let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(health)
        .add_service(ProviderServer::new(provider))
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
    info!(
        grace_ms = config.shutdown_grace.as_millis() as u64,
        "shutting down"
    );
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
        .await;
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
