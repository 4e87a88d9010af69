"""The gateway's side of provider.v1: one reused gRPC channel per provider, discovery, calls.

Every failure a provider can cause (down, slow, broken answer, tool error) becomes a
:class:`ProviderCallError` whose message names the provider and says why, so the MCP layer can
hand it to the client as a tool error. Nothing here waits longer than the provider's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc.aio import AioRpcError
from grpc_health.v1 import health_pb2

from mcp_gateway._proto.provider.v1 import provider_pb2, provider_pb2_grpc
from mcp_gateway.config import ProviderConfig

logger = logging.getLogger(__name__)

# Discovery and health checks are short: they run while an MCP client waits on tools/list or a
# load balancer waits on /ready, and a healthy provider answers them from memory.
DISCOVERY_TIMEOUT_SECONDS = 5.0
HEALTH_TIMEOUT_SECONDS = 2.0
# How often providers are re-discovered in the background (also right after one fails).
REFRESH_INTERVAL_SECONDS = 30.0
# gRPC backs off reconnecting to a dead server up to 120 s by default; a provider that restarts
# must be usable again within seconds, so cap the backoff.
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
]


class ProviderCallError(Exception):
    """A provider could not serve a call; the message is meant for the MCP client."""


@dataclass(frozen=True)
class DiscoveredTool:
    """A tool as exposed over MCP, with the provider that serves it."""

    name: str
    description: str
    input_schema: dict[str, Any]
    provider: str


@dataclass(frozen=True)
class ToolOutput:
    """A successful tool result: the provider's JSON value and optional markdown text."""

    value: Any
    json_text: str
    text: str


@dataclass(frozen=True)
class HealthStatus:
    """One provider's answer to grpc.health.v1 Check, for /ready."""

    name: str
    address: str
    status: str
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


def _describe_rpc_error(exc: AioRpcError, cfg: ProviderConfig, timeout: float) -> str:
    where = f"provider {cfg.name!r} at {cfg.address}"
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{where} did not answer within {timeout:g} s (timeout)"
    if code == grpc.StatusCode.UNAVAILABLE:
        return f"{where} is unavailable (down or unreachable): {exc.details()}"
    return f"{where} failed the call with gRPC status {code.name}: {exc.details()}"


@dataclass
class ProviderClient:
    """One provider: its channel (created once, reconnects on its own) and discovered tools."""

    config: ProviderConfig
    tools: dict[str, DiscoveredTool] = field(default_factory=dict)
    version: str = ""
    # Why the last discovery or call failed; None while the provider is healthy.
    last_error: str | None = None
    discovered: bool = False
    _channel: grpc.aio.Channel | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def channel(self) -> grpc.aio.Channel:
        # Created on first use so it binds to the event loop that serves requests.
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.config.address, options=_CHANNEL_OPTIONS)
        return self._channel

    async def close(self) -> None:
        """Close the channel (in-flight calls are cancelled)."""
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None

    @property
    def needs_discovery(self) -> bool:
        return not self.discovered or self.last_error is not None

    async def discover(self) -> None:
        """Ask the provider for its tools (ListCapabilities) and replace the known set.

        On failure the previous tools are dropped (clients should not see tools that cannot
        be called) and ``last_error`` says why.
        """
        async with self._lock:
            timeout = min(self.config.timeout_seconds, DISCOVERY_TIMEOUT_SECONDS)
            stub = provider_pb2_grpc.ProviderStub(self.channel)
            try:
                response = await stub.ListCapabilities(
                    provider_pb2.ListCapabilitiesRequest(), timeout=timeout
                )
            except AioRpcError as exc:
                self._fail(_describe_rpc_error(exc, self.config, timeout))
                return
            tools: dict[str, DiscoveredTool] = {}
            for tool in response.tools:
                try:
                    schema = json.loads(tool.input_schema_json or "{}")
                except json.JSONDecodeError as exc:
                    logger.warning(
                        "provider %r: tool %r skipped: input schema is not JSON: %s",
                        self.config.name,
                        tool.name,
                        exc,
                    )
                    continue
                if not isinstance(schema, dict):
                    logger.warning(
                        "provider %r: tool %r skipped: input schema is not a JSON object",
                        self.config.name,
                        tool.name,
                    )
                    continue
                schema.setdefault("type", "object")
                tools[tool.name] = DiscoveredTool(
                    name=tool.name,
                    description=tool.description,
                    input_schema=schema,
                    provider=self.config.name,
                )
            if not self.discovered or self.last_error is not None:
                logger.info(
                    "provider %r at %s: %d tools discovered (provider %r version %s)",
                    self.config.name,
                    self.config.address,
                    len(tools),
                    response.provider,
                    response.version or "?",
                )
            self.tools = tools
            self.version = response.version
            self.discovered = True
            self.last_error = None

    def _fail(self, reason: str) -> None:
        if self.last_error != reason:
            logger.warning("%s", reason)
        self.last_error = reason
        self.tools = {}
        self.discovered = False

    async def invoke(self, tool: str, arguments: dict[str, Any]) -> ToolOutput:
        """Run ``tool`` on the provider within its timeout; raise ProviderCallError otherwise."""
        cfg = self.config
        request_id = uuid.uuid4().hex
        stub = provider_pb2_grpc.ProviderStub(self.channel)
        logger.info("call %s on provider %r (request %s)", tool, cfg.name, request_id)
        try:
            response = await stub.Invoke(
                provider_pb2.InvokeRequest(
                    tool=tool, arguments_json=json.dumps(arguments), request_id=request_id
                ),
                timeout=cfg.timeout_seconds,
            )
        except AioRpcError as exc:
            reason = _describe_rpc_error(exc, cfg, cfg.timeout_seconds)
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                # Forget its tools until it answers discovery again.
                self._fail(reason)
            logger.warning("call %s (request %s): %s", tool, request_id, reason)
            raise ProviderCallError(f"{tool}: {reason}") from exc
        outcome = response.WhichOneof("outcome")
        if outcome == "error":
            err = response.error
            code = provider_pb2.ErrorCode.Name(err.code).removeprefix("ERROR_CODE_")
            upstream = f", upstream code {err.upstream_code}" if err.upstream_code else ""
            raise ProviderCallError(
                f"{tool} failed in provider {cfg.name!r} ({code}{upstream}): {err.message}"
            )
        if outcome != "result":
            raise ProviderCallError(
                f"{tool}: provider {cfg.name!r} answered with neither a result nor an error"
            )
        result = response.result
        value: Any = None
        if result.json:
            try:
                value = json.loads(result.json)
            except json.JSONDecodeError as exc:
                raise ProviderCallError(
                    f"{tool}: provider {cfg.name!r} sent a result that is not valid JSON: {exc}"
                ) from exc
        return ToolOutput(value=value, json_text=result.json, text=result.text)

    async def check_health(self) -> HealthStatus:
        """grpc.health.v1 Check of the whole server (service "")."""
        cfg = self.config
        # The generated HealthStub is untyped in its stubs; the method path is the standard one.
        check: grpc.aio.UnaryUnaryMultiCallable[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ] = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = await check(
                health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT_SECONDS
            )
        except AioRpcError as exc:
            return HealthStatus(
                cfg.name,
                cfg.address,
                "UNREACHABLE",
                _describe_rpc_error(exc, cfg, HEALTH_TIMEOUT_SECONDS),
            )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return HealthStatus(cfg.name, cfg.address, status)


