"""Fixtures: a fake provider and gateways wired to it (all real sockets on 127.0.0.1)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_gateway.config import ProviderConfig
from tests.fake_binance import FakeBinance
from tests.support import FakeProvider, RunningGateway, start_gateway

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "providers" / "binance-rs" / "Cargo.toml"
BINARY = REPO / "providers" / "binance-rs" / "target" / "debug" / "binance-provider"


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


@pytest.fixture(scope="session")
def provider_binary() -> Path:
    """The provider binary: ``$BINANCE_PROVIDER_BIN`` when set, else built with cargo.

    cargo is incremental (``make test`` has built it in test-provider already). Any failure
    fails the tests: they never skip.
    """
    prebuilt = os.environ.get("BINANCE_PROVIDER_BIN")
    if prebuilt:
        path = Path(prebuilt)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"BINANCE_PROVIDER_BIN={prebuilt!r} is not an executable file")
        return path
    try:
        done = subprocess.run(
            ["cargo", "build", "--locked", "--manifest-path", str(MANIFEST)],
            capture_output=True,
            text=True,
            timeout=1500,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"cannot build binance-provider with cargo: {exc}")
    if done.returncode != 0:
        pytest.fail(f"cargo build of {MANIFEST} failed:\n{done.stderr[-4000:]}")
    if not BINARY.is_file():
        pytest.fail(f"cargo build succeeded but {BINARY} does not exist")
    return BINARY


@pytest.fixture
def fake_binance() -> Iterator[FakeBinance]:
    fake = FakeBinance()
    fake.start()
    yield fake
    fake.stop()
