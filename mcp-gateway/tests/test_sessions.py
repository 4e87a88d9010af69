"""Sessions over real HTTP: adoption by another replica, bad ids, cap, idle reaping, stateless."""

from __future__ import annotations

import asyncio
import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp.client.session import ClientSession

from mcp_gateway.config import ProviderConfig
from mcp_gateway.sessions import SessionIds
from tests.conftest import GatewayFactory
from tests.support import (
    FakeProvider,
    Notifications,
    RunningGateway,
    free_port,
    gateway_process,
    mcp_session,
    wait_until,
    write_providers,
)

SECRET = b"0123456789abcdef0123456789abcdef-shared-by-replicas"
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


def _rpc(
    url: str, method: str, params: dict[str, Any] | None = None, session: str | None = None
) -> tuple[httpx.Response, dict[str, Any] | None]:
    """One JSON-RPC request; the reply parsed from JSON or from the SSE stream."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    headers = MCP_HEADERS | ({"Mcp-Session-Id": session} if session else {})
    response = httpx.post(url, json=body, headers=headers, timeout=10)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data: "):
                reply: dict[str, Any] = json.loads(line[6:])
                return response, reply
        return response, None
    try:
        return response, response.json()
    except ValueError:
        return response, None


def _initialize(url: str) -> httpx.Response:
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    }
    response, _ = _rpc(url, "initialize", params)
    return response


class _SwitchingTransport(httpx2.AsyncHTTPTransport):
    """Sends each request to the gateway ``target`` names, like a proxy switching replicas."""

    def __init__(self, target: list[RunningGateway]) -> None:
        super().__init__()
        self.target = target

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        request.url = request.url.copy_with(port=self.target[0].port)
        return await super().handle_async_request(request)


def _replica(factory: GatewayFactory, provider: FakeProvider, **settings: Any) -> RunningGateway:
    return factory(
        [ProviderConfig(name="fake", address=provider.address)],
        session_secret=SECRET,
        session_secret_shared=True,
        **settings,
    )


async def test_a_session_moves_to_another_replica_and_keeps_its_notifications(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    old, new = _replica(gateway_factory, provider), _replica(gateway_factory, provider)
    target = [old]
    notes = Notifications()
    http = httpx2.AsyncClient(transport=_SwitchingTransport(target), timeout=httpx2.Timeout(30.0))
    async with mcp_session(old.mcp_url, notifications=notes, http=http) as session:
        first = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
        assert isinstance(first, types.CallToolResult) and not first.is_error
        target[0] = new  # the proxy now sends this client's requests to the new replica
        moved = await session.call_tool("fake.echo", {"symbol": "ETHUSDT"})
        assert isinstance(moved, types.CallToolResult) and not moved.is_error, moved.content
        assert {t.name for t in (await session.list_tools()).tools} == {"fake.echo", "fake.list"}
        # The old replica goes away: its GET stream ends, the client reopens it on the new one,
        # which tells it to refetch the tool list (it may have missed a change meanwhile).
        seen = notes.count()
        old.stop()
        await notes.wait_for_more(seen, 15)
        await _a_new_tool_is_announced(provider, session, notes)


async def _a_new_tool_is_announced(
    provider: FakeProvider, session: ClientSession, notes: Notifications
) -> None:
    """The provider comes back with a new tool; the session's GET stream must hear of it."""
    provider.extra_tools = [types_tool("fake.new")]
    provider.stop()
    provider.start()
    seen = notes.count()

    async def announced() -> bool:
        return notes.count() > seen and "fake.new" in {
            t.name for t in (await session.list_tools()).tools
        }

    await wait_until(announced, 20, "the new replica to announce fake.new")


def types_tool(name: str) -> Any:
    from mcp_gateway._proto.provider.v1 import provider_pb2

    return provider_pb2.Tool(name=name, input_schema_json='{"type": "object"}', read_only=True)


