"""Who may use ``/mcp``: the Host/Origin allow lists (DNS rebinding) and the bearer token.

DNS rebinding: a web page on ``evil.example`` whose name re-resolves to 127.0.0.1 makes the
victim's browser send requests to a local gateway; the browser then sends ``Host:
evil.example`` and ``Origin: http://evil.example``. Checking both against allow lists refuses
them (421 for the Host, 403 for the Origin), whatever the bind address. A request without
``Origin`` is not a cross-origin browser request (every non-browser MCP client) and passes.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_gateway.text import quote

DEFAULT_ALLOWED_HOSTS: Final = "localhost,127.0.0.1,[::1],mcp-gateway"
DEFAULT_ALLOWED_ORIGINS: Final = "http://localhost,http://127.0.0.1,http://[::1],https://localhost,https://127.0.0.1,https://[::1]"

_NAME_RE = re.compile(r"^(?:\[[0-9a-f:.]+\]|[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)$")
_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*$")


@dataclass(frozen=True)
class _Entry:
    scheme: str | None  # origins only
    host: str
    port: int | None  # None: any port (or none)

    def matches(self, scheme: str | None, host: str, port: int | None) -> bool:
        return (
            self.scheme == scheme and self.host == host and (self.port is None or self.port == port)
        )


def _split_host_port(value: str) -> tuple[str, str | None]:
    """``'[::1]:80'`` -> ``('[::1]', '80')``; ``'name'`` -> ``('name', None)``."""
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return value, None
        rest = value[end + 1 :]
        return value[: end + 1], rest[1:] if rest.startswith(":") else (rest or None)
    host, sep, port = value.rpartition(":")
    return (host, port) if sep else (value, None)


def _parse_port(port: str | None, entry: str) -> int | None:
    if port is None or port == "*":
        return None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{entry!r} has port {port!r}; use a number from 1 to 65535 or '*'")
    return int(port)


@dataclass(frozen=True)
class AllowList:
    """A parsed allow list; ``None`` entries means ``*`` (anything passes)."""

    entries: tuple[_Entry, ...] | None

    @property
    def allows_any(self) -> bool:
        return self.entries is None

    @classmethod
    def hosts(cls, value: str) -> AllowList:
        """Parse ``name[:port|:*]`` entries, comma-separated (``*`` alone: no check)."""
        items = [item.strip().lower() for item in value.split(",") if item.strip()]
        if items == ["*"]:
            return cls(None)
        if not items:
            raise ValueError("the list is empty; give host names (or '*' to accept any)")
        entries = []
        for item in items:
            host, port = _split_host_port(item)
            if not _NAME_RE.fullmatch(host):
                raise ValueError(
                    f"{item!r} is not a host name, IPv4 address or [IPv6] address "
                    "(optionally with :port), e.g. 'mcp.example.com' or 'localhost:3001'"
                )
            entries.append(_Entry(None, host, _parse_port(port, item)))
        return cls(tuple(entries))

    @classmethod
    def origins(cls, value: str) -> AllowList:
        """Parse ``scheme://host[:port|:*]`` entries, comma-separated (``*`` alone: no check)."""
        items = [item.strip().lower().rstrip("/") for item in value.split(",") if item.strip()]
        if items == ["*"]:
            return cls(None)
        if not items:
            raise ValueError("the list is empty; give origins (or '*' to accept any)")
        entries = []
        for item in items:
            scheme, sep, rest = item.partition("://")
            host, port = _split_host_port(rest)
            if not sep or not _SCHEME_RE.fullmatch(scheme) or not _NAME_RE.fullmatch(host):
                raise ValueError(
                    f"{item!r} is not an origin: use scheme://host[:port], "
                    "e.g. 'https://app.example.com' or 'http://localhost:6274'"
                )
            entries.append(_Entry(scheme, host, _parse_port(port, item)))
        return cls(tuple(entries))

    def allows_host(self, header: str) -> bool:
        if self.entries is None:
            return True
        host, port = _split_host_port(header.strip().lower())
        number = int(port) if port is not None and port.isdigit() else None
        if port is not None and number is None:
            return False
        return any(e.matches(None, host, number) for e in self.entries)

    def allows_origin(self, header: str) -> bool:
        if self.entries is None:
            return True
        try:
            parts = urlsplit(header.strip().lower())
            port = parts.port
        except ValueError:
            return False
        if not parts.scheme or not parts.netloc:
            return False  # "null" (sandboxed frames, file://) and other opaque origins
        host, _ = _split_host_port(parts.netloc.rpartition("@")[2])
        return any(e.matches(parts.scheme, host, port) for e in self.entries)


def _refuse(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


class HostOriginMiddleware:
    """Refuses ``/mcp`` requests whose Host or Origin is not allowed (421 / 403)."""

    def __init__(self, app: ASGIApp, hosts: AllowList, origins: AllowList) -> None:
        self.app = app
        self._hosts = hosts
        self._origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host = headers.get("host", "")
            origin = headers.get("origin")
            if not self._hosts.allows_host(host):
                response = _refuse(
                    421,
                    "invalid Host header",
                    f"Host {quote(host)} is not in the gateway's MCP_ALLOWED_HOSTS",
                )
                await response(scope, receive, send)
                return
            if origin is not None and not self._origins.allows_origin(origin):
                response = _refuse(
                    403,
                    "invalid Origin header",
                    f"Origin {quote(origin)} is not in the gateway's MCP_ALLOWED_ORIGINS",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


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
