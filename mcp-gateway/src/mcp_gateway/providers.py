"""The gateway's side of provider.v1: one reused gRPC channel per provider, discovery, calls.

What the MCP layer reads (the tool list, readiness) is a snapshot kept current by background
loops, so no MCP request ever waits on a provider it does not call: a provider that accepts RPCs
and never answers slows nothing but its own tool calls. Per provider, a health loop asks
``grpc.health.v1`` every second and a discovery loop runs ``ListCapabilities`` at start, whenever
health turns SERVING or the channel connects anew (a restarted or replaced provider), when a call
hints that the tool set moved, every 30 s, and after a failure with exponential backoff.
Listeners hear about every change of the tool set.

A provider's address may name several processes (during a deploy, Docker's DNS answers the old and
the new container for one service name). The channel balances over every address the name
resolves to and checks each one's health itself (``round_robin`` with ``healthCheckConfig``: a
``grpc.health.v1`` Watch per connection), so calls and health checks only go to processes that
say SERVING. gRPC does not resolve the name again when a process turns NOT_SERVING, though (only
when a connection fails), so when every address the channel knows stops serving, the client
renews its channel: the new one resolves the name afresh and finds the new process, while calls
in flight on the old channel finish there (see ``ProviderClient._renew_channel``).

Every failure a provider can cause (down, slow, broken answer, tool error) becomes a
:class:`ProviderCallError` whose message names the provider and says why, bounded in length.
Nothing here waits longer than the provider's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import grpc
from grpc.aio import AioRpcError
from grpc_health.v1 import health_pb2
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from mcp_gateway._proto.provider.v1 import provider_pb2, provider_pb2_grpc
from mcp_gateway.config import ProviderConfig
from mcp_gateway.text import NAME_LIMIT, clip, quote

logger = logging.getLogger(__name__)

# Discovery and health checks are short: a healthy provider answers them from memory.
DISCOVERY_TIMEOUT_SECONDS: Final = 5.0
HEALTH_TIMEOUT_SECONDS: Final = 1.0
HEALTH_INTERVAL_SECONDS: Final = 1.0
# A NOT_SERVING answer on a channel that is still READY is asked again this often, this long
# apart (see ProviderClient.check_health).
HEALTH_RECHECKS: Final = 5
HEALTH_RECHECK_PAUSE_SECONDS: Final = 0.02
# A discovered provider is asked again this often (it may have been replaced by a new version).
REFRESH_INTERVAL_SECONDS: Final = 30.0
# At start-up the gateway waits this long at most for every provider's first discovery, so its
# first clients see the tools instead of an empty list followed by list_changed.
FIRST_DISCOVERY_WAIT_SECONDS: Final = 2.0
DISCOVERY_BACKOFF_INITIAL_SECONDS: Final = 0.5
DISCOVERY_BACKOFF_MAX_SECONDS: Final = 30.0
# The deadline sent to the provider exceeds our own timer by this much: tonic answers an expired
# deadline with CANCELLED ("Timeout expired") a moment before the client's deadline fires, so
# the timer that decides must be ours.
DEADLINE_MARGIN_SECONDS: Final = 0.25
# Between two retries of a read-only call that met UNAVAILABLE on a connected channel.
RETRY_PAUSE_SECONDS: Final = 0.05
# After a channel renewal, calls wait this long at most for the new channel to connect before
# being sent anyway (the new process is normally found within milliseconds).
RENEW_WAIT_SECONDS: Final = 2.0
# How often the connection loop looks at the channel when it has not changed state (it also
# reacts at once to every state change).
CONNECTION_POLL_SECONDS: Final = 0.25
# The message gRPC gives a call it could not send because every address reported NOT_SERVING
# on its health watch (c-core's health_check_client.cc).
_UNHEALTHY_DETAIL: Final = "backend unhealthy"
# Balance over every address the name resolves to, and keep a health watch on each connection
# so that a process reporting NOT_SERVING gets no new calls (gRFC A17). Service "" is the
# whole server, as the gateway's own health loop asks.
_SERVICE_CONFIG: Final = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
    }
)
_CHANNEL_OPTIONS: Final[list[tuple[str, Any]]] = [
    # gRPC backs off reconnecting up to 120 s by default; a restarted provider must be usable
    # within a second or so.
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # A new provider container has a new IP under the same service name: re-resolve at once
    # (the default waits 30 s between resolutions).
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.service_config", _SERVICE_CONFIG),
]

T = TypeVar("T")
ToolsListener = Callable[[], Awaitable[None]]


class ProviderCallError(Exception):
    """A provider could not serve a call; the message is meant for the MCP client."""


class UnknownToolError(LookupError):
    """No enabled provider offers the tool (an MCP protocol error, not a tool failure)."""


@dataclass(frozen=True)
class DiscoveredTool:
    """A tool as exposed over MCP, with the provider that serves it."""

    name: str
    description: str
    input_schema: dict[str, Any]
    provider: str
    output_schema: dict[str, Any] | None = None
    read_only: bool = False
    output_validator: Draft202012Validator | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ToolOutput:
    """A successful tool result: the provider's JSON value and optional markdown text."""

    value: Any
    json_text: str
    text: str


