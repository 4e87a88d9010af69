"""Latency benchmark: binance.get_ticker through the gateway and directly against the provider.

Run from mcp-gateway/ (``uv run python scripts/bench_latency.py --help``). Starts, on loopback:
the tests' fake Binance, the real ``binance-provider`` binary (release build if present), and the
gateway as its own process (``python -m mcp_gateway``); then measures, in one run:

- one MCP client (the Python SDK's ClientSession, streamable HTTP) calling get_ticker in a loop
  through the gateway, and the same call as raw JSON-RPC over one keep-alive HTTP connection;
- one gRPC client (grpc-python) calling Invoke(get_ticker) directly on the provider;
- calls/s for 1, 8 and 32 concurrent clients of both kinds;
- the RSS of the gateway and the provider before and after;
- tools/list through a gateway that also has a hung provider configured (accepts RPCs, never
  answers).

Prints a Markdown table (the figures in docs/latency.md come from it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mcp_gateway._proto.provider.v1 import provider_pb2, provider_pb2_grpc
from tests.fake_binance import SYMBOL, FakeBinance
from tests.support import FakeProvider

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "providers" / "binance-rs" / "target"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return p50 * 1000, p99 * 1000


async def _timed_loop(call: Callable[[], Awaitable[None]], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return samples


async def _throughput(make_caller: Callable[[], Any], clients: int, seconds: float) -> float:
    """Calls/s of ``clients`` concurrent callers (each its own connection or session) over
    ``seconds``, counted once every caller is connected."""
    done = 0
    connected = 0
    all_connected = asyncio.Event()
    stop = asyncio.Event()

    async def one() -> None:
        nonlocal done, connected
        async with make_caller() as call:
            connected += 1
            if connected == clients:
                all_connected.set()
            await all_connected.wait()
            while not stop.is_set():
                await call()
                done += 1

    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    await all_connected.wait()
    counted_from, done = time.perf_counter(), 0
    await asyncio.sleep(seconds)
    rate = done / (time.perf_counter() - counted_from)
    stop.set()
    await asyncio.gather(*tasks)
    return rate


class _Grpc:
    def __init__(self, address: str) -> None:
        self.address = address

    async def __aenter__(self) -> Callable[[], Awaitable[None]]:
        self.channel = grpc.aio.insecure_channel(self.address)
        stub = provider_pb2_grpc.ProviderStub(self.channel)
        request = provider_pb2.InvokeRequest(
            tool="binance.get_ticker", arguments_json=json.dumps({"symbol": SYMBOL})
        )

        async def call() -> None:
            response = await stub.Invoke(request, timeout=10)
            assert response.WhichOneof("outcome") == "result", response

        await call()  # connect and warm up
        return call

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()


class _Mcp:
    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Callable[[], Awaitable[None]]:
        self.http = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0))
        self.transport = streamable_http_client(self.url, http_client=self.http)
        read, write = await self.transport.__aenter__()
        self.session = ClientSession(read, write)
        await self.session.__aenter__()
        await self.session.initialize()
        await self.session.list_tools()

        async def call() -> None:
            result = await self.session.call_tool("binance.get_ticker", {"symbol": SYMBOL})
            assert not result.is_error, result.content

        await call()
        return call

    async def __aexit__(self, *exc: object) -> None:
        await self.session.__aexit__(None, None, None)
        await self.transport.__aexit__(None, None, None)
        await self.http.aclose()


class _RawJsonRpc:
    """tools/call as one JSON-RPC POST on a keep-alive connection (no SDK client cost)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> Callable[[], Awaitable[None]]:
        self.http = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0))
        headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25",
        }
        init = await self.http.post(
            self.url,
            headers=headers,
            json={
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "0"},
                },
            },
        )
        headers["Mcp-Session-Id"] = init.headers["mcp-session-id"]
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "binance.get_ticker", "arguments": {"symbol": SYMBOL}},
        }

        async def call() -> None:
            response = await self.http.post(self.url, headers=headers, json=body)
            assert response.status_code == 200 and '"isError":false' in response.text.replace(
                " ", ""
            ), response.text[:300]

        await call()
        return call

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()


def _provider_binary(explicit: str | None) -> Path:
    candidates = (explicit, TARGET / "release/binance-provider", TARGET / "debug/binance-provider")
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise SystemExit("no binance-provider binary: cargo build --release in providers/binance-rs")


def _wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {seconds} s")


Process = subprocess.Popen[bytes]


