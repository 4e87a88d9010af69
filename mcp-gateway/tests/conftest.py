"""Fixtures: a fake provider and gateways wired to it (all real sockets on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mcp_gateway.config import ProviderConfig
from tests.support import FakeProvider, RunningGateway, start_gateway


@pytest.fixture
def provider() -> Iterator[FakeProvider]:
    fake = FakeProvider()
    fake.start()
    yield fake
    fake.close()


GatewayFactory = Callable[..., RunningGateway]


@pytest.fixture
def gateway_factory() -> Iterator[GatewayFactory]:
    """Start gateways with given providers/token; all are stopped after the test."""
    running: list[RunningGateway] = []

    def factory(
        providers: list[ProviderConfig],
        token: str | None = None,
        refresh_interval: float = 30,
        **settings: Any,
    ) -> RunningGateway:
        gw = start_gateway(providers, token=token, refresh_interval=refresh_interval, **settings)
        running.append(gw)
        return gw

    yield factory
    for gw in running:
        gw.stop()


@pytest.fixture
def gateway(provider: FakeProvider, gateway_factory: GatewayFactory) -> RunningGateway:
    """A gateway with the fake provider (timeout 2 s) and no token."""
    return gateway_factory(
        [ProviderConfig(name="fake", address=provider.address, timeout_seconds=2)]
    )
