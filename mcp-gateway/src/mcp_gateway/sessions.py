"""Streamable-HTTP sessions that survive a deploy: signed session ids any replica accepts.

A handshake-era client (2025-11-25 and older: the TypeScript SDK, the Inspector, the Python
SDK's ``ClientSession``) keeps one ``Mcp-Session-Id`` for its whole life. Behind a proxy that
moves it to a new gateway replica during a deploy, an id only the old replica knew would answer
404 and the client would have to start over. So ids are ``<nonce>.<HMAC of the nonce>`` under
``MCP_SESSION_SECRET``: a replica that receives an id it did not create but can verify *adopts*
the session (a fresh server-side session, already initialized, speaking the version in the
request's ``MCP-Protocol-Version`` header). That loses nothing the gateway uses: its sessions
carry no state beyond the negotiated version (no subscriptions, sampling, elicitation or log
level). An id that does not verify, or that this replica saw ended (DELETE), answers 404.

Idle sessions are reaped after ``MCP_SESSION_IDLE_SECONDS`` (the SDK's idle timer: an open GET
stream or a request in flight keeps a session alive); a reaped id comes back by adoption on its
next request, so the timer only bounds memory. At most ``MCP_MAX_SESSIONS`` live per replica;
past that a new session gets 503.

Everything else is the SDK's own: 2026-07-28 requests (single exchange, no session) and the
``stateless`` mode go to its ``StreamableHTTPSessionManager``; each session here is its
``StreamableHTTPServerTransport`` driven by its ``serve_connection``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import anyio.abc
from mcp.server import Server
from mcp.server.connection import Connection
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_connection
from mcp.server.streamable_http import (
    GET_STREAM_KEY,
    MCP_SESSION_ID_HEADER,
    StreamableHTTPServerTransport,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE, RequestBodyLimitMiddleware
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.shared.transport_context import TransportContext
from mcp_types import DEFAULT_NEGOTIATED_VERSION, INTERNAL_ERROR, INVALID_REQUEST
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from mcp_gateway.notify import ToolListNotifier

logger = logging.getLogger(__name__)

# Ids of sessions ended here (DELETE) that must keep answering 404 rather than be adopted.
_ENDED_MEMORY: Final = 10_000
# How long a request waits for its session's server task to start (normally microseconds).
_SESSION_START_SECONDS: Final = 10.0
# How long a newly opened GET stream may take to be registered by the SDK transport.
_GET_STREAM_WAIT_SECONDS: Final = 1.0


class SessionIds:
    """Mints and verifies ``<nonce>.<signature>`` session ids under one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _sign(self, nonce: str) -> str:
        digest = hmac.new(self._secret, b"mcp-gateway session " + nonce.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def new(self) -> str:
        nonce = secrets.token_hex(16)
        return f"{nonce}.{self._sign(nonce)}"

    def valid(self, session_id: str) -> bool:
        nonce, dot, signature = session_id.partition(".")
        if not dot or len(nonce) != 32 or len(signature) != 32:
            return False
        return hmac.compare_digest(signature, self._sign(nonce))


def _jsonrpc_error(message: str, status: int, code: int = INVALID_REQUEST) -> Response:
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status)