@dataclass(frozen=True)
class Health:
    """The provider's last answer to grpc.health.v1 Check (``UNKNOWN`` before the first)."""

    status: str
    detail: str = ""
    checked_at: float | None = None

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


@dataclass(frozen=True)
class Upstream:
    """What the provider's last tool calls said about its upstream API (Binance...).

    Observed, not probed: the gateway never spends upstream quota on checks.
    """

    status: str = "unknown"  # "reachable" | "unreachable" | "unknown" (no call yet)
    detail: str = ""
    observed_at: float | None = None


@dataclass(frozen=True)
class ProviderStatus:
    """One provider as /ready reports it."""

    name: str
    address: str
    health: Health
    tools: int
    discovered: bool
    discovery_error: str | None
    upstream: Upstream

    @property
    def ready(self) -> bool:
        return self.health.serving and self.discovered


class _Timeout(Exception):
    """Our own timer ran out (see DEADLINE_MARGIN_SECONDS)."""


class _NoConnection(Exception):
    """The channel did not get connected again in time (see ProviderClient.invoke)."""


_UPSTREAM_DOWN = {provider_pb2.ERROR_CODE_UPSTREAM_UNAVAILABLE, provider_pb2.ERROR_CODE_TIMEOUT}
_UPSTREAM_ANSWERED = {provider_pb2.ERROR_CODE_UPSTREAM_REJECTED}


