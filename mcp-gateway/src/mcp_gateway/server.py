"""The MCP server (tools/list, tools/call over the provider registry) and its HTTP app.

Tool results: the provider's markdown ``text`` (when it sent one) is the first TextContent; the
JSON result follows as a second TextContent (for clients that ignore structured content) and is
also the ``structuredContent``. A tool that declares an output schema publishes it as its
``outputSchema`` and its results are checked against it (a result that does not match is a
tool error naming the mismatch, never a result a client would reject); a tool without one gets
a JSON object as is and any other JSON value wrapped as ``{"result": value}``, since MCP
clients expect an object there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mcp_types as types
from jsonschema.exceptions import best_match
from mcp.server import Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.lowlevel.server import NotificationOptions
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from mcp_gateway.config import Settings
from mcp_gateway.drain import ConnectionCloseWhileDraining, Drain
from mcp_gateway.notify import ToolListNotifier
from mcp_gateway.providers import (
    DiscoveredTool,
    ProviderCallError,
    ProviderRegistry,
    ProviderStatus,
    ToolOutput,
    UnknownToolError,
)
from mcp_gateway.security import BearerTokenMiddleware, HostOriginMiddleware
from mcp_gateway.sessions import GatewaySessionManager
from mcp_gateway.text import NAME_LIMIT, clip, quote

logger = logging.getLogger(__name__)

SERVER_NAME = "mcp-gateway"
# Handshake-era clients learn from initialize that the tool list can change (and is announced).
NOTIFICATIONS = NotificationOptions(tools_changed=True)


def _package_version() -> str:
    try:
        return version("mcp-gateway")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0"


def _error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def _result_from_output(output: ToolOutput, tool: DiscoveredTool | None) -> types.CallToolResult:
    validator = tool.output_validator if tool is not None else None
    structured: Any = None
    if output.json_text:
        structured = output.value
        if validator is None and not isinstance(structured, dict):
            structured = {"result": structured}
    if tool is not None and validator is not None:
        error = best_match(validator.iter_errors(structured))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(the result itself)"
            return _error_result(
                f"{tool.name}: provider {tool.provider!r} returned a result that does not match "
                f"the tool's outputSchema at {clip(where, NAME_LIMIT)}: {clip(error.message, 300)}"
            )
    content: list[types.ContentBlock] = []
    if output.text:
        content.append(types.TextContent(text=output.text))
    if output.json_text:
        content.append(types.TextContent(text=output.json_text))
    if not content:
        content.append(types.TextContent(text="(the tool returned no data)"))
    return types.CallToolResult(content=content, structured_content=structured)


def _mcp_tool(tool: DiscoveredTool) -> types.Tool:
    return types.Tool(
        name=tool.name,
        description=tool.description or None,
        input_schema=tool.input_schema,
        output_schema=tool.output_schema,
        annotations=types.ToolAnnotations(read_only_hint=True) if tool.read_only else None,
    )


def build_mcp_server(registry: ProviderRegistry, notifier: ToolListNotifier) -> Server[Any]:
    """The low-level MCP server whose tools are whatever the providers offer right now."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[_mcp_tool(t) for t in registry.list_tools()])

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            output, tool = await registry.call(params.name, dict(params.arguments or {}))
        except UnknownToolError as exc:
            # Not a tool failure but a bad request: MCP wants a protocol error here.
            raise MCPError(types.INVALID_PARAMS, str(exc)) from exc
        except ProviderCallError as exc:
            return _error_result(str(exc))
        except Exception as exc:  # never let one call take the session down
            logger.exception("call %s failed unexpectedly", quote(params.name))
            return _error_result(
                f"{clip(params.name, NAME_LIMIT)}: the gateway failed to run the call: "
                f"{clip(str(exc))}"
            )
        return _result_from_output(output, tool)

    def input_schema(name: str) -> dict[str, Any] | None:
        tool = registry.tool(name)
        return tool.input_schema if tool is not None else None

    return Server(
        SERVER_NAME,
        version=_package_version(),
        instructions=(
            "Market-data tools of the configured providers; tool names are prefixed with the "
            "provider's name (e.g. binance.get_ticker)."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        # 2026-07-28 clients hear of tool-list changes on subscriptions/listen streams.
        on_subscriptions_listen=notifier.listen,
        get_tool_input_schema=input_schema,
    )


def _provider_json(status: ProviderStatus, now: float) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": status.name,
        "address": status.address,
        "status": status.health.status,
        "tools": status.tools,
    }
    detail = status.health.detail or status.discovery_error
    if status.health.serving and not status.discovered:
        detail = status.discovery_error or "tools not discovered yet"
    if detail:
        entry["detail"] = detail
    upstream: dict[str, Any] = {"status": status.upstream.status}
    if status.upstream.detail:
        upstream["detail"] = status.upstream.detail
    if status.upstream.observed_at is not None:
        upstream["observed_seconds_ago"] = round(now - status.upstream.observed_at, 1)
    entry["upstream"] = upstream
    return entry


