"""The MCP server (tools/list, tools/call over the provider registry) and its HTTP app.

Tool results: the provider's markdown ``text`` (when it sent one) is the first TextContent; the
JSON result follows as a second TextContent (for clients that ignore structured content) and is
also the ``structuredContent`` (a JSON object as is; any other JSON value wrapped as
``{"result": value}``, since MCP 2025-11-25 clients expect an object there).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_gateway.config import Settings
from mcp_gateway.providers import ProviderCallError, ProviderRegistry, ToolOutput

logger = logging.getLogger(__name__)

SERVER_NAME = "mcp-gateway"


def _package_version() -> str:
    try:
        return version("mcp-gateway")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0"


def _result_from_output(output: ToolOutput) -> types.CallToolResult:
    content: list[types.ContentBlock] = []
    if output.text:
        content.append(types.TextContent(text=output.text))
    if output.json_text:
        content.append(types.TextContent(text=output.json_text))
    structured: Any = None
    if output.json_text:
        structured = output.value if isinstance(output.value, dict) else {"result": output.value}
    if not content:
        content.append(types.TextContent(text="(the tool returned no data)"))
    return types.CallToolResult(content=content, structured_content=structured)


def _error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def build_mcp_server(registry: ProviderRegistry) -> Server[Any]:
    """The low-level MCP server whose tools are whatever the providers offer right now."""

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        tools = await registry.list_tools()
        return types.ListToolsResult(
            tools=[
                types.Tool(
                    name=t.name,
                    description=t.description or None,
                    input_schema=t.input_schema,
                )
                for t in tools
            ]
        )

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        try:
            output = await registry.call(params.name, dict(params.arguments or {}))
        except LookupError as exc:
            # Not a tool failure but a bad request: MCP wants a protocol error here.
            raise MCPError(types.INVALID_PARAMS, str(exc)) from exc
        except ProviderCallError as exc:
            return _error_result(str(exc))
        except Exception as exc:  # never let one call take the session down
            logger.exception("call %s failed unexpectedly", params.name)
            return _error_result(f"{params.name}: the gateway failed to run the call: {exc}")
        return _result_from_output(output)

    return Server(
        SERVER_NAME,
        version=_package_version(),
        instructions=(
            "Market-data tools of the configured providers; tool names are prefixed with the "
            "provider's name (e.g. binance.get_ticker)."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


class BearerTokenMiddleware:
    """Refuses requests without ``Authorization: Bearer <token>`` (compared in constant time)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = token.encode()

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                # The scheme is case-insensitive (RFC 9110); the token is not.
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._expected
                )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            response = JSONResponse(
                {"error": "unauthorized", "detail": "send Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="mcp-gateway"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(settings: Settings, registry: ProviderRegistry | None = None) -> Starlette:
    """The HTTP app: ``/mcp`` (streamable HTTP), ``GET /health`` and ``GET /ready``."""
    registry = registry or ProviderRegistry(settings.providers)
    mcp_server = build_mcp_server(registry)
    # No DNS-rebinding host check: the gateway is reached by service name inside compose and
    # through a reverse proxy; access control is the bearer token.
    session_manager = StreamableHTTPSessionManager(app=mcp_server)
    mcp_endpoint: ASGIApp = StreamableHTTPASGIApp(session_manager)
    if settings.token:
        mcp_endpoint = BearerTokenMiddleware(mcp_endpoint, settings.token)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        statuses = await registry.health()
        all_serving = all(s.serving for s in statuses)
        body = {
            "status": "ready" if all_serving else "not ready",
            "providers": [
                {"name": s.name, "address": s.address, "status": s.status}
                | ({"detail": s.detail} if s.detail else {})
                for s in statuses
            ],
        }
        return JSONResponse(body, status_code=200 if all_serving else 503)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.info(
            "providers from %s: %s",
            settings.providers_file,
            ", ".join(f"{p.name}={p.address}" for p in settings.enabled_providers) or "none",
        )
        async with registry, session_manager.run():
            yield

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/mcp", mcp_endpoint),
        ],
        lifespan=lifespan,
    )


async def serve_stdio(settings: Settings) -> None:
    """Serve MCP over stdin/stdout until the client closes stdin."""
    from mcp.server.stdio import stdio_server

    registry = ProviderRegistry(settings.providers)
    mcp_server = build_mcp_server(registry)
    async with registry, stdio_server() as (read_stream, write_stream):
        await mcp_server.run(read_stream, write_stream, mcp_server.create_initialization_options())
