"""Test doubles and runners: a real gRPC provider and a real gateway, each on its own thread.

Each runs its own event loop on a thread, like the separate processes they stand for, so a test's
own loop (pytest-asyncio) only drives the MCP client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import grpc
import httpx2
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from starlette.applications import Starlette

from mcp_gateway._proto.provider.v1 import provider_pb2, provider_pb2_grpc
from mcp_gateway.config import ProviderConfig, Settings
from mcp_gateway.drain import DrainingServer
from mcp_gateway.providers import ProviderRegistry
from mcp_gateway.server import create_app

T = TypeVar("T")

Mode = Literal[
    "ok",
    "slow",
    "error",
    "crash",
    "garbage",
    "echo_error",
    "upstream_down",
    "off_schema",
    "tonic_deadline",
]

ECHO_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "symbol": {"type": "string", "pattern": "^[A-Z0-9]{2,20}$"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
    },
    "required": ["symbol"],
    "additionalProperties": False,
}
LIST_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
ECHO_OUTPUT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"echo": {"type": "object"}},
    "required": ["echo"],
    "additionalProperties": False,
}


class _LoopThread:
    """An asyncio loop on a daemon thread; ``run`` executes a coroutine there and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class _FakeProviderServicer(provider_pb2_grpc.ProviderServicer):
    def __init__(self, owner: FakeProvider) -> None:
        self.owner = owner

    async def ListCapabilities(
        self, request: provider_pb2.ListCapabilitiesRequest, context: Any
    ) -> provider_pb2.ListCapabilitiesResponse:
        await self.owner.hang_if_asked()
        return provider_pb2.ListCapabilitiesResponse(
            provider="fake",
            version="1.2.3",
            tools=[
                provider_pb2.Tool(
                    name="fake.echo",
                    description="Echoes its arguments.",
                    input_schema_json=json.dumps(ECHO_SCHEMA),
                    output_schema_json=json.dumps(ECHO_OUTPUT_SCHEMA),
                    read_only=True,
                ),
                provider_pb2.Tool(
                    name="fake.list",
                    description="Returns a JSON array.",
                    input_schema_json=json.dumps(LIST_SCHEMA),
                ),
                *self.owner.extra_tools,
            ],
        )

    async def Invoke(
        self, request: provider_pb2.InvokeRequest, context: Any
    ) -> provider_pb2.InvokeResponse:
        owner = self.owner
        owner.calls.append(request)
        await owner.hang_if_asked()
        if owner.mode == "tonic_deadline":
            # What tonic does: answer an expiring deadline with CANCELLED, a moment before the
            # caller's own deadline fires.
            remaining = context.time_remaining()
            await asyncio.sleep(max(remaining - 0.05, 0))
            await context.abort(grpc.StatusCode.CANCELLED, "Timeout expired")
        if owner.mode == "slow":
            await asyncio.sleep(owner.slow_seconds)
        if owner.mode == "crash":
            await context.abort(grpc.StatusCode.INTERNAL, "panicked at src/tools.rs:42")
        if owner.mode == "garbage":
            return provider_pb2.InvokeResponse(result=provider_pb2.ToolResult(json="{not json"))
        if owner.mode == "echo_error":
            # Like a careless provider: the whole argument in the message.
            return provider_pb2.InvokeResponse(
                error=provider_pb2.ToolError(
                    code=provider_pb2.ERROR_CODE_INVALID_ARGUMENTS,
                    message=f"bad arguments: {request.arguments_json}",
                )
            )
        if owner.mode == "upstream_down":
            return provider_pb2.InvokeResponse(
                error=provider_pb2.ToolError(
                    code=provider_pb2.ERROR_CODE_UPSTREAM_UNAVAILABLE,
                    message="upstream api.example.com unreachable: connection refused",
                )
            )
        if owner.mode == "off_schema":
            return provider_pb2.InvokeResponse(
                result=provider_pb2.ToolResult(json=json.dumps({"echo": "not an object"}))
            )
        if owner.mode == "error":
            return provider_pb2.InvokeResponse(
                error=provider_pb2.ToolError(
                    code=provider_pb2.ERROR_CODE_UPSTREAM_REJECTED,
                    message="Invalid symbol.",
                    upstream_code=-1121,
                )
            )
        args = json.loads(request.arguments_json)
        if request.tool == "fake.list":
            return provider_pb2.InvokeResponse(
                result=provider_pb2.ToolResult(json=json.dumps([1, 2, 3]))
            )
        if request.tool != "fake.echo":
            return provider_pb2.InvokeResponse(
                error=provider_pb2.ToolError(
                    code=provider_pb2.ERROR_CODE_UNKNOWN_TOOL, message=f"no tool {request.tool}"
                )
            )
        return provider_pb2.InvokeResponse(
            result=provider_pb2.ToolResult(
                json=json.dumps({"echo": args}),
                text=f"# Echo\n\nsymbol **{args.get('symbol')}**",
            )
        )


class _HealthServicer(health.aio.HealthServicer):
    def __init__(self, owner: FakeProvider) -> None:
        super().__init__()
        self.owner = owner

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Any
    ) -> health_pb2.HealthCheckResponse:
        await self.owner.hang_if_asked()
        return await super().Check(request, context)