def _parse_schema(
    provider: str, tool: str, kind: str, text: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object in ``text`` (None when empty), or the reason it is unusable."""
    if not text:
        return None, None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"provider {provider!r}: tool {quote(tool)}: {kind} schema is not JSON: {exc}"
    if not isinstance(schema, dict):
        return None, f"provider {provider!r}: tool {quote(tool)}: {kind} schema is not an object"
    return schema, None


def _tool_from_proto(provider: str, tool: provider_pb2.Tool) -> DiscoveredTool | None:
    input_schema, problem = _parse_schema(provider, tool.name, "input", tool.input_schema_json)
    if problem is not None:
        logger.warning("%s; tool skipped", problem)
        return None
    input_schema = input_schema or {}
    input_schema.setdefault("type", "object")
    output_schema, problem = _parse_schema(provider, tool.name, "output", tool.output_schema_json)
    validator = None
    if problem is None and output_schema is not None:
        try:
            Draft202012Validator.check_schema(output_schema)
            validator = Draft202012Validator(output_schema)
        except SchemaError as exc:
            problem = f"provider {provider!r}: tool {quote(tool.name)}: output schema is invalid: "
            problem += clip(exc.message)
        if validator is not None and output_schema.get("type") != "object":
            problem = (
                f"provider {provider!r}: tool {quote(tool.name)}: output schema must have "
                '"type": "object" (MCP outputSchema)'
            )
            validator = None
    if problem is not None:
        # The tool still works; it is published without an outputSchema.
        logger.warning("%s; published without outputSchema", problem)
        output_schema = None
    return DiscoveredTool(
        name=tool.name,
        description=tool.description,
        input_schema=input_schema,
        provider=provider,
        output_schema=output_schema,
        read_only=tool.read_only,
        output_validator=validator,
    )


class ProviderClient:
    """One provider: its channel (created once, reconnects on its own) and what it offers."""

    def __init__(
        self,
        config: ProviderConfig,
        *,
        retry_seconds: float = 0.0,
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
        on_tools_changed: ToolsListener | None = None,
    ) -> None:
        self.config = config
        self.retry_seconds = retry_seconds
        self.refresh_interval = refresh_interval
        self.on_tools_changed = on_tools_changed
        self.tools: dict[str, DiscoveredTool] = {}
        self.version = ""
        self.discovered = False
        # Why the last discovery failed; None after a successful one.
        self.discovery_error: str | None = None
        self.health = Health("UNKNOWN", "not checked yet")
        self.upstream = Upstream()
        self._wake = asyncio.Event()
        self.first_attempt = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        # Whether the current channel has been READY (a renewal is only for a channel that was).
        self._channel_was_ready = False
        # When the current channel replaced one whose addresses all stopped serving.
        self._renewed_at: float | None = None
        # Old channels closing: calls in flight on them finish first.
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def where(self) -> str:
        return f"provider {self.config.name!r} at {self.config.address}"

    @property
    def channel(self) -> grpc.aio.Channel:
        # Created on first use so it binds to the event loop that serves requests.
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.config.address, options=_CHANNEL_OPTIONS)
        return self._channel

    async def close(self) -> None:
        """Close the channels (in-flight calls are cancelled)."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel = None

    def _channel_state(self) -> grpc.ChannelConnectivity:
        """The current channel's state, renewing the channel first if it stopped serving.

        READY means at least one address behind the name is connected and SERVING.
        TRANSIENT_FAILURE after READY means every address the channel knows stopped serving
        (NOT_SERVING or gone): gRPC would only look the name up again once a connection
        drops, i.e. after the old process's drain, so the channel is renewed now.
        """
        state = self.channel.get_state(try_to_connect=False)
        if state == grpc.ChannelConnectivity.READY:
            self._channel_was_ready = True
            self._renewed_at = None
        elif state == grpc.ChannelConnectivity.TRANSIENT_FAILURE and self._channel_was_ready:
            self._renew_channel()
            state = self.channel.get_state(try_to_connect=True)
        return state

    def _renew_channel(self) -> None:
        """Replace the channel by a new one, which resolves the address again.

        The old channel takes no new calls; the calls in flight on it (on the old process,
        which finishes them during its drain) get up to the provider's timeout before it is
        closed.
        """
        old = self._channel
        self._channel = grpc.aio.insecure_channel(self.config.address, options=_CHANNEL_OPTIONS)
        self._channel_was_ready = False
        self._renewed_at = time.monotonic()
        logger.info("%s: every known address stopped serving; resolving the name again", self.where)
        if old is not None:
            grace = self.config.timeout_seconds + DEADLINE_MARGIN_SECONDS
            task = asyncio.create_task(old.close(grace=grace), name=f"retire-{self.config.name}")
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _settled_channel(self, until: float) -> grpc.aio.Channel:
        """The channel to send on; just after a renewal, wait for its first connection attempt.

        The wait ends when the new channel is READY (a process behind the name serves) or has
        failed to connect to every address, at ``until`` or RENEW_WAIT_SECONDS after the
        renewal at the latest. Nothing has been sent yet, so it is safe for every tool.
        """
        self._channel_state()
        while self._renewed_at is not None:
            channel = self.channel
            state = channel.get_state(try_to_connect=True)
            if state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                break
            remaining = min(until, self._renewed_at + RENEW_WAIT_SECONDS) - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, CONNECTION_POLL_SECONDS)):
                    await channel.wait_for_state_change(state)
            self._channel_state()
        return self.channel

    def status(self) -> ProviderStatus:
        return ProviderStatus(
            name=self.config.name,
            address=self.config.address,
            health=self.health,
            tools=len(self.tools),
            discovered=self.discovered,
            discovery_error=self.discovery_error,
            upstream=self.upstream,
        )

    def wake_discovery(self) -> None:
        """Ask the discovery loop to run now (it never runs twice at once)."""
        self._wake.set()

    async def run(self) -> None:
        """The background loops; runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._health_loop(), name=f"health-{self.config.name}")
            group.create_task(self._discovery_loop(), name=f"discovery-{self.config.name}")
            group.create_task(self._connection_loop(), name=f"connection-{self.config.name}")

    async def _connection_loop(self) -> None:
        # A new connection may be a new provider process (a restart, a new version behind the
        # same address): learn its tools, even if health never saw it down between two checks.
        # Also renews the channel as soon as every address it knows stops serving.
        channel = self.channel
        state = self._channel_state()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONNECTION_POLL_SECONDS):
                    await channel.wait_for_state_change(state)
            previous, state = state, self._channel_state()
            if self.channel is not channel:
                channel, previous = self.channel, grpc.ChannelConnectivity.IDLE
            if state == grpc.ChannelConnectivity.READY and previous != state:
                self.wake_discovery()

    async def _health_loop(self) -> None:
        while True:
            previous = self.health
            self.health = await self.check_health()
            if self.health.serving and (not previous.serving or not self.discovered):
                # Back (or new, or replaced by a new version): learn its tools now.
                self.wake_discovery()
            elif previous.serving and self.health.status == "UNREACHABLE":
                # Maybe gone for good: discovery confirms (or not) and withdraws its tools.
                self.wake_discovery()
            await asyncio.sleep(HEALTH_INTERVAL_SECONDS)

    async def _discovery_loop(self) -> None:
        backoff = DISCOVERY_BACKOFF_INITIAL_SECONDS
        while True:
            self._wake.clear()
            succeeded = await self.discover()
            self.first_attempt.set()
            if succeeded:
                backoff = DISCOVERY_BACKOFF_INITIAL_SECONDS
                delay = self.refresh_interval
            else:
                delay = backoff
                backoff = min(backoff * 2, DISCOVERY_BACKOFF_MAX_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _unary(
        self,
        call: Callable[..., Awaitable[T]],
        request: Any,
        seconds: float,
        *,
        wait_for_ready: bool = False,
    ) -> T:
        """Run one unary RPC under our own timer of ``seconds``; raise _Timeout when it runs out."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(seconds):
                return await call(
                    request,
                    timeout=seconds + DEADLINE_MARGIN_SECONDS,
                    wait_for_ready=wait_for_ready,
                )
        except TimeoutError:
            raise _Timeout from None
        except AioRpcError as exc:
            # Should the server's expiry still win the race, it is our timeout all the same.
            late = time.monotonic() - started >= seconds * 0.95
            expired = (grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED)
            if late and exc.code() in expired:
                raise _Timeout from None
            raise

    def _describe_timeout(self, timeout: float, waited_for_connection: bool) -> str:
        state = self.channel.get_state(try_to_connect=False)
        if waited_for_connection and state != grpc.ChannelConnectivity.READY:
            return f"{self.where} is unavailable: no connection within {timeout:g} s"
        return f"{self.where} did not answer within {timeout:g} s (timeout)"

    def _describe_rpc_error(self, exc: AioRpcError) -> str:
        code = exc.code()
        details = clip(exc.details() or "")
        if code == grpc.StatusCode.UNAVAILABLE:
            return f"{self.where} is unavailable (down or unreachable): {details}"
        return f"{self.where} failed the call with gRPC status {code.name}: {details}"

    async def discover(self) -> bool:
        """Ask the provider for its tools (ListCapabilities) and replace the known set.

        Waits up to the discovery timeout for a connection (so a provider being swapped for a
        new version does not flicker out of the tool list). On failure the tools are withdrawn
        (clients should not see tools that cannot be called) and ``discovery_error`` says why.
        Returns whether it succeeded.
        """
        timeout = min(self.config.timeout_seconds, DISCOVERY_TIMEOUT_SECONDS)
        started = time.monotonic()
        try:
            channel = await self._settled_channel(started + timeout)
            stub = provider_pb2_grpc.ProviderStub(channel)
            response = await self._unary(
                stub.ListCapabilities,
                provider_pb2.ListCapabilitiesRequest(),
                max(started + timeout - time.monotonic(), 0.001),
                wait_for_ready=True,
            )
        except _Timeout:
            await self._discovery_failed(self._describe_timeout(timeout, True))
            return False
        except AioRpcError as exc:
            await self._discovery_failed(self._describe_rpc_error(exc))
            return False
        tools: dict[str, DiscoveredTool] = {}
        for proto_tool in response.tools:
            tool = _tool_from_proto(self.config.name, proto_tool)
            if tool is not None:
                tools[tool.name] = tool
        changed = not self.discovered or tools != self.tools
        if changed or self.discovery_error is not None:
            logger.info(
                "%s: %d tools discovered (provider %r version %s)",
                self.where,
                len(tools),
                clip(response.provider, 100),
                clip(response.version, 100) or "?",
            )
        self.tools = tools
        self.version = response.version
        self.discovered = True
        self.discovery_error = None
        if changed:
            await self._tools_changed()
        return True

    async def _discovery_failed(self, reason: str) -> None:
        if self.discovery_error != reason:
            logger.warning("%s", reason)
        self.discovery_error = reason
        had_tools = self.discovered
        self.tools = {}
        self.discovered = False
        if had_tools:
            await self._tools_changed()

    async def _tools_changed(self) -> None:
        if self.on_tools_changed is not None:
            try:
                await self.on_tools_changed()
            except Exception:  # a listener's failure must not stop discovery
                logger.exception("tools-changed listener failed")

    async def invoke(self, tool: str, arguments: dict[str, Any], read_only: bool) -> ToolOutput:
        """Run ``tool`` on the provider within its timeout; raise ProviderCallError otherwise.

        A read-only call that meets UNAVAILABLE (the provider is being replaced, or restarts)
        is sent again once the channel is connected again, if that happens within
        ``retry_seconds``; calling a read-only tool twice is harmless. The whole call, retries
        included, never outlasts the tool's timeout.
        """
        cfg = self.config
        name = clip(tool, NAME_LIMIT)
        request_id = uuid.uuid4().hex
        request = provider_pb2.InvokeRequest(
            tool=tool, arguments_json=json.dumps(arguments), request_id=request_id
        )
        logger.info("call %s on provider %r (request %s)", name, cfg.name, request_id)
        started = time.monotonic()
        deadline = started + cfg.timeout_seconds
        retry_until = min(deadline, started + self.retry_seconds) if read_only else started
        first_error: str | None = None
        while True:
            try:
                if first_error is not None:
                    await self._wait_connected(retry_until)
                stub = provider_pb2_grpc.ProviderStub(await self._settled_channel(deadline))
                response = await self._unary(
                    stub.Invoke, request, max(deadline - time.monotonic(), 0.001)
                )
                return self._outcome(name, response)
            except _Timeout:
                reason = self._describe_timeout(cfg.timeout_seconds, False)
            except _NoConnection:
                waited = min(self.retry_seconds, cfg.timeout_seconds)
                reason = f"{first_error}; no connection again within {waited:g} s"
            except AioRpcError as exc:
                reason = self._describe_rpc_error(exc)
                if exc.code() == grpc.StatusCode.UNAVAILABLE:
                    self.wake_discovery()
                    if time.monotonic() < retry_until:
                        if first_error is None:
                            first_error = reason
                            logger.info(
                                "call %s (request %s): %s; retrying (read-only)",
                                name,
                                request_id,
                                reason,
                            )
                        else:
                            await asyncio.sleep(RETRY_PAUSE_SECONDS)
                        continue
            logger.warning("call %s (request %s): %s", name, request_id, reason)
            raise ProviderCallError(f"{name}: {reason}")

    async def _wait_connected(self, until: float) -> None:
        """Wait for the channel to be READY until ``until`` (monotonic); raise _NoConnection.

        Follows a renewal: the channel waited on is always the current one.
        """
        while True:
            state = self._channel_state()
            if state == grpc.ChannelConnectivity.READY:
                return
            if state != grpc.ChannelConnectivity.CONNECTING:
                state = self.channel.get_state(try_to_connect=True)
            remaining = until - time.monotonic()
            if remaining <= 0:
                raise _NoConnection
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, CONNECTION_POLL_SECONDS)):
                    await self.channel.wait_for_state_change(state)

    def _outcome(self, tool: str, response: provider_pb2.InvokeResponse) -> ToolOutput:
        name = self.config.name
        outcome = response.WhichOneof("outcome")
        if outcome == "error":
            err = response.error
            self._observe_upstream(err.code, err.message)
            if err.code == provider_pb2.ERROR_CODE_UNKNOWN_TOOL:
                self.wake_discovery()
                raise UnknownToolError(clip(err.message))
            code = provider_pb2.ErrorCode.Name(err.code).removeprefix("ERROR_CODE_")
            upstream = f", upstream code {err.upstream_code}" if err.upstream_code else ""
            raise ProviderCallError(
                f"{tool} failed in provider {name!r} ({code}{upstream}): {clip(err.message)}"
            )
        if outcome != "result":
            raise ProviderCallError(
                f"{tool}: provider {name!r} answered with neither a result nor an error"
            )
        self._observe_upstream(None, "")
        result = response.result
        value: Any = None
        if result.json:
            try:
                value = json.loads(result.json)
            except json.JSONDecodeError as exc:
                raise ProviderCallError(
                    f"{tool}: provider {name!r} sent a result that is not valid JSON: {exc}"
                ) from exc
        return ToolOutput(value=value, json_text=result.json, text=result.text)

    def _observe_upstream(self, code: int | None, message: str) -> None:
        now = time.time()
        if code is None or code in _UPSTREAM_ANSWERED:
            self.upstream = Upstream("reachable", "", now)
        elif code in _UPSTREAM_DOWN:
            self.upstream = Upstream("unreachable", clip(message, 300), now)

    async def check_health(self) -> Health:
        """grpc.health.v1 Check of the whole server (service ""); waits only after a renewal.

        SERVING when any address behind the name serves. A Check can reach an old process in
        the instant between its turning NOT_SERVING and the channel's health watch hearing of
        it; while the channel still calls itself READY, such an answer is asked again, briefly.
        """
        now = time.time()
        until = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        for _ in range(HEALTH_RECHECKS + 1):
            health = await self._check_once(until, now)
            if health.status != "NOT_SERVING" or not self._channel_ready_now():
                break
            await asyncio.sleep(HEALTH_RECHECK_PAUSE_SECONDS)
        return health

    def _channel_ready_now(self) -> bool:
        return self.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY

    async def _check_once(self, until: float, now: float) -> Health:
        channel = await self._settled_channel(until)
        # The generated HealthStub is untyped in its stubs; the method path is the standard one.
        check: grpc.aio.UnaryUnaryMultiCallable[
            health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
        ] = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            response = await self._unary(
                check,
                health_pb2.HealthCheckRequest(service=""),
                max(until - time.monotonic(), 0.001),
            )
        except _Timeout:
            return Health("UNREACHABLE", self._describe_timeout(HEALTH_TIMEOUT_SECONDS, False), now)
        except AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE and _UNHEALTHY_DETAIL in (
                exc.details() or ""
            ):
                # Reachable, but every address said NOT_SERVING on the channel's health watch.
                return Health("NOT_SERVING", "", now)
            return Health("UNREACHABLE", self._describe_rpc_error(exc), now)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
        return Health(status, "", now)


