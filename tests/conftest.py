"""Shared fixtures: the engine double every module test runs against."""

from collections.abc import AsyncIterator

import pytest
from dagger import dag
from mcp_trader.main import McpTrader

from tests.enginedouble import EngineDouble, sdk_connection


@pytest.fixture
async def engine(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EngineDouble]:
    """A running engine double with the SDK's global client (`dagger.dag`) connected to it.

    The test's environment carries the double's session port and token, exactly as a module
    process started by the engine would, so module functions run unmodified.
    """
    with EngineDouble() as double:
        for name, value in double.env.items():
            monkeypatch.setenv(name, value)
        async with sdk_connection(double):
            yield double


@pytest.fixture
def module() -> McpTrader:
    """The main object over an empty source directory (a recognizable object in the double).

    `@object_type` makes McpTrader a dataclass at run time, which mypy cannot see.
    """
    return McpTrader(source=dag.directory())  # type: ignore[call-arg]
