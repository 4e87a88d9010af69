"""Clients nobody here wrote: the official MCP conformance suite and the TypeScript SDK.

Both run on Node 22 (``.ci/setup.d/40-node.sh`` installs it at /opt/node22; ``MCP_TEST_NODE``
points elsewhere) from the packages pinned in ``conformance/package-lock.json`` (``make
test-gateway`` runs ``npm ci`` there first). Missing either fails these tests with what to run:
they never skip. Marked ``node`` so a run without Node (the Dagger module's check container)
deselects them explicitly (``pytest -m "not node"``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mcp_gateway.config import ProviderConfig
from tests.conftest import GatewayFactory
from tests.support import FakeProvider, RunningGateway, free_port

pytestmark = pytest.mark.node

PACKAGES = Path(__file__).resolve().parents[1] / "conformance"
CONFORMANCE = (
    PACKAGES / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
)
TS_CLIENT = PACKAGES / "ts_client.mjs"
# The suite's server scenarios that apply to a gateway (the others need the suite's own test
# tools, prompts and resources, e.g. test_simple_text, which a market-data gateway has not got).
SCENARIOS = [
    "server-initialize",
    "ping",
    "tools-list",
    "server-sse-multiple-streams",
    "dns-rebinding-protection",
]


@pytest.fixture(scope="module")
def node() -> str:
    path = os.environ.get("MCP_TEST_NODE", "/opt/node22/bin/node")
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"Node 22 is needed at {path} (run .ci/setup.d/40-node.sh): {exc}")
    if not version.startswith("v22."):
        pytest.fail(f"{path} is Node {version}; these clients need Node 22 (40-node.sh)")
    if not CONFORMANCE.is_file():
        pytest.fail(f"{CONFORMANCE} is missing: run `npm ci` in {PACKAGES}")
    return path


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conformance_scenario_passes(node: str, gateway: RunningGateway, scenario: str) -> None:
    done = subprocess.run(
        [node, str(CONFORMANCE), "server", "--url", gateway.mcp_url, "--scenario", scenario],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=PACKAGES,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert " 0 failed" in output, output[-4000:]


class _Proxy:
    """A TCP proxy on loopback whose upstream a test switches, like the stack's reverse proxy.

    Connections already open stay with their replica; new ones go to ``target``.
    """

    def __init__(self, target: RunningGateway) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target.port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, up_w), self._pipe(up_r, client_w))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


class _TsClient:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, command: str, seconds: float = 30) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), seconds)
        assert line, f"the TypeScript client exited: {await self._stderr()}"
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def _stderr(self) -> str:
        assert self.proc.stderr is not None
        return (await self.proc.stderr.read()).decode(errors="replace")[-2000:]


@asynccontextmanager
async def ts_client(node: str, url: str) -> AsyncIterator[_TsClient]:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(TS_CLIENT),
        url,
        cwd=PACKAGES,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    client = _TsClient(proc)
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert first, f"the TypeScript client did not start: {await client._stderr()}"
        assert json.loads(first)["ready"] is True
        yield client
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until(client: _TsClient, command: str, check: Any, seconds: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check(answer := await client.ask(command)):
        assert loop.time() < deadline, f"{command}: still {answer}"
        await asyncio.sleep(0.1)


async def test_typescript_sdk_client_learns_of_tools_that_appear_later(
    node: str, gateway_factory: GatewayFactory
) -> None:
    late = FakeProvider()
    late.port = free_port()
    try:
        gw = gateway_factory([ProviderConfig(name="fake", address=late.address)])
        async with ts_client(node, gw.mcp_url) as client:
            assert await client.ask("list") == {"tools": []}
            late.start()
            await _until(client, "changes", lambda a: a["changes"] >= 1)
            assert sorted((await client.ask("list"))["tools"]) == ["fake.echo", "fake.list"]
            result = await client.ask('call fake.echo {"symbol": "BTCUSDT"}')
            assert result["isError"] is False, result
            assert result["structured"] == {"echo": {"symbol": "BTCUSDT"}}
    finally:
        late.close()


async def test_typescript_sdk_client_keeps_its_session_across_replicas(
    node: str, gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    secret = b"a-secret-shared-by-both-replicas-0123456789"
    replicas = [
        gateway_factory(
            [ProviderConfig(name="fake", address=provider.address)],
            session_secret=secret,
            session_secret_shared=True,
        )
        for _ in range(2)
    ]
    old, new = replicas
    proxy = _Proxy(old)
    await proxy.start()
    try:
        async with ts_client(node, f"http://127.0.0.1:{proxy.port}/mcp") as client:
            session = (await client.ask("session"))["session"]
            assert session
            assert (await client.ask('call fake.echo {"symbol": "BTCUSDT"}'))["isError"] is False
            # The deploy: new connections go to the new replica, the old one drains and stops.
            proxy.target = new
            old.app.state.drain.begin()
            assert (await client.ask('call fake.echo {"symbol": "ETHUSDT"}'))["isError"] is False
            await asyncio.to_thread(old.stop)
            result = await client.ask('call fake.echo {"symbol": "SOLUSDT"}')
            assert result["isError"] is False, result
            assert (await client.ask("session"))["session"] == session
            # Its GET stream came back on the new replica, which told it to refetch the list.
            await _until(client, "changes", lambda a: a["changes"] >= 1)
            assert sorted((await client.ask("list"))["tools"]) == ["fake.echo", "fake.list"]
    finally:
        await proxy.close()
