"""/health, /ready, the bearer token, and the healthcheck command."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import mcp_types as types
import pytest

from mcp_gateway.config import ProviderConfig
from mcp_gateway.security import AllowList
from tests.conftest import GatewayFactory
from tests.support import FakeProvider, RunningGateway, free_port, mcp_session

TOKEN = "s3cr3t-token-for-tests"
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def test_health_answers_200_even_when_providers_are_down(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory([ProviderConfig(name="fake", address=f"127.0.0.1:{free_port()}")])
    response = httpx.get(f"{gw.base_url}/health", timeout=5)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def _ready(gateway: RunningGateway, status: int, seconds: float = 10) -> dict[str, Any]:
    """/ready's body once it answers ``status`` (it reports what the background checks saw)."""
    deadline = time.monotonic() + seconds
    while True:
        response = httpx.get(f"{gateway.base_url}/ready", timeout=5)
        if response.status_code == status:
            body: dict[str, Any] = response.json()
            return body
        assert time.monotonic() < deadline, (response.status_code, response.text)
        time.sleep(0.05)


def test_ready_is_200_with_every_provider_serving(
    gateway: RunningGateway, provider: FakeProvider
) -> None:
    assert _ready(gateway, 200) == {
        "status": "ready",
        "providers": [
            {
                "name": "fake",
                "address": provider.address,
                "status": "SERVING",
                "tools": 2,
                "upstream": {"status": "unknown"},
            }
        ],
    }


def test_ready_is_503_when_a_provider_is_not_serving(
    gateway: RunningGateway, provider: FakeProvider
) -> None:
    _ready(gateway, 200)
    provider.set_serving(False)
    body = _ready(gateway, 503)
    assert body["status"] == "not ready"
    (entry,) = body["providers"]
    assert entry["status"] == "NOT_SERVING"
    provider.set_serving(True)
    _ready(gateway, 200)


async def test_ready_reports_upstream_reachability_seen_by_tool_calls(
    gateway: RunningGateway, provider: FakeProvider
) -> None:
    _ready(gateway, 200)
    provider.mode = "upstream_down"
    async with mcp_session(gateway.mcp_url) as session:
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
        assert isinstance(result, types.CallToolResult) and result.is_error
        # Readiness is about this gateway and its providers: an upstream outage is reported,
        # not a reason to take the gateway out of rotation (a deploy could never pass).
        (entry,) = _ready(gateway, 200)["providers"]
        assert entry["upstream"]["status"] == "unreachable"
        assert "connection refused" in entry["upstream"]["detail"]
        assert entry["upstream"]["observed_seconds_ago"] >= 0
        provider.mode = "ok"
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
        assert isinstance(result, types.CallToolResult) and not result.is_error
    (entry,) = _ready(gateway, 200)["providers"]
    assert entry["upstream"]["status"] == "reachable"


