"""Fixtures of the supply-chain tests: real cosign/syft/crane on the host, the local registry,
key pairs made by cosign, and test images built from the real binaries (tools.py)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import _why_docker_unusable
from tests.supply import tools


@pytest.fixture(scope="session")
def supply_ready() -> None:
    """The tools, Docker and the registry, or a skip; a failure in CI (never a silent skip)."""
    why = tools.why_unusable() or _why_docker_unusable()
    if why is None:
        return
    message = f"supply-chain tests need cosign, syft, crane, cargo-auditable and Docker: {why}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("supply-home")


@pytest.fixture(scope="session")
def runner(home: Path, supply_ready: None) -> tools.HostRunner:
    return tools.HostRunner(home)


@pytest.fixture(scope="session")
def key(home: Path, supply_ready: None) -> tools.KeyPair:
    return tools.generate_key_pair(home / "key", "correct horse battery staple")


@pytest.fixture(scope="session")
def other_key(home: Path, supply_ready: None) -> tools.KeyPair:
    return tools.generate_key_pair(home / "other-key", "another password")


@dataclass(frozen=True)
class Signed:
    """Both services, pushed, signed and attested with `key`."""

    provider: tools.Pushed
    gateway: tools.Pushed
    base: str


@pytest.fixture(scope="session")
def contexts(supply_ready: None) -> Iterator[tools.Contexts]:
    with tempfile.TemporaryDirectory(prefix="mcp-trader-supply-") as tmp:
        yield tools.build_contexts(Path(tmp))


@pytest.fixture(scope="session")
def signed(
    runner: tools.HostRunner, key: tools.KeyPair, contexts: tools.Contexts, home: Path
) -> Signed:
    base = tools.base_image(runner)
    provider = tools.push(
        runner, "binance-provider", contexts.provider, "provider.Dockerfile", tools.TAG
    )
    gateway = tools.push(runner, "mcp-gateway", contexts.gateway, "gateway.Dockerfile", tools.TAG)
    for image in (provider, gateway):
        files = {
            "provenance": tools.provenance_file(image, base, home / f"{image.service}.prov.json"),
            "sbom": tools.sbom_file(runner, image, home / f"{image.service}.spdx.json"),
        }
        tools.sign_and_attest(runner, image, key, files)
    return Signed(provider, gateway, base)


#: The tag of the two-platform provider index (test_multiplatform.py, test_deploy_verified.py).
MULTI_TAG = "multi-platform"


@dataclass(frozen=True)
class Index:
    """A provider index of two platform manifests, signed and attested as publish does it."""

    index: tools.Pushed
    amd64: tools.Pushed
    arm64: tools.Pushed


@pytest.fixture(scope="session")
def signed_index(
    runner: tools.HostRunner, contexts: tools.Contexts, key: tools.KeyPair, home: Path
) -> Index:
    amd64 = tools.push(
        runner, "binance-provider", contexts.provider, "provider.Dockerfile", f"{MULTI_TAG}-amd64"
    )
    arm64 = tools.as_platform(runner, amd64, "linux/arm64", f"{MULTI_TAG}-arm64")
    index = tools.push_index(runner, [amd64, arm64], MULTI_TAG)
    platforms = {"linux/amd64": amd64, "linux/arm64": arm64}
    tools.sign_multi_platform(runner, index, platforms, key, tools.base_image(runner), home)
    return Index(index, amd64, arm64)
