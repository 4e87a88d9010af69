"""``notifications/tools/list_changed``: telling every connected client that the tool list moved.

Two deliveries, one per protocol era:

- handshake-era sessions (2025-11-25 and older: the TypeScript SDK, the Inspector, the Python
  SDK's ``ClientSession``) get the notification on their connection's standalone channel (the
  streamable-HTTP GET stream, or stdio);
- 2026-07-28 clients get it on the ``subscriptions/listen`` streams they opened, through the
  subscription bus.

A notification sent while a session has no GET stream open is lost (the SDK's transport drops
it), so the notifier counts changes: a session that opens its GET stream after a change it may
have missed is told again (see :meth:`ToolListNotifier.generation`).
"""

from __future__ import annotations

import logging
from typing import Protocol

from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged

logger = logging.getLogger(__name__)


class ListChangedTarget(Protocol):
    """A connection (or the session of a stdio connection) that can carry the notification."""

    async def send_tool_list_changed(self) -> None: ...


class ToolListNotifier:
    """Fans one tools-changed event out to every registered connection and the listen bus."""

    def __init__(self) -> None:
        self.bus = InMemorySubscriptionBus()
        # The server's subscriptions/listen handler: 2026-07-28 clients' streams off the bus.
        self.listen = ListenHandler(self.bus)
        self._targets: dict[str, ListChangedTarget] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        """How many times the tool list changed since start-up."""
        return self._generation

    def register(self, key: str, target: ListChangedTarget) -> None:
        self._targets[key] = target

    def unregister(self, key: str) -> None:
        self._targets.pop(key, None)

    async def tools_changed(self) -> None:
        self._generation += 1
        targets = list(self._targets.items())
        logger.info("tool list changed: notifying %d sessions", len(targets))
        for key, target in targets:
            try:
                await target.send_tool_list_changed()
            except Exception:  # best effort: one broken session must not starve the others
                logger.debug("could not notify session %s", key[:16], exc_info=True)
        await self.bus.publish(ToolsListChanged())
