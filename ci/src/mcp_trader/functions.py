"""Decorators shared by the module's objects (main.py's McpTrader, server.py's Server)."""

from collections.abc import Callable
from typing import Any, TypeVar

from dagger import function

F = TypeVar("F", bound=Callable[..., Any])


def uncached(fn: F) -> F:
    """`@function(cache="never")`, for functions with side effects (publish, deploy, ci...).

    dagger-io 0.21.11's typing overloads of `function` omit its `cache` parameter, which the
    implementation accepts; this keeps the one type-ignore in one place.
    """
    return function(fn, cache="never")  # type: ignore[call-overload, no-any-return]
