"""Steady load on a deployed stack, through its published port, for zero-downtime checks.

    uv run --locked --project mcp-gateway python mcp-gateway/scripts/deploy_load.py \\
        --url http://127.0.0.1:PORT --token TOKEN --fake-binance 172.17.0.1:PORT2 --out load.json

Run in the gateway's project (it needs the official MCP Python SDK, ``mcp>=2.3``, which the
repository's root test environment cannot take: its httpx pin is dagger-io's). Used by
tests/deploy/test_zero_downtime.py and scripts/bench_deploy.py.

What it does until told to stop (``stop`` on stdin, end of stdin, SIGTERM or SIGINT):

- ``--clients`` MCP clients (the SDK's ``ClientSession`` over streamable HTTP, the handshake era
  the TypeScript SDK and MCP Inspector speak), each holding ONE session for the whole run with
  its GET stream open; each calls ``binance.get_ticker`` every ``--tool-period`` seconds and,
  alongside, ``binance.get_recent_trades`` back to back, which the fake Binance answers only
  after ``--slow-seconds`` (slow calls are in flight at every moment, switches included);
- ``GET /health`` and ``GET /ready`` every ``--poll-period`` seconds each, on one keep-alive
  HTTP client, as a monitor or a load balancer would;
- with ``--fake-binance HOST:PORT``, the gateway tests' fake Binance on that address (the
  stack's provider must have ``BINANCE_BASE_URL`` pointing there), so tool calls have an
  upstream; its ``/api/v3/depth`` answers only when released (see ``hold`` below).

Every request is recorded (kind, start and end as Unix times, ok, the error). Commands on stdin,
one per line, each acknowledged on stdout by one line:

- ``window NAME``: a new window starts now (the summary has figures per window) -> ``window NAME``
- ``hold``: each client starts one ``binance.get_order_book`` call, held in the fake Binance;
  answered once all of them have reached it -> ``held N from ADDRESS[,ADDRESS]`` (the
  provider containers that asked)
- ``release``: every held call is answered now (each is answered anyway ``--hold-cap`` seconds
  after it arrived; keep that under the provider's 10 s request timeout) -> ``released``

On stop it waits for the calls in flight, closes the sessions and writes the JSON summary to
``--out``: per window and in total, requests, rate, failures with their errors, and per kind the
count, failures, p50/p99 latency and the longest gap (no successful answer of that kind); each
client's session ids as sent on every request (one means the session survived); every record.
It prints ``ready`` once every session is initialized and each kind has answered once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import signal
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fake_binance import SYMBOL, FakeBinance

FAST_TOOL = "binance.get_ticker"
SLOW_TOOL = "binance.get_recent_trades"
HELD_TOOL = "binance.get_order_book"
SLOW_PATH = "/api/v3/trades"
HELD_PATH = "/api/v3/depth"
# Kinds whose answers come at a steady pace: their longest gap is the outage a client sees.
PACED_KINDS = ("health", "ready", "tool")
KINDS = (*PACED_KINDS, "tool-slow", "tool-held", "stream")


@dataclass
class Record:
    kind: str
    client: int
    start: float
    end: float
    ok: bool
    error: str = ""


@dataclass
class Window:
    name: str
    start: float
    end: float | None = None


@dataclass
class ClientLog:
    """What one MCP client sent and saw: its session ids in the order first used."""

    index: int
    session_ids: list[str] = field(default_factory=list)
    requests_with_id: int = 0
    stream_opens: int = 0

    def saw(self, session_id: str | None) -> None:
        if session_id is None:
            return
        self.requests_with_id += 1
        if session_id not in self.session_ids:
            self.session_ids.append(session_id)


class Upstream(FakeBinance):
    """The fake Binance, with a slow path and a held path."""

    def __init__(self, host: str, port: int, slow_seconds: float, hold_cap: float) -> None:
        super().__init__(host=host, port=port, path_delay_seconds={SLOW_PATH: slow_seconds})
        self.hold_cap = hold_cap
        self._lock = threading.Lock()
        # One gate per `hold`: several batches may be held at once; `release` opens them all.
        self._gates: list[threading.Event] = []
        self.held_arrivals = 0
        # Who asked for each held answer: the address of the provider container that served it.
        self.held_peers: list[str] = []
        self._local = threading.local()

    def hold(self) -> None:
        with self._lock:
            self._gates.append(threading.Event())
            self.held_arrivals = 0
            self.held_peers = []

    def release(self) -> None:
        with self._lock:
            for gate in self._gates:
                gate.set()

    def start(self) -> None:
        super().start()
        assert self._server is not None
        base: Any = self._server.RequestHandlerClass
        local = self._local

        class Handler(base):  # type: ignore[misc]
            """The fake's handler, remembering who asked (answer() is not told)."""

            def do_GET(self) -> None:
                local.peer = self.client_address[0]
                super().do_GET()

        # Read for each new connection: no request has come in yet.
        self._server.RequestHandlerClass = Handler

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        peer = getattr(self._local, "peer", "")
        if path == HELD_PATH:
            with self._lock:
                # Arrivals belong to the latest batch (the next one is asked for only once
                # this one has arrived whole).
                gate = self._gates[-1] if self._gates else threading.Event()
                self.held_arrivals += 1
                self.held_peers.append(peer)
            gate.wait(self.hold_cap)
        return super().answer(path, query)


