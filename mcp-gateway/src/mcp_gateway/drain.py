"""SIGTERM without a lost request: drain, then stop accepting, then finish what is in flight.

For ``GATEWAY_DRAIN_SECONDS`` after SIGTERM the gateway serves every request as before, but
``/health`` and ``/ready`` answer 503 ``{"status": "draining"}`` (a proxy's health check takes
the replica out of rotation) and every response carries ``Connection: close`` (the proxy keeps
no idle connection to a replica that is about to close its listener). Then the open GET (SSE)
streams and ``subscriptions/listen`` streams are ended, so their clients reconnect through the
proxy to another replica, and uvicorn's graceful shutdown stops accepting and waits up to
``GATEWAY_SHUTDOWN_GRACE_SECONDS`` for the requests in flight (tool calls included). A second
SIGTERM, or SIGINT (Ctrl-C), skips what is left of the drain.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)


@dataclass
class Drain:
    """The draining flag the app reads, and what must happen when the drain ends."""

    draining: bool = False
    on_finish: list[Callable[[], object]] = field(default_factory=list)
    _finished: bool = False

    def begin(self) -> None:
        # Called from a signal handler: no logging, no locks, just the flag.
        self.draining = True

    def finish(self) -> None:
        """End of the drain window, just before the server stops accepting (runs once)."""
        if self._finished:
            return
        self._finished = True
        for callback in self.on_finish:
            try:
                callback()
            except Exception:  # closing one kind of stream must not keep the others open
                logger.exception("drain: a finishing step failed")


class ConnectionCloseWhileDraining:
    """While draining, every response carries ``Connection: close`` (no idle keep-alive left)."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Message) -> None:
            if message["type"] == "http.response.start" and self.drain.draining:
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, send_closing)


class DrainingServer(uvicorn.Server):
    """uvicorn's server with the drain phase in front of its graceful shutdown."""

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_seconds: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._drain_seconds = drain_seconds
        self._drain_until: float | None = None
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first_term = sig == signal.SIGTERM and self._drain_until is None and not self.should_exit
        if first_term and self._drain_seconds > 0:
            self._drain.begin()
            self._drain_until = time.monotonic() + self._drain_seconds
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_until is not None and not self._announced:
            self._announced = True
            logger.info(
                "SIGTERM: draining for %g s (/health and /ready answer 503, "
                "responses carry Connection: close), then shutting down",
                self._drain_seconds,
            )
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._drain.begin()
        self._drain.finish()
        logger.info("stopping: no new connections; waiting for requests in flight")
        await super().shutdown(sockets)
