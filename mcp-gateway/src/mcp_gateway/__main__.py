"""Command line: ``mcp-gateway [--stdio]`` (also ``python -m mcp_gateway``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from mcp_gateway.config import ConfigError, Settings, load_settings


def _configure_logging(level: str) -> None:
    # stderr only: in stdio mode stdout carries the MCP protocol.
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _serve_http(settings: Settings, log_level: str) -> None:
    import uvicorn
    from sse_starlette.sse import AppStatus

    from mcp_gateway.drain import DrainingServer
    from mcp_gateway.server import create_app

    # sse-starlette would cut every open SSE response the moment uvicorn is asked to stop,
    # in-flight tool calls included; the drain ends the streams itself (GET streams only).
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level.lower(),
        log_config=None,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
    )
    DrainingServer(config, app.state.drain, settings.drain_seconds).run()


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, validate the configuration, then serve until stopped."""
    parser = argparse.ArgumentParser(
        prog="mcp-gateway",
        description=(
            "MCP gateway: exposes the tools of the gRPC providers listed in MCP_PROVIDERS over "
            "streamable HTTP at /mcp on GATEWAY_HOST:GATEWAY_PORT (default 0.0.0.0:3001), or "
            "over stdio with --stdio. MCP_GATEWAY_TOKEN, when set, is required as a bearer token "
            "on /mcp. Every setting: the repository README's gateway section."
        ),
    )
    parser.add_argument(
        "--stdio", action="store_true", help="serve MCP on stdin/stdout instead of HTTP"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (logs go to stderr; default INFO)",
    )
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"mcp-gateway: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.stdio:
        from mcp_gateway.server import serve_stdio

        asyncio.run(serve_stdio(settings))
    else:
        _serve_http(settings, args.log_level)


if __name__ == "__main__":
    main()
