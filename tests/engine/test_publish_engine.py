"""`publish_images` against a real Dagger engine and a real registry (the `registry` image run as a
Dagger service), so the addresses, digests and errors are the engine's own, not the double's.

Skipped with the reason when no engine is reachable: inside a Dagger session
(DAGGER_SESSION_PORT) or with the dagger CLI plus a working container runtime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator

import dagger
import pytest
from dagger import dag
from mcp_trader.publish import PublishError, RetryPolicy, publish_images

pytestmark = pytest.mark.engine

SHA = "0123456789abcdef0123456789abcdef01234567"
CREATED = "2024-05-01T12:00:00Z"
# Pinned versions (no moving tags): a registry to push to, and a tiny base per image.
REGISTRY_IMAGE = "registry:2.8.3"
BASE_IMAGE = "busybox:1.36.1"
TOKEN_ENV = "MCP_TRADER_TEST_REGISTRY_TOKEN"


def engine_unavailable() -> str | None:
    """Why no real engine can be used here, or None when one can."""
    if os.environ.get("DAGGER_SESSION_PORT"):
        return None
    if shutil.which("dagger") is None:
        return "no Dagger engine: DAGGER_SESSION_PORT is unset and no dagger CLI is installed"
    for runtime in ("docker", "podman", "nerdctl"):
        if shutil.which(runtime) is None:
            continue
        try:
            probe = subprocess.run([runtime, "info"], capture_output=True, timeout=20, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return None
    return "no Dagger engine: the dagger CLI is installed but no container runtime answers"


@pytest.fixture
async def real_engine(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    reason = engine_unavailable()
    if reason is not None:
        pytest.skip(reason)
    monkeypatch.setenv(TOKEN_ENV, "not-checked-by-this-registry")
    async with dagger.connection(dagger.Config(log_output=sys.stderr)):
        yield


def registry() -> dagger.Service:
    return dag.container().from_(REGISTRY_IMAGE).with_exposed_port(5000).as_service()


def tiny_image(service: str, platform: dagger.Platform) -> dagger.Container:
    # Content differs per service, so the two images must get different digests.
    return (
        dag.container(platform=platform)
        .from_(BASE_IMAGE)
        .with_new_file("/etc/mcp-trader-service", f"{service}\n")
    )


async def publish(
    ref: str, platforms: list[str], registry_host: str = "localhost:5000", **kw: object
) -> list[str]:
    return await publish_images(
        tiny_image,
        repository="Acme/MCP-Trader",
        username="tester",
        password=dag.secret(f"env://{TOKEN_ENV}"),
        sha=SHA,
        ref=ref,
        registry=registry_host,
        platforms=platforms,
        created=CREATED,
        **kw,  # type: ignore[arg-type]
    )


def split(reference: str) -> tuple[str, str, str]:
    name_tag, digest = reference.split("@")
    name, tag = name_tag.rsplit(":", 1)
    return name, tag, digest


@pytest.mark.parametrize("platforms", [["linux/amd64"], ["linux/amd64", "linux/arm64"]])
async def test_publishes_every_tag_with_one_digest_per_image(
    real_engine: None, platforms: list[str]
) -> None:
    pushed = await publish("refs/heads/main", platforms, registry_service=registry())
    prefix = "localhost:5000/acme/mcp-trader"
    assert [r.split("@")[0] for r in pushed] == [
        f"{prefix}/binance-provider:sha-0123456",
        f"{prefix}/mcp-gateway:sha-0123456",
        f"{prefix}/binance-provider:main",
        f"{prefix}/mcp-gateway:main",
        f"{prefix}/binance-provider:latest",
        f"{prefix}/mcp-gateway:latest",
    ]
    digests: dict[str, set[str]] = {}
    for reference in pushed:
        name, _, digest = split(reference)
        assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
        digests.setdefault(name, set()).add(digest)
    assert all(len(d) == 1 for d in digests.values())
    assert len(set.union(*digests.values())) == 2  # two different images


async def test_an_unreachable_registry_stops_at_the_first_push(real_engine: None) -> None:
    # Nothing listens on port 1: the connection is refused, which is not worth a retry.
    with pytest.raises(PublishError) as err:
        await publish("refs/heads/main", ["linux/amd64"], "localhost:1", retry=RetryPolicy())
    message = str(err.value)
    assert "localhost:1/acme/mcp-trader/binance-provider:sha-0123456 failed" in message
    assert "not retried" in message
    assert "no moving tag" in message