def test_ready_is_503_and_names_an_unreachable_provider(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    gw = gateway_factory(
        [
            ProviderConfig(name="fake", address=provider.address),
            ProviderConfig(name="dead", address=dead),
        ]
    )
    deadline = time.monotonic() + 10
    while True:
        response = httpx.get(f"{gw.base_url}/ready", timeout=10)
        assert response.status_code == 503
        by_name = {p["name"]: p for p in response.json()["providers"]}
        if by_name["fake"]["status"] == "SERVING" and by_name["dead"]["status"] == "UNREACHABLE":
            break
        assert time.monotonic() < deadline, by_name
        time.sleep(0.05)
    assert f"provider 'dead' at {dead} is unavailable" in by_name["dead"]["detail"]
    assert by_name["dead"]["tools"] == 0


def test_mcp_without_or_with_a_wrong_token_is_401_and_health_stays_open(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = gateway_factory([ProviderConfig(name="fake", address=provider.address)], token=TOKEN)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ):
        response = httpx.post(gw.mcp_url, json=INITIALIZE, headers=MCP_HEADERS | headers, timeout=5)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{gw.base_url}/health", timeout=5).status_code == 200
    # The scheme is case-insensitive; the token is the credential.
    accepted = httpx.post(
        gw.mcp_url,
        json=INITIALIZE,
        headers=MCP_HEADERS | {"Authorization": f"bearer {TOKEN}"},
        timeout=5,
    )
    assert accepted.status_code == 200


async def test_mcp_with_the_token_works(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = gateway_factory([ProviderConfig(name="fake", address=provider.address)], token=TOKEN)
    async with mcp_session(gw.mcp_url, token=TOKEN) as session:
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
    assert isinstance(result, types.CallToolResult)
    assert not result.is_error


def test_mcp_without_token_configured_needs_no_header(gateway: RunningGateway) -> None:
    response = httpx.post(gateway.mcp_url, json=INITIALIZE, headers=MCP_HEADERS, timeout=5)
    assert response.status_code == 200
    assert "mcp-gateway" in response.text


def _healthcheck(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_gateway.healthcheck"],
        env=os.environ | {"GATEWAY_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthcheck_command_exits_0_when_health_answers(gateway: RunningGateway) -> None:
    done = _healthcheck(gateway.port)
    assert done.returncode == 0, done.stderr
    assert "answered 200" in done.stdout


def test_healthcheck_command_fails_when_nothing_listens() -> None:
    port = free_port()
    done = _healthcheck(port)
    assert done.returncode == 1
    assert f"http://127.0.0.1:{port}/health is unreachable" in done.stderr


def test_healthcheck_command_fails_when_health_is_not_200() -> None:
    class Unhealthy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Unhealthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = _healthcheck(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1
    assert "/health answered HTTP 503" in done.stderr


@pytest.mark.parametrize("value", ["abc", "0", "70000"])
def test_healthcheck_command_rejects_a_bad_port(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcp_gateway.healthcheck"],
        env=os.environ | {"GATEWAY_PORT": value},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"GATEWAY_PORT={value!r} is not a port" in done.stderr


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Host": "evil.example.com"}, 421),
        ({"Host": "evil.example.com", "Origin": "http://evil.example.com"}, 421),
        ({"Origin": "http://evil.example.com"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://localhost.evil.example.com:3001"}, 403),
        ({"Host": "localhost:3001", "Origin": "http://localhost:6274"}, 200),
        ({"Host": "[::1]:3001"}, 200),
        ({"Host": "mcp-gateway:3001"}, 200),
        ({}, 200),  # 127.0.0.1:<port>, no Origin: a non-browser client
    ],
)
def test_mcp_refuses_a_foreign_host_or_origin(
    gateway: RunningGateway, headers: dict[str, str], status: int
) -> None:
    response = httpx.post(
        gateway.mcp_url, json=INITIALIZE, headers=MCP_HEADERS | headers, timeout=5
    )
    assert response.status_code == status, response.text
    if status >= 400:
        assert "MCP_ALLOWED_" in response.json()["detail"]


def test_configured_allow_lists_replace_the_defaults(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = gateway_factory(
        [ProviderConfig(name="fake", address=provider.address)],
        allowed_hosts=AllowList.hosts("mcp.example.com"),
        allowed_origins=AllowList.origins("https://app.example.com"),
    )
    public = {"Host": "mcp.example.com", "Origin": "https://app.example.com"}
    ok = httpx.post(gw.mcp_url, json=INITIALIZE, headers=MCP_HEADERS | public, timeout=5)
    assert ok.status_code == 200
    local = httpx.post(gw.mcp_url, json=INITIALIZE, headers=MCP_HEADERS, timeout=5)
    assert local.status_code == 421
    huge = httpx.post(
        gw.mcp_url, json=INITIALIZE, headers=MCP_HEADERS | {"Host": "h" * 5000}, timeout=5
    )
    assert huge.status_code == 421 and len(huge.text) < 500
    # Probes come by IP through proxies: /health and /ready are not Host-checked.
    assert httpx.get(f"{gw.base_url}/health", timeout=5).status_code == 200


def test_draining_gateway_answers_503_and_closes_connections_but_still_serves(
    gateway: RunningGateway,
) -> None:
    gateway.app.state.drain.begin()
    with httpx.Client(timeout=5) as http:
        health = http.get(f"{gateway.base_url}/health")
        assert health.status_code == 503
        assert health.json() == {"status": "draining"}
        assert health.headers["connection"] == "close"
        ready = http.get(f"{gateway.base_url}/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        served = http.post(gateway.mcp_url, json=INITIALIZE, headers=MCP_HEADERS)
        assert served.status_code == 200
        assert served.headers["connection"] == "close"
