"""The gateway as a process: stdio mode through the SDK's stdio client, and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.support import FakeProvider, free_port, write_providers


async def test_stdio_mode_lists_and_calls_tools(provider: FakeProvider, tmp_path: Path) -> None:
    providers = write_providers(
        tmp_path / "providers.yaml", [{"name": "fake", "address": provider.address}]
    )
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_gateway", "--stdio"],
        env={"MCP_PROVIDERS": str(providers)},
    )
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            init = await session.initialize()
            assert init.server_info.name == "mcp-gateway"
            listed = await session.list_tools()
            assert {t.name for t in listed.tools} == {"fake.echo", "fake.list"}
            result = await session.call_tool("fake.echo", {"symbol": "SOLUSDT"})
    assert isinstance(result, types.CallToolResult)
    assert not result.is_error
    assert result.structured_content == {"echo": {"symbol": "SOLUSDT"}}
    # Logs go to stderr, never into the protocol stream.
    assert "mcp_gateway" in (tmp_path / "stderr.log").read_text()


def test_http_mode_serves_on_gateway_port_and_stops_on_sigterm(
    provider: FakeProvider, tmp_path: Path
) -> None:
    providers = write_providers(
        tmp_path / "providers.yaml", [{"name": "fake", "address": provider.address}]
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_gateway"],
        env=os.environ | {"MCP_PROVIDERS": str(providers), "GATEWAY_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gateway did not become ready"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # uvicorn drains, runs the lifespan exit, then re-raises the signal so the parent sees it.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
