"""A provider swapped under one name costs nothing: the deploy's overlap, end to end.

What deploy/rollout.sh does to the provider, with real binaries: the old process serves under
a name; a new one starts and the name resolves to both (Docker's DNS answers every container of
the service); the old one gets SIGTERM (NOT_SERVING at once, in-flight calls finish during its
drain and grace, GOAWAY, exit) and leaves the name. Under a steady load of ``GET /health``,
``GET /ready`` and ``tools/call`` through an MCP SDK session, not one request may fail, a call in
flight on the old process must complete, and calls must reach the new process while the old one
still drains (on its NOT_SERVING, not on its connection closing a second later).

The name lives in tests.fake_dns (the machine has no name with two loopback addresses); the
old and new processes listen on the same port of 127.0.0.1 and ::1, one test per order.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import httpx
import mcp_types as types
import pytest
from mcp.client.session import ClientSession

from mcp_gateway.config import ProviderConfig
from tests.conftest import GatewayFactory
from tests.fake_binance import SYMBOL, FakeBinance
from tests.fake_dns import FakeDns
from tests.support import RunningGateway, mcp_session, provider_process, wait_until

NAME = "binance-provider.test"
TICKER = "/api/v3/ticker/24hr"
DEPTH = "/api/v3/depth"
# The in-flight call outlasts the old process's drain (1 s by default) by far, so it is still
# running when the old process sends GOAWAY and stops accepting.
IN_FLIGHT_SECONDS = 2.5
LOAD_PAUSE_SECONDS = 0.02


def _port_free_on_both() -> int:
    """A port nothing listens on, on 127.0.0.1 and on ::1."""
    for _ in range(50):
        with socket.socket() as v4:
            v4.bind(("127.0.0.1", 0))
            port = int(v4.getsockname()[1])
            with socket.socket(socket.AF_INET6) as v6:
                try:
                    v6.bind(("::1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free on both 127.0.0.1 and ::1")


def _socket_address(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class Load:
    """GET /health, GET /ready and tools/call in a loop; every failure is kept, with its time."""

    def __init__(self, gateway: RunningGateway, session: ClientSession) -> None:
        self.gateway = gateway
        self.session = session
        self.counts = {"/health": 0, "/ready": 0, "tools/call": 0}
        self.failures: list[str] = []
        self.started = time.monotonic()
        self._stop = asyncio.Event()

    def _fail(self, what: str) -> None:
        self.failures.append(f"{time.monotonic() - self.started:.3f} s: {what}")

    async def http(self) -> None:
        async with httpx.AsyncClient(base_url=self.gateway.base_url, timeout=10) as client:
            while not self._stop.is_set():
                for path in ("/health", "/ready"):
                    response = await client.get(path)
                    self.counts[path] += 1
                    if response.status_code != 200:
                        self._fail(f"{path} {response.status_code} {response.text[:300]}")
                await asyncio.sleep(LOAD_PAUSE_SECONDS)

    async def calls(self) -> None:
        while not self._stop.is_set():
            result = await self.session.call_tool("binance.get_ticker", {"symbol": SYMBOL})
            self.counts["tools/call"] += 1
            if not isinstance(result, types.CallToolResult) or result.is_error:
                self._fail(f"tools/call {result}")
            await asyncio.sleep(LOAD_PAUSE_SECONDS)

    def stop(self) -> None:
        self._stop.set()


@pytest.mark.e2e
@pytest.mark.parametrize(("old_ip", "new_ip"), [("127.0.0.1", "::1"), ("::1", "127.0.0.1")])
async def test_a_provider_swapped_under_one_name_fails_no_request(
    old_ip: str,
    new_ip: str,
    provider_binary: Path,
    gateway_factory: GatewayFactory,
    tmp_path: Path,
) -> None:
    port = _port_free_on_both()
    old_address, new_address = _socket_address(old_ip, port), _socket_address(new_ip, port)
    old_binance, new_binance = FakeBinance(), FakeBinance()
    old_binance.start()
    new_binance.start()
    old_binance.path_delay_seconds[DEPTH] = IN_FLIGHT_SECONDS
    dns = FakeDns()
    dns.records[NAME] = [old_ip]
    try:
        with provider_process(
            provider_binary, old_address, old_binance.base_url, tmp_path / "old.log"
        ) as old:
            # Outside the providers file's host:port check: the target names the DNS server.
            config = ProviderConfig.model_construct(
                name="binance", address=dns.target(NAME, port), enabled=True, timeout_seconds=10
            )
            # No read-only retry: a call the swap broke would show, not be sent again.
            gw = gateway_factory([config], provider_retry_seconds=0)
            async with httpx.AsyncClient(base_url=gw.base_url, timeout=10) as http:

                async def ready() -> bool:
                    return (await http.get("/ready")).status_code == 200

                await wait_until(ready, 15, "/ready to answer 200")
            async with mcp_session(gw.mcp_url) as session, asyncio.TaskGroup() as group:
                load = Load(gw, session)
                loops = [group.create_task(loop()) for loop in (load.http, load.calls, load.calls)]
                await asyncio.sleep(0.5)
                with provider_process(
                    provider_binary, new_address, new_binance.base_url, tmp_path / "new.log"
                ):
                    dns.records[NAME] = [old_ip, new_ip]  # the new container joins the service
                    await asyncio.sleep(0.5)
                    in_flight = group.create_task(
                        session.call_tool("binance.get_order_book", {"symbol": SYMBOL})
                    )

                    async def reached_old() -> bool:
                        return any(path == DEPTH for path, _ in old_binance.requests)

                    await wait_until(reached_old, 5, "the in-flight call to reach the old provider")
                    served_by_new = len(new_binance.requests)
                    assert served_by_new == 0, "the gateway found the new provider before the swap"
                    old.send_signal(signal.SIGTERM)
                    stopped = time.monotonic()

                    async def new_serves() -> bool:
                        return any(path == TICKER for path, _ in new_binance.requests)

                    await wait_until(new_serves, 10, "tool calls to reach the new provider")
                    moved_after = time.monotonic() - stopped
                    await asyncio.to_thread(old.wait, 15)
                    exited_after = time.monotonic() - stopped
                    dns.records[NAME] = [new_ip]  # the old container leaves the service
                    result = await in_flight
                    await asyncio.sleep(1.0)
                    load.stop()
                    await asyncio.gather(*loops)  # before the new provider stops
    finally:
        dns.close()
        old_binance.stop()
        new_binance.stop()
    assert isinstance(result, types.CallToolResult)
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict) and result.structured_content["bids"]
    assert old.returncode == 0
    summary = (
        f"after SIGTERM: calls on the new provider within {moved_after:.3f} s, old provider "
        f"exited after {exited_after:.3f} s; {load.counts}, {len(load.failures)} failed"
    )
    print(summary)
    assert load.failures == [], (summary, load.failures)
    assert min(load.counts.values()) >= 20, summary
    # On NOT_SERVING, well before the old process's 1 s drain ends and its connection closes.
    assert moved_after < 0.8, summary