def create_app(settings: Settings, registry: ProviderRegistry | None = None) -> Starlette:
    """The HTTP app: ``/mcp`` (streamable HTTP), ``GET /health`` and ``GET /ready``.

    ``app.state.drain`` is the :class:`Drain` the process entry point drives on SIGTERM.
    """
    registry = registry or ProviderRegistry(
        settings.providers, retry_seconds=settings.provider_retry_seconds
    )
    notifier = ToolListNotifier()
    registry.add_listener(notifier.tools_changed)
    mcp_server = build_mcp_server(registry, notifier)
    stateless = settings.session_mode == "stateless"
    init_options = mcp_server.create_initialization_options(None if stateless else NOTIFICATIONS)
    sessions = GatewaySessionManager(
        mcp_server,
        notifier,
        init_options=init_options,
        secret=settings.session_secret,
        stateless=stateless,
        idle_timeout=settings.session_idle_seconds,
        max_sessions=settings.max_sessions,
    )
    mcp_endpoint: ASGIApp = sessions
    if settings.token:
        mcp_endpoint = BearerTokenMiddleware(mcp_endpoint, settings.token)
    mcp_endpoint = HostOriginMiddleware(
        mcp_endpoint, settings.allowed_hosts, settings.allowed_origins
    )
    drain = Drain()
    drain.on_finish += [sessions.close_get_streams, notifier.listen.close]

    async def health(request: Request) -> Response:
        if drain.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        statuses = registry.statuses()
        now = time.time()
        providers = [_provider_json(s, now) for s in statuses]
        if drain.draining:
            return JSONResponse({"status": "draining", "providers": providers}, status_code=503)
        all_ready = all(s.ready for s in statuses)
        body = {"status": "ready" if all_ready else "not ready", "providers": providers}
        return JSONResponse(body, status_code=200 if all_ready else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.info(
            "providers from %s: %s",
            settings.providers_file,
            ", ".join(f"{p.name}={p.address}" for p in settings.enabled_providers) or "none",
        )
        if not stateless and not settings.session_secret_shared:
            logger.info(
                "MCP_SESSION_SECRET is not set: sessions are valid on this process only "
                "(set one secret on every replica so sessions survive a deploy)"
            )
        async with registry, sessions.run():
            await registry.wait_first_discovery()
            yield

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/mcp", mcp_endpoint),
        ],
        lifespan=lifespan,
    )
    app.add_middleware(ConnectionCloseWhileDraining, drain=drain)
    app.state.drain = drain
    app.state.sessions = sessions
    return app


class _StdioSession:
    """Remembers the stdio client's session so a tool-list change can be announced to it."""

    def __init__(self, notifier: ToolListNotifier) -> None:
        self._notifier = notifier

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        # Handshake era only (2026-07-28 clients listen on subscriptions/listen instead), and
        # not before the handshake: a server must not notify an uninitialized client.
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS and ctx.method != "initialize":
            self._notifier.register("stdio", ctx.session)
        return await call_next(ctx)


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP over stdin/stdout until the client closes stdin."""
    from mcp.server.stdio import stdio_server

    registry = ProviderRegistry(settings.providers, retry_seconds=settings.provider_retry_seconds)
    notifier = ToolListNotifier()
    registry.add_listener(notifier.tools_changed)
    mcp_server = build_mcp_server(registry, notifier)
    mcp_server.middleware.append(_StdioSession(notifier))
    async with registry, stdio_server() as (read_stream, write_stream):
        await registry.wait_first_discovery()
        await mcp_server.run(
            read_stream, write_stream, mcp_server.create_initialization_options(NOTIFICATIONS)
        )