class _Session:
    """One live session on this replica: its transport and server-side connection."""

    def __init__(
        self,
        session_id: str,
        transport: StreamableHTTPServerTransport,
        notifier: ToolListNotifier,
        adopted: bool,
    ) -> None:
        self.id = session_id
        self.transport = transport
        self.connection: Connection | None = None
        # Set once the session's server task runs: a request that finds the session registered
        # (say the client's GET reconnect racing its next POST) waits for it.
        self.started = anyio.Event()
        self._notifier = notifier
        # The notifier's generation this session's client is known to have seen; an adopted
        # session's client may have missed a change (-1: catch_up() tells it).
        self.seen = -1 if adopted else notifier.generation

    def has_get_stream(self) -> bool:
        # The SDK transport's registry of open streams (pinned SDK version; tests cover it):
        # a notification with no GET stream open is dropped, not queued.
        streams: dict[Any, Any] = self.transport._request_streams
        return GET_STREAM_KEY in streams

    async def send_tool_list_changed(self) -> None:
        if self.connection is not None and self.has_get_stream():
            self.seen = self._notifier.generation
            await self.connection.send_tool_list_changed()

    async def catch_up(self) -> None:
        """After a GET stream opened: repeat a change notification the client may have missed."""
        with anyio.move_on_after(_GET_STREAM_WAIT_SECONDS):
            while not self.has_get_stream():  # noqa: ASYNC110 - the SDK offers no event for it
                await anyio.sleep(0.01)
        if self.connection is not None and self.seen != self._notifier.generation:
            self.seen = self._notifier.generation
            await self.connection.send_tool_list_changed()