def _start_gateway(providers: list[dict[str, Any]], workdir: Path) -> tuple[Process, str]:
    port = _free_port()
    config = workdir / f"providers-{port}.json"
    config.write_text(json.dumps({"providers": providers}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_gateway", "--log-level", "WARNING"],
        env=os.environ
        | {"MCP_PROVIDERS": str(config), "GATEWAY_PORT": str(port), "GATEWAY_DRAIN_SECONDS": "0"},
    )
    return proc, f"http://127.0.0.1:{port}"


def _ghz(ghz: str, address: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, calls/s) of ghz (a Go gRPC load tool) calling get_ticker directly."""
    proto = REPO / "providers" / "proto" / "provider" / "v1" / "provider.proto"
    arguments = json.dumps({"symbol": SYMBOL})
    done = subprocess.run(
        [
            ghz,
            "--insecure",
            "--proto",
            str(proto),
            "--import-paths",
            str(proto.parents[2]),
            "--call",
            "provider.v1.Provider/Invoke",
            "-d",
            json.dumps({"tool": "binance.get_ticker", "arguments_json": arguments}),
            "-c",
            str(clients),
            "--connections",
            str(clients),
            "-z",
            f"{seconds}s",
            "--format",
            "json",
            address,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    report = json.loads(done.stdout)
    latency = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"]}
    return latency[50], latency[99], float(report["rps"])


def _ms(p50: float, p99: float) -> str:
    return f"{p50:.2f} / {p99:.2f} ms"


async def _measure(
    address: str,
    base: str,
    hung_base: str,
    pids: tuple[int, int, int],
    calls: int,
    seconds: float,
    ghz: str | None,
) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    # What an abandoned session costs (the Inspector never DELETEs), on the second gateway while
    # it is fresh: its RSS before and after opening sessions that each make one call.
    sessions = 300
    before = _rss_mib(pids[2])
    for _ in range(sessions):
        async with _RawJsonRpc(f"{hung_base}/mcp"):
            pass
    per_session = (_rss_mib(pids[2]) - before) * 1024 / sessions
    name = f"gateway RSS per abandoned session ({sessions} sessions, one call each, no DELETE)"
    rows.append((name, f"{per_session:.0f} KiB"))

    rss_before = (_rss_mib(pids[0]), _rss_mib(pids[1]))
    async with _Grpc(address) as direct:
        d50, d99 = _percentiles(await _timed_loop(direct, calls))
    async with _Mcp(f"{base}/mcp") as through:
        g50, g99 = _percentiles(await _timed_loop(through, calls))
    async with _RawJsonRpc(f"{base}/mcp") as raw:
        r50, r99 = _percentiles(await _timed_loop(raw, calls))
    rows += [
        ("get_ticker, 1 client, direct gRPC (grpc-python): p50 / p99", _ms(d50, d99)),
        ("get_ticker, 1 client, via gateway (Python SDK ClientSession): p50 / p99", _ms(g50, g99)),
        ("get_ticker, 1 client, via gateway (raw JSON-RPC POST): p50 / p99", _ms(r50, r99)),
        ("gateway overhead at 1 client, p50 (SDK client - direct)", f"{g50 - d50:.2f} ms"),
        ("gateway overhead at 1 client, p50 (raw JSON-RPC - direct)", f"{r50 - d50:.2f} ms"),
    ]
    for clients in (1, 8, 32):
        direct_rate = await _throughput(lambda: _Grpc(address), clients, seconds)
        mcp_rate = await _throughput(lambda: _Mcp(f"{base}/mcp"), clients, seconds)
        rows.append(
            (
                f"calls/s, {clients} concurrent clients: direct / via gateway (SDK clients)",
                f"{direct_rate:.0f} / {mcp_rate:.0f}",
            )
        )
    if ghz:
        for clients in (1, 8, 32):
            p50, p99, rate = await asyncio.to_thread(_ghz, ghz, address, clients, seconds)
            rows.append(
                (
                    f"direct gRPC with ghz (Go), {clients} concurrent clients: p50 / p99, calls/s",
                    f"{_ms(p50, p99)}, {rate:.0f}",
                )
            )
    rss_after = (_rss_mib(pids[0]), _rss_mib(pids[1]))
    for i, name in enumerate(("gateway", "provider")):
        rows.append(
            (f"RSS {name}: before / after", f"{rss_before[i]:.1f} / {rss_after[i]:.1f} MiB")
        )

    # A gateway that also has a hung provider: tools/list answers from what is known.
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0))
    async with (
        streamable_http_client(f"{hung_base}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()

        async def list_tools() -> None:
            listed = await session.list_tools()
            assert len(listed.tools) == 5, [t.name for t in listed.tools]

        l50, l99 = _percentiles(await _timed_loop(list_tools, calls))
    rows.append(("tools/list with one hung provider configured: p50 / p99", _ms(l50, l99)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500, help="timed calls per latency row")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per throughput row")
    parser.add_argument("--provider-bin", help="binance-provider binary (default: target/release)")
    parser.add_argument("--ghz", help="also measure the provider with this ghz binary")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mcp-gateway-bench-"))
    fake = FakeBinance()
    fake.start()
    address = f"127.0.0.1:{_free_port()}"
    provider = subprocess.Popen(
        [str(_provider_binary(args.provider_bin))],
        env=os.environ
        | {"PROVIDER_ADDR": address, "BINANCE_BASE_URL": fake.base_url, "RUST_LOG": "warn"},
    )
    hung = FakeProvider()
    hung.start()
    hung.hang = True
    binance = {"name": "binance", "address": address}
    gateway, base = _start_gateway([binance], workdir)
    hung_gateway, hung_base = _start_gateway(
        [binance, {"name": "hung", "address": hung.address}], workdir
    )
    try:
        _wait_http(f"{base}/ready")
        _wait_http(f"{hung_base}/health")
        rows = asyncio.run(
            _measure(
                address,
                base,
                hung_base,
                (gateway.pid, provider.pid, hung_gateway.pid),
                args.calls,
                args.seconds,
                args.ghz,
            )
        )
    finally:
        for proc in (gateway, hung_gateway, provider):
            proc.send_signal(signal.SIGTERM)
        for proc in (gateway, hung_gateway, provider):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        hung.hang = False
        hung.close()
        fake.stop()
    print(f"\n{args.calls} timed calls per latency row, {args.seconds:g} s per throughput row\n")
    print("| measure | figure |\n| --- | --- |")
    for name, figure in rows:
        print(f"| {name} | {figure} |")


if __name__ == "__main__":
    main()
