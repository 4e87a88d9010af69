"""The gateway as a process: stdio mode through the SDK's stdio client, and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.support import (
    FakeProvider,
    Notifications,
    free_port,
    gateway_process,
    mcp_session,
    wait_until,
    write_providers,
)


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


async def test_stdio_client_is_told_when_a_late_provider_brings_its_tools(tmp_path: Path) -> None:
    late = FakeProvider()
    late.port = free_port()
    providers = write_providers(
        tmp_path / "providers.yaml", [{"name": "fake", "address": late.address}]
    )
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_gateway", "--stdio"],
        env={"MCP_PROVIDERS": str(providers)},
    )
    notes = Notifications()
    try:
        with (tmp_path / "stderr.log").open("w") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write, message_handler=notes) as session,
            ):
                await session.initialize()
                assert (await session.list_tools()).tools == []
                late.start()
                await notes.wait_for_more(0, 20)
                names = {t.name for t in (await session.list_tools()).tools}
        assert names == {"fake.echo", "fake.list"}
    finally:
        late.close()


def test_http_mode_serves_on_gateway_port_and_stops_on_sigterm(
    provider: FakeProvider, tmp_path: Path
) -> None:
    providers = write_providers(
        tmp_path / "providers.yaml", [{"name": "fake", "address": provider.address}]
    )
    log = tmp_path / "gateway.log"
    with gateway_process(free_port(), {"MCP_PROVIDERS": str(providers)}, log) as proc:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    stderr = log.read_text(encoding="utf-8")
    # uvicorn drains, runs the lifespan exit, then re-raises the signal so the parent sees it.
    assert proc.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr


async def test_sigterm_drains_then_finishes_calls_in_flight(
    provider: FakeProvider, tmp_path: Path
) -> None:
    provider.mode = "slow"
    provider.slow_seconds = 2.5
    providers = write_providers(
        tmp_path / "providers.yaml", [{"name": "fake", "address": provider.address}]
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; waiting is threaded
        [sys.executable, "-m", "mcp_gateway"],
        env=os.environ
        | {
            "MCP_PROVIDERS": str(providers),
            "GATEWAY_PORT": str(port),
            "GATEWAY_DRAIN_SECONDS": "1.5",
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": "10",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                try:
                    return (await http.get(f"{base}/ready")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_until(ready, 20, "the gateway to be ready")
            async with mcp_session(f"{base}/mcp") as session:
                results: list[types.CallToolResult] = []

                async def slow_call() -> None:
                    result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
                    assert isinstance(result, types.CallToolResult)
                    results.append(result)

                async with anyio.create_task_group() as group:
                    group.start_soon(slow_call)
                    await anyio.sleep(0.3)  # the call is in flight at the provider
                    terminated = time.monotonic()
                    proc.send_signal(signal.SIGTERM)
                    await anyio.sleep(0.2)
                    health = await http.get(f"{base}/health")
                    assert health.status_code == 503
                    assert health.json() == {"status": "draining"}
                    assert health.headers["connection"] == "close"
                    # Still serving everything while draining.
                    listed = await session.list_tools()
                    assert len(listed.tools) == 2
                (result,) = results
                assert not result.is_error, result.content
        _, stderr = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=15))
        stopped = time.monotonic() - terminated
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "draining for 1.5 s" in stderr
    assert 1.4 <= stopped < 8, stopped