class FakeProvider:
    """A provider.v1 + grpc.health.v1 server on 127.0.0.1 whose behaviour a test sets.

    ``mode``: ``ok`` answers, ``slow`` sleeps ``slow_seconds`` before answering, ``error``
    returns a ToolError, ``crash`` fails the RPC with INTERNAL, ``garbage`` returns invalid JSON,
    ``echo_error`` a ToolError quoting all the arguments, ``upstream_down`` an
    UPSTREAM_UNAVAILABLE error, ``off_schema`` a result that breaks fake.echo's output schema,
    ``tonic_deadline`` CANCELLED "Timeout expired" just before the call's deadline (as tonic).
    ``hang``: every RPC (health included) is accepted and never answered. ``extra_tools`` are
    appended to ListCapabilities. ``stop()`` takes it down; ``start()`` brings it back on the
    same port.
    """

    def __init__(self) -> None:
        self.mode: Mode = "ok"
        self.hang = False
        self.slow_seconds = 30.0
        self.calls: list[provider_pb2.InvokeRequest] = []
        self.extra_tools: list[provider_pb2.Tool] = []
        self.port = 0
        self._loop = _LoopThread("fake-provider")
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _start(self) -> None:
        server = grpc.aio.server()
        provider_pb2_grpc.add_ProviderServicer_to_server(_FakeProviderServicer(self), server)
        self._health = _HealthServicer(self)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        if port == 0:
            raise RuntimeError(f"fake provider could not bind 127.0.0.1:{self.port}")
        self.port = port
        await server.start()
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._server = server

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None

    def start(self) -> None:
        self._loop.run(self._start())

    async def hang_if_asked(self) -> None:
        if self.hang:
            await asyncio.Event().wait()

    def stop(self) -> None:
        self._loop.run(self._stop())

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert self._health is not None
        self._loop.run(self._health.set("", status))

    def close(self) -> None:
        self.stop()
        self._loop.stop()


def free_port() -> int:
    """A port nothing listens on (bound then released: a refused-connection target)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningGateway:
    """A gateway served by uvicorn on a background thread."""

    port: int
    server: uvicorn.Server
    thread: threading.Thread
    app: Starlette

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        if self.thread.is_alive():
            raise RuntimeError("gateway did not shut down within 15 s")


def start_gateway(
    providers: list[ProviderConfig],
    token: str | None = None,
    refresh_interval: float = 30,
    **settings: Any,
) -> RunningGateway:
    """Run the real app under uvicorn on a loopback socket bound to port 0.

    ``settings`` override :class:`Settings` fields (e.g. ``max_sessions=2``).
    """
    gateway_settings = Settings(
        port=0, providers_file="(test)", providers=tuple(providers), token=token, **settings
    )
    registry = ProviderRegistry(
        gateway_settings.providers,
        refresh_interval,
        retry_seconds=gateway_settings.provider_retry_seconds,
    )
    app = create_app(gateway_settings, registry)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    # The process's server class: stopping it ends open GET streams first, as on SIGTERM.
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=10)
    server = DrainingServer(config, app.state.drain, drain_seconds=0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    return RunningGateway(port=port, server=server, thread=thread, app=app)


TOOLS_CHANGED = "notifications/tools/list_changed"


class Notifications:
    """A client's message handler that records the server's notifications."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def __call__(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if isinstance(method, str):
            self.methods.append(method)

    def count(self, method: str = TOOLS_CHANGED) -> int:
        return self.methods.count(method)

    async def wait_for_more(self, seen: int, seconds: float, method: str = TOOLS_CHANGED) -> None:
        """Wait until more than ``seen`` notifications of ``method`` arrived."""

        async def arrived() -> bool:
            return self.count(method) > seen

        await wait_until(arrived, seconds, f"a {method} notification (after {seen})")


@asynccontextmanager
async def mcp_session(
    url: str,
    token: str | None = None,
    notifications: Notifications | None = None,
    http: httpx2.AsyncClient | None = None,
) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session over streamable HTTP (handshake era)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = http or httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0))
    async with (
        client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write, message_handler=notifications) as session,
    ):
        await session.initialize()
        yield session


async def wait_until(
    predicate: Callable[[], Coroutine[Any, Any, bool]], seconds: float, what: str
) -> None:
    """Poll an async predicate until true; fail with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.05)


def write_providers(path: Path, entries: list[dict[str, Any]]) -> Path:
    """Write a providers file (as YAML's JSON subset) and return its path."""
    path.write_text(json.dumps({"providers": entries}), encoding="utf-8")
    return path


def _wait_serving(address: str, proc: subprocess.Popen[str], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with grpc.insecure_channel(address) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"binance-provider exited with {proc.returncode}: "
                    + log.read_text(encoding="utf-8")[-4000:]
                )
            try:
                response = check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"binance-provider not SERVING on {address} after {seconds} s")
            time.sleep(0.1)


@contextmanager
def provider_process(
    binary: Path, address: str, binance_url: str, log: Path
) -> Iterator[subprocess.Popen[str]]:
    """The real provider binary on ``address`` (stderr to ``log``), yielded once SERVING.

    Drain and grace are at their defaults, as deployed. On exit it gets SIGTERM unless it
    already stopped; one that ignores SIGTERM for 15 s is killed and fails the test.
    """
    with log.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            [str(binary)],
            env=os.environ
            | {
                "PROVIDER_ADDR": address,
                "BINANCE_BASE_URL": binance_url,
                "BINANCE_MAX_RETRIES": "0",
                "RUST_LOG": "info",
            },
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        _wait_serving(address, proc, log, 30)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("binance-provider ignored SIGTERM for 15 s") from None


@contextmanager
def gateway_process(port: int, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """``python -m mcp_gateway`` on ``port`` (stderr to ``log``), yielded once /ready is 200.

    Killed on exit if still running; a test that stops it itself reads ``log`` afterwards.
    """
    with log.open("w", encoding="utf-8") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_gateway"],
            env=os.environ | env | {"GATEWAY_PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text(encoding="utf-8")
            try:
                if httpx2.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "gateway did not become ready"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
