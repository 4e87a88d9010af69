"""Shared fixtures: the engine double every module test runs against, and the registration."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from dagger import dag
from mcp_trader.main import McpTrader

from tests.enginedouble import EngineDouble, sdk_connection
from tests.registration import Function, register


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


@pytest.fixture(scope="session")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The module as the SDK registers it (once per session): {"module", "objects"}."""
    return register(tmp_path_factory.mktemp("register") / "module.json")


@pytest.fixture(scope="session")
def registered_functions(registered: dict[str, Any]) -> dict[str, Function]:
    """The main object's registered functions, by Python name."""
    functions: dict[str, Function] = registered["objects"]["McpTrader"]["functions"]
    return functions