class ProviderRegistry:
    """All enabled providers; routes tool names to the provider that offers them."""

    def __init__(
        self,
        providers: tuple[ProviderConfig, ...],
        refresh_interval: float = REFRESH_INTERVAL_SECONDS,
        retry_seconds: float = 0.0,
    ) -> None:
        self.clients = {
            p.name: ProviderClient(
                p,
                retry_seconds=retry_seconds,
                refresh_interval=refresh_interval,
                on_tools_changed=self._tools_changed,
            )
            for p in providers
            if p.enabled
        }
        self._listeners: list[ToolsListener] = []
        self._tools: dict[str, DiscoveredTool] = {}
        self._task: asyncio.Task[None] | None = None

    def add_listener(self, listener: ToolsListener) -> None:
        """Call ``listener`` after every change of the merged tool list."""
        self._listeners.append(listener)

    async def __aenter__(self) -> ProviderRegistry:
        self._task = asyncio.create_task(self._run(), name="providers")
        return self

    async def wait_first_discovery(self, seconds: float = FIRST_DISCOVERY_WAIT_SECONDS) -> None:
        """Wait (at most ``seconds``) until every provider was asked for its tools once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.gather(*(c.first_attempt.wait() for c in self.clients.values()))

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for client in self.clients.values():
                group.create_task(client.run(), name=f"provider-{client.config.name}")

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(c.close() for c in self.clients.values()))

    async def _tools_changed(self) -> None:
        merged: dict[str, DiscoveredTool] = {}
        for client in self.clients.values():
            for tool in client.tools.values():
                if tool.name in merged:
                    logger.warning(
                        "tool %s offered by providers %r and %r; keeping %r",
                        quote(tool.name),
                        merged[tool.name].provider,
                        tool.provider,
                        merged[tool.name].provider,
                    )
                    continue
                merged[tool.name] = tool
        self._tools = merged
        for listener in self._listeners:
            try:
                await listener()
            except Exception:  # one listener's failure must not stop the others
                logger.exception("tools-changed listener failed")

    def list_tools(self) -> list[DiscoveredTool]:
        """Every tool known right now (never waits on a provider)."""
        return list(self._tools.values())

    def tool(self, name: str) -> DiscoveredTool | None:
        return self._tools.get(name)

    async def call(
        self, name: str, arguments: dict[str, Any]
    ) -> tuple[ToolOutput, DiscoveredTool | None]:
        """Route ``name`` to its provider and run it; returns the output and the tool's entry.

        Raises:
            UnknownToolError: no enabled provider offers the tool.
            ProviderCallError: the provider is down, slow, or the tool failed.
        """
        tool = self._tools.get(name)
        # Not (or not yet) discovered: tool names are prefixed with their provider's name,
        # and the provider itself says whether the tool exists.
        client = self.clients.get(tool.provider if tool else name.split(".", 1)[0])
        if client is None or (tool is None and client.discovered):
            raise UnknownToolError(self._unknown_tool_message(name))
        try:
            output = await client.invoke(
                name, arguments, read_only=tool.read_only if tool else False
            )
        except UnknownToolError:
            raise UnknownToolError(self._unknown_tool_message(name)) from None
        return output, tool

    def _unknown_tool_message(self, tool: str) -> str:
        known = sorted(self._tools)
        return f"unknown tool {quote(tool)}; available tools: {', '.join(known) or 'none'}"

    def statuses(self) -> list[ProviderStatus]:
        """What /ready reports: the last known state of every enabled provider."""
        return [c.status() for c in self.clients.values()]