class ProviderRegistry:
    """All enabled providers; routes tool names to the provider that offers them."""

    def __init__(
        self,
        providers: tuple[ProviderConfig, ...],
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
    ) -> None:
        self.clients = {p.name: ProviderClient(p) for p in providers if p.enabled}
        self._refresh_interval = refresh_interval
        self._refresh_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ProviderRegistry:
        self._refresh_task = asyncio.create_task(self._refresh_loop(), name="provider-refresh")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresh_task
        await asyncio.gather(*(c.close() for c in self.clients.values()))

    async def _refresh_loop(self) -> None:
        # First pass at once so tools are ready before the first client asks, then periodically:
        # a provider that was down is picked up again without anyone calling it.
        while True:
            await self.refresh(only_missing=False)
            await asyncio.sleep(self._refresh_interval)

    async def refresh(self, *, only_missing: bool) -> None:
        """Discover providers concurrently (only those down or never discovered if asked)."""
        clients = [c for c in self.clients.values() if c.needs_discovery or not only_missing]
        await asyncio.gather(*(c.discover() for c in clients))

    async def list_tools(self) -> list[DiscoveredTool]:
        """Every tool of every reachable provider; retries providers that were down."""
        await self.refresh(only_missing=True)
        seen: dict[str, DiscoveredTool] = {}
        for client in self.clients.values():
            for tool in client.tools.values():
                if tool.name in seen:
                    logger.warning(
                        "tool %r offered by providers %r and %r; keeping %r",
                        tool.name,
                        seen[tool.name].provider,
                        tool.provider,
                        seen[tool.name].provider,
                    )
                    continue
                seen[tool.name] = tool
        return list(seen.values())

    def _owner(self, tool: str) -> ProviderClient | None:
        for client in self.clients.values():
            if tool in client.tools:
                return client
        # Not (or no longer) discovered: tool names are prefixed with their provider's name.
        prefix = tool.split(".", 1)[0]
        return self.clients.get(prefix)

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolOutput:
        """Route ``tool`` to its provider and run it.

        Raises:
            LookupError: no enabled provider offers the tool.
            ProviderCallError: the provider is down, slow, or the tool failed.
        """
        client = self._owner(tool)
        if client is None:
            raise LookupError(self._unknown_tool_message(tool))
        if tool not in client.tools:
            await client.discover()
            if client.last_error is not None:
                raise ProviderCallError(f"{tool}: {client.last_error}")
            if tool not in client.tools:
                raise LookupError(self._unknown_tool_message(tool))
        return await client.invoke(tool, arguments)

    def _unknown_tool_message(self, tool: str) -> str:
        known = sorted(name for c in self.clients.values() for name in c.tools)
        return f"unknown tool {tool!r}; available tools: {', '.join(known) or 'none'}"

    async def health(self) -> list[HealthStatus]:
        """Check every enabled provider concurrently."""
        return list(await asyncio.gather(*(c.check_health() for c in self.clients.values())))