class Load:
    def __init__(self, args: argparse.Namespace, upstream: Upstream | None) -> None:
        self.args = args
        self.upstream = upstream
        self.records: list[Record] = []
        self.windows: list[Window] = []
        self.clients = [ClientLog(i) for i in range(args.clients)]
        self.sessions: list[ClientSession] = []
        self.stop = asyncio.Event()
        self.connected = 0
        self.all_connected = asyncio.Event()
        self.holds: list[asyncio.Task[bool]] = []

    # -- recording ------------------------------------------------------------------------------
    async def timed(self, kind: str, client: int, call: Any) -> bool:
        start = time.time()
        error = ""
        try:
            error = await call()
        except Exception as exc:  # every failure is data: recorded with its reason
            error = f"{type(exc).__name__}: {exc}"
        self.records.append(Record(kind, client, start, time.time(), not error, error[:300]))
        return not error

    # -- plain HTTP -----------------------------------------------------------------------------
    async def poll(self, http: httpx2.AsyncClient, path: str) -> None:
        async def get() -> str:
            r = await http.get(self.args.url + path)
            return "" if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"

        await self.paced(path.strip("/"), -1, get, self.args.poll_period)

    async def paced(self, kind: str, client: int, call: Any, period: float) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            await self.timed(kind, client, call)
            next_at = max(next_at + period, time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), next_at - time.monotonic())

    # -- MCP ------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def session(self, log: ClientLog) -> AsyncIterator[ClientSession]:
        async def on_request(request: httpx2.Request) -> None:
            if request.method == "POST":
                log.saw(request.headers.get("mcp-session-id"))

        async def on_response(response: httpx2.Response) -> None:
            # The GET (SSE) stream: opened at start and again each time a replica ends it.
            if response.request.method == "GET":
                log.stream_opens += 1
                start = time.time()
                ok = response.status_code == 200
                self.records.append(
                    Record("stream", log.index, start, start, ok, "" if ok else
                           f"GET /mcp answered HTTP {response.status_code}")
                )  # fmt: skip

        headers = {"Authorization": f"Bearer {self.args.token}"} if self.args.token else {}
        http = httpx2.AsyncClient(
            headers=headers,
            timeout=httpx2.Timeout(self.args.request_timeout),
            event_hooks={"request": [on_request], "response": [on_response]},
        )
        async with (
            http,
            streamable_http_client(self.args.url + "/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session

    @staticmethod
    def tool_call(session: ClientSession, name: str, timeout: float) -> Any:
        async def call() -> str:
            result = await session.call_tool(name, {"symbol": SYMBOL}, read_timeout_seconds=timeout)
            if not isinstance(result, types.CallToolResult):
                return f"unexpected result {type(result).__name__}"
            if result.is_error:
                text = " ".join(getattr(c, "text", "") for c in result.content)
                return f"tool error: {text[:200]}"
            return ""

        return call

    async def client(self, log: ClientLog) -> None:
        timeout = self.args.request_timeout
        async with self.session(log) as session:
            self.sessions.append(session)
            self.connected += 1
            if self.connected == self.args.clients:
                self.all_connected.set()
            await self.all_connected.wait()
            await asyncio.gather(
                self.paced(
                    "tool",
                    log.index,
                    self.tool_call(session, FAST_TOOL, timeout),
                    self.args.tool_period,
                ),
                self.paced("tool-slow", log.index, self.tool_call(session, SLOW_TOOL, timeout), 0),
            )
            # Held calls still in flight finish before the session closes.
            await asyncio.gather(*self.holds, return_exceptions=True)

    async def hold(self) -> str:
        assert self.upstream is not None, "hold needs --fake-binance"
        self.upstream.hold()
        timeout = self.args.request_timeout
        for i, session in enumerate(self.sessions):
            call = self.tool_call(session, HELD_TOOL, timeout)
            self.holds.append(asyncio.create_task(self.timed("tool-held", i, call)))
        deadline = time.monotonic() + self.args.hold_cap
        while self.upstream.held_arrivals < len(self.sessions):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        peers = ",".join(sorted(set(self.upstream.held_peers)))
        return f"held {self.upstream.held_arrivals} from {peers}"

    # -- control --------------------------------------------------------------------------------
    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            line = await loop.run_in_executor(None, sys.stdin.readline)
            word, _, rest = line.strip().partition(" ")
            if not line or word == "stop":
                self.stop.set()
                return
            if word == "window":
                self.new_window(rest.strip() or f"w{len(self.windows)}")
                answer = f"window {self.windows[-1].name}"
            elif word == "hold":
                answer = await self.hold()
            elif word == "release":
                assert self.upstream is not None, "release needs --fake-binance"
                self.upstream.release()
                answer = "released"
            else:
                answer = f"unknown command {word!r} (window NAME, hold, release, stop)"
            print(answer, flush=True)

    def new_window(self, name: str) -> None:
        now = time.time()
        if self.windows:
            self.windows[-1].end = now
        self.windows.append(Window(name, now))

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(self.args.request_timeout))
        async with http:
            tasks = [asyncio.create_task(self.client(c)) for c in self.clients]
            await asyncio.wait_for(self.all_connected.wait(), self.args.request_timeout)
            self.new_window("start")
            tasks += [
                asyncio.create_task(self.poll(http, "/health")),
                asyncio.create_task(self.poll(http, "/ready")),
            ]
            while {r.kind for r in self.records if r.ok} < {*PACED_KINDS, "tool-slow"}:
                failed = [t for t in tasks if t.done()]
                if failed:
                    await failed[0]  # a client that could not even start: its error
                await asyncio.sleep(0.05)
            print("ready", flush=True)
            control = asyncio.create_task(self.commands())
            await self.stop.wait()
            self.windows[-1].end = time.time()
            await asyncio.gather(*tasks)
            control.cancel()
        return summary(self.records, self.windows, self.clients)


# -- figures (pure) -----------------------------------------------------------------------------
def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def longest_gap(records: list[Record], start: float, end: float) -> float:
    """Longest time in [start, end] with no successful answer (the window's edges count)."""
    ends = sorted(r.end for r in records if r.ok)
    points = [start, *(t for t in ends if start <= t <= end), end]
    return max(b - a for a, b in itertools.pairwise(points))


def figures(records: list[Record], start: float, end: float) -> dict[str, Any]:
    by_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [r for r in records if r.kind == kind]
        latencies = sorted(r.end - r.start for r in mine if r.ok)
        by_kind[kind] = {
            "count": len(mine),
            "failed": sum(1 for r in mine if not r.ok),
            "p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
            "longest_gap_s": round(longest_gap(mine, start, end), 3) if kind in PACED_KINDS
            else None,
        }  # fmt: skip
    duration = max(end - start, 1e-9)
    requests = [r for r in records if r.kind != "stream"]
    return {
        "duration_s": round(duration, 3),
        "requests": len(requests),
        "rate_per_s": round(len(requests) / duration, 1),
        "failed": sum(1 for r in records if not r.ok),
        "longest_gap_s": max(by_kind[k]["longest_gap_s"] for k in PACED_KINDS),
        "kinds": by_kind,
        "failures": [asdict(r) for r in records if not r.ok],
    }


def summary(
    records: list[Record], windows: list[Window], clients: list[ClientLog]
) -> dict[str, Any]:
    start = windows[0].start
    end = windows[-1].end or time.time()
    per_window = []
    for w in windows:
        w_end = w.end or end
        mine = [r for r in records if w.start <= r.start < w_end]
        per_window.append({"name": w.name, "start": w.start, "end": w_end,
                           **figures(mine, w.start, w_end)})  # fmt: skip
    counted = [r for r in records if r.start >= start]
    return {
        "total": {"start": start, "end": end, **figures(counted, start, end)},
        "windows": per_window,
        "clients": [asdict(c) for c in clients],
        "records": [asdict(r) for r in records],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the stack's published base URL")
    parser.add_argument("--token", default="", help="MCP_GATEWAY_TOKEN of the stack, if any")
    parser.add_argument("--out", required=True, type=Path, help="where the JSON summary goes")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--poll-period", type=float, default=0.1)
    parser.add_argument("--tool-period", type=float, default=0.4)
    parser.add_argument("--slow-seconds", type=float, default=1.5)
    parser.add_argument("--hold-cap", type=float, default=9.0)
    parser.add_argument("--request-timeout", type=float, default=20.0)
    parser.add_argument("--fake-binance", metavar="HOST:PORT", help="serve the fake Binance there")
    args = parser.parse_args()
    if args.clients < 1:
        parser.error("--clients must be at least 1")
    upstream = None
    if args.fake_binance:
        host, _, port = args.fake_binance.rpartition(":")
        if not host or not port.isdigit():
            parser.error(f"--fake-binance {args.fake_binance!r}: expected HOST:PORT")
        upstream = Upstream(host, int(port), args.slow_seconds, args.hold_cap)
        upstream.start()
    try:
        result = asyncio.run(Load(args, upstream).run())
    finally:
        if upstream is not None:
            upstream.release()
            upstream.stop()
    args.out.write_text(json.dumps(result, indent=1))
    total = result["total"]
    print(
        f"done: {total['requests']} requests in {total['duration_s']} s "
        f"({total['rate_per_s']}/s), {total['failed']} failed, longest gap "
        f"{total['longest_gap_s']} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