def test_ids_this_replica_cannot_verify_or_saw_end_answer_404(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = _replica(gateway_factory, provider)
    forged = SessionIds(b"another-secret-another-secret-another").new()
    for session in ("not-a-session", forged, "0" * 32 + "." + "0" * 32):
        response, reply = _rpc(gw.mcp_url, "tools/list", session=session)
        assert response.status_code == 404, session
        assert reply is not None and reply["error"]["message"] == "Session not found"

    opened = _initialize(gw.mcp_url)
    session_id = opened.headers["mcp-session-id"]
    assert SessionIds(SECRET).valid(session_id)
    headers = MCP_HEADERS | {"Mcp-Session-Id": session_id}
    assert httpx.delete(gw.mcp_url, headers=headers, timeout=10).status_code == 200
    response, _ = _rpc(gw.mcp_url, "tools/list", session=session_id)
    assert response.status_code == 404  # ended by its client: never adopted again here


def test_the_session_cap_refuses_new_sessions_with_503_until_one_ends(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = _replica(gateway_factory, provider, max_sessions=2)
    ids = [_initialize(gw.mcp_url).headers["mcp-session-id"] for _ in range(2)]
    refused = _initialize(gw.mcp_url)
    assert refused.status_code == 503
    assert "MCP_MAX_SESSIONS=2" in refused.json()["error"]["message"]
    # Existing sessions keep working at the cap.
    response, reply = _rpc(gw.mcp_url, "tools/list", session=ids[0])
    assert response.status_code == 200 and reply is not None and "result" in reply
    httpx.delete(gw.mcp_url, headers=MCP_HEADERS | {"Mcp-Session-Id": ids[1]}, timeout=10)
    assert _initialize(gw.mcp_url).status_code == 200


async def test_an_idle_session_is_reaped_and_comes_back_on_its_next_request(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = _replica(gateway_factory, provider, session_idle_seconds=1)
    session_id = _initialize(gw.mcp_url).headers["mcp-session-id"]
    sessions = gw.app.state.sessions
    assert sessions.session_count == 1

    async def reaped() -> bool:
        return bool(sessions.session_count == 0)

    await wait_until(reaped, 10, "the idle session to be reaped")
    response, reply = _rpc(gw.mcp_url, "tools/list", session=session_id)
    assert response.status_code == 200 and reply is not None
    assert len(reply["result"]["tools"]) == 2


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_stateless_mode_serves_without_sessions(
    gateway_factory: GatewayFactory, provider: FakeProvider, method: str
) -> None:
    gw = _replica(gateway_factory, provider, session_mode="stateless")
    opened = _initialize(gw.mcp_url)
    assert opened.status_code == 200
    assert "mcp-session-id" not in opened.headers
    assert '"listChanged":false' in opened.text.replace(" ", "")
    async with httpx.AsyncClient() as http:
        refused = await http.request(method, gw.mcp_url, headers=MCP_HEADERS, timeout=10)
    assert refused.status_code == 405
    async with mcp_session(gw.mcp_url) as session:
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
    assert isinstance(result, types.CallToolResult) and not result.is_error


@dataclass
class _Port:
    port: int


async def test_a_gateway_swap_keeps_the_session_and_its_get_stream(
    provider: FakeProvider, tmp_path: Path
) -> None:
    """The deploy's gateway swap, with processes: SIGTERM (drain, grace) and a proxy switching.

    The SDK client's POSTs land on the new replica, which adopts the session; its GET stream,
    ended by the old replica's drain, is reopened on the new one by the SDK itself.
    """
    providers = write_providers(
        tmp_path / "providers.yaml", [{"name": "fake", "address": provider.address}]
    )
    secret = tmp_path / "session_secret"
    secret.write_text(SECRET.decode() + "\n", encoding="utf-8")
    env = {
        "MCP_PROVIDERS": str(providers),
        "MCP_SESSION_SECRET_FILE": str(secret),
        "GATEWAY_DRAIN_SECONDS": "1",
    }
    old_port, new_port = free_port(), free_port()
    with (
        gateway_process(old_port, env, tmp_path / "old.log") as old,
        gateway_process(new_port, env, tmp_path / "new.log"),
    ):
        target: list[Any] = [_Port(old_port)]
        notes = Notifications()
        failures: list[str] = []
        http = httpx2.AsyncClient(transport=_SwitchingTransport(target), timeout=30.0)
        async with mcp_session(
            f"http://127.0.0.1:{old_port}/mcp", notifications=notes, http=http
        ) as session:
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
                    if not isinstance(result, types.CallToolResult) or result.is_error:
                        failures.append(str(result))
                    await asyncio.sleep(0.05)

            async with asyncio.TaskGroup() as group:
                group.create_task(load())
                await asyncio.sleep(0.5)  # calls on the old replica; its GET stream is open
                seen = notes.count()
                old.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.3)  # the proxy's check sees /health 503
                target[0] = _Port(new_port)
                # The adopting replica tells the reopened stream to refetch the tool list.
                await notes.wait_for_more(seen, 10)
                await asyncio.to_thread(old.wait, 15)
                stop.set()
            assert failures == []
            # Only the new replica is left to announce a change: the GET stream is open there.
            await _a_new_tool_is_announced(provider, session, notes)
    assert old.returncode == 0