class GatewaySessionManager:
    """The ``/mcp`` endpoint: stateful sessions with adoptable ids, or the SDK's stateless mode."""

    def __init__(
        self,
        server: Server[Any],
        notifier: ToolListNotifier,
        *,
        init_options: InitializationOptions,
        secret: bytes,
        stateless: bool = False,
        idle_timeout: float | None = 300.0,
        max_sessions: int = 1000,
    ) -> None:
        self._server = server
        self._notifier = notifier
        self._init_options = init_options
        self._ids = SessionIds(secret)
        self.stateless = stateless
        self._idle_timeout = idle_timeout
        self._max_sessions = max_sessions
        # The SDK serves what needs no session state: 2026-07-28 requests, and stateless mode.
        self._sdk = StreamableHTTPSessionManager(app=server, stateless=True)
        self._stateful = RequestBodyLimitMiddleware(
            self._handle_stateful, DEFAULT_MAX_REQUEST_BODY_SIZE
        )
        self._sessions: dict[str, _Session] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._lifespan_state: Any = None

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Serve sessions for the lifetime of the app (enter it in the app's lifespan)."""
        async with (
            self._sdk.run(),
            self._server.lifespan(self._server) as state,
            anyio.create_task_group() as group,
        ):
            self._lifespan_state = state
            self._task_group = group
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                self._task_group = None

    def close_get_streams(self) -> int:
        """End every open GET stream (clients reconnect, through the proxy, to another replica)."""
        closed = 0
        for session in list(self._sessions.values()):
            if session.has_get_stream():
                session.transport.close_standalone_sse_stream()
                closed += 1
        return closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        version = headers.get(MCP_PROTOCOL_VERSION_HEADER)
        modern = version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS
        if modern or self.stateless:
            if self.stateless and not modern and scope["method"] in ("GET", "DELETE"):
                # No session, so no standalone stream to open or session to end.
                response = Response(
                    status_code=405, headers={"Allow": "POST"}, content="stateless server"
                )
                await response(scope, receive, send)
                return
            await self._sdk.handle_request(scope, receive, send)
            return
        await self._stateful(scope, receive, send)

    async def _handle_stateful(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        if session_id is None:
            if scope["method"] != "POST":
                await _jsonrpc_error("Bad Request: Missing session ID", 400)(scope, receive, send)
                return
            await self._open(scope, receive, send)
            return
        session = self._sessions.get(session_id)
        if session is None:
            if session_id in self._ended or not self._ids.valid(session_id):
                logger.info("unknown or ended session id %s: 404", session_id[:64])
                await _jsonrpc_error("Session not found", 404)(scope, receive, send)
                return
            version = headers.get(MCP_PROTOCOL_VERSION_HEADER) or DEFAULT_NEGOTIATED_VERSION
            session = await self._start(session_id, adopted_version=version)
            if session is None:
                await self._too_many(scope, receive, send)
                return
            logger.info("adopted session %s (protocol %s)", session_id[:16], version)
        await self._serve(session, scope, receive, send)
        if session.transport.is_terminated:
            # The client ended the session (DELETE): forget it now, and never adopt it again.
            self._ended[session_id] = None
            while len(self._ended) > _ENDED_MEMORY:
                self._ended.popitem(last=False)
            await self._discard(session)

    async def _too_many(self, scope: Scope, receive: Receive, send: Send) -> None:
        logger.warning("refusing a session: %d sessions are open", self._max_sessions)
        response = _jsonrpc_error(
            f"Too many open sessions (MCP_MAX_SESSIONS={self._max_sessions})", 503, INTERNAL_ERROR
        )
        await response(scope, receive, send)

    async def _open(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request without a session id: only an initialize request opens a session."""
        session = await self._start(self._ids.new(), adopted_version=None)
        if session is None:
            await self._too_many(scope, receive, send)
            return
        status: int | None = None

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await session.transport.handle_request(scope, receive, watch)
        finally:
            if status is None or status >= 400:
                # Refused, failed or cancelled: nothing was established.
                await self._discard(session)

    async def _serve(self, session: _Session, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.fail_after(_SESSION_START_SECONDS):
            await session.started.wait()
        if scope["method"] != "GET":
            await session.transport.handle_request(scope, receive, send)
            return
        group = self._task_group

        async def watch(message: Message) -> None:
            await send(message)
            opened = message["type"] == "http.response.start" and message["status"] == 200
            if opened and group is not None:
                group.start_soon(session.catch_up)

        await session.transport.handle_request(scope, receive, watch)

    async def _start(self, session_id: str, adopted_version: str | None) -> _Session | None:
        """Create, register and start a session; None when the session cap is reached."""
        if len(self._sessions) >= self._max_sessions:
            return None
        group = self._task_group
        if group is None:
            raise RuntimeError("GatewaySessionManager.run() is not active")
        # A tool call's answer is one JSON body, not an SSE stream: the gateway sends nothing
        # tied to a request before its response (no progress, logging, sampling or
        # elicitation), and tool-list changes go on the session's GET stream, which stays SSE.
        # That saves the SSE framing and two of the three socket writes per call.
        transport = StreamableHTTPServerTransport(
            mcp_session_id=session_id,
            idle_timeout=self._idle_timeout,
            is_json_response_enabled=True,
        )
        session = _Session(session_id, transport, self._notifier, adopted_version is not None)
        self._sessions[session_id] = session
        self._notifier.register(session_id, session)
        await group.start(self._run_session, session, adopted_version)
        return session

    async def _run_session(
        self,
        session: _Session,
        adopted_version: str | None,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        transport = session.transport
        try:
            async with transport.connect() as (read_stream, write_stream):
                dispatcher: JSONRPCDispatcher[TransportContext] = JSONRPCDispatcher(
                    read_stream,
                    write_stream,
                    # As the SDK does: a client may pipeline initialize with its next request.
                    inline_methods=frozenset({"initialize"}),
                )
                connection = Connection.for_loop(
                    dispatcher, session_id=session.id, protocol_version_hint=adopted_version
                )
                if adopted_version is not None:
                    # Its client initialized it on another replica (or before it went idle).
                    connection.initialized.set()
                session.connection = connection
                session.started.set()
                task_status.started()
                # The transport cancels its idle scope after idle_timeout without a request.
                with transport.idle_scope or anyio.CancelScope() as idle:
                    await serve_connection(
                        self._server,
                        dispatcher,
                        connection=connection,
                        lifespan_state=self._lifespan_state,
                        init_options=self._init_options,
                    )
                if idle.cancelled_caught:
                    logger.info(
                        "session %s idle for %s s: closed", session.id[:16], self._idle_timeout
                    )
        except Exception:
            logger.exception("session %s crashed", session.id[:16])
        finally:
            await self._discard(session)

    async def _discard(self, session: _Session) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]
            self._notifier.unregister(session.id)
        if not session.transport.is_terminated:
            with anyio.CancelScope(shield=True):
                await session.transport.terminate()
