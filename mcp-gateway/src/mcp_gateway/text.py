"""Bounds on every value the gateway echoes back (in errors, HTTP bodies and log lines).

Inputs come from clients and providers; a 1 MB symbol must not come back as a 1 MB tool error
(which would land in a model's context) or a 1 MB log line.
"""

from __future__ import annotations

from typing import Final

# A tool name, header value or other identifier quoted in a message.
NAME_LIMIT: Final = 120
# A provider's or the transport's own explanation (may quote the client's input).
MESSAGE_LIMIT: Final = 1000


def clip(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` when it has at most ``limit`` characters, else its start and how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def quote(value: str, limit: int = NAME_LIMIT) -> str:
    """``repr(value)`` for messages, bounded: ``'abc'`` or ``'abcd…' (12345 more characters)``."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value) - limit} more characters)"
