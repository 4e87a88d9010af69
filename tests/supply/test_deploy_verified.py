"""The deploy path with real cosign, crane, Docker, Compose and sshd: what the module does before
and during `server ... deploy`, with the host twins of its containers.

Verification is the module's own `pins_for_deploy` with the host runner (tools.py: the argv the
tools container runs), the pins become the script's arguments through the module's own
`deploy.pinned` and `deploy.script_args`, and the run ships over the deploy suite's sshd exactly
as the module's SSH container does (tests/deploy/conftest.py). One server for all of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from mcp_trader import deploy
from mcp_trader.cosign import KeyPolicy, VerificationError
from mcp_trader.verify import pins_for_deploy

from tests.deploy import images as deploy_images
from tests.deploy.conftest import Server, Sshd, docker_ready, new_server, sshd  # noqa: F401
from tests.deploy.helpers import pinned
from tests.supply import tools
from tests.supply.conftest import MULTI_TAG, Index, Signed

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def verified_server(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd) -> Iterator[Server]:  # noqa: F811
    """A deploy directory whose IMAGE_PREFIX is where the signed test images are."""
    # The stack's proxy image comes from the deploy tests' build (pushed once per machine).
    deploy_images.push_proxy_image(deploy_images.ensure_base_image())
    srv = new_server(tmp_path_factory.mktemp("verified") / "mcp-trader", sshd)
    env = srv.env_file.read_text()
    srv.env_file.write_text(env.replace("IMAGE_PREFIX=", f"IMAGE_PREFIX={tools.PREFIX}\n#was=", 1))
    try:
        yield srv
    finally:
        srv.compose("down", "--remove-orphans", "--timeout", "1")


def images(signed: Signed) -> dict[str, str]:
    return {"binance-provider": signed.provider.reference, "mcp-gateway": signed.gateway.reference}


def deploy_pins(server: Server, pins: deploy.Pinned) -> tuple[int, str]:
    result = server.run("deploy", **pins)
    return result.returncode, result.output


def test_signed_images_deploy_by_digest_and_refusals_change_nothing(
    runner: tools.HostRunner,
    signed: Signed,
    key: tools.KeyPair,
    other_key: tools.KeyPair,
    contexts: tools.Contexts,
    verified_server: Server,
) -> None:
    server = verified_server
    policy = KeyPolicy(str(key.public))
    pins = deploy.pinned(asyncio.run(pins_for_deploy(runner, images(signed), policy)))
    code, output = deploy_pins(server, pins)
    assert code == 0, output
    # The server pulled and runs exactly the verified digests, pinned as TAG@sha256:...
    p_pin, g_pin = f"{tools.TAG}@{signed.provider.digest}", f"{tools.TAG}@{signed.gateway.digest}"
    assert pinned(server) == (p_pin, g_pin)
    running = {s: c["image"] for s, c in server.containers().items()}
    assert running["binance-provider"].endswith(f"/binance-provider:{p_pin}")
    entry = server.log()[-1]
    assert entry["signature"] == "verified"
    assert entry["digests"] == {
        "provider": signed.provider.digest,
        "gateway": signed.gateway.digest,
    }
    assert entry["commits"] == {"provider": tools.REVISION, "gateway": tools.REVISION}
    status = server.run("status")
    assert f"signature verified, verified commit {tools.REVISION}" in status.stdout, status.output
    env_before, log_before = server.env_file.read_bytes(), server.log_file.read_bytes()

    # A wrong key, an unsigned image, and the tag re-pushed with other content: refused before
    # any connection, so .env, the log and what runs stay as they were.
    unsigned = tools.push(runner, "mcp-gateway", contexts.gateway, "gateway.Dockerfile", "unsigned")
    cases = [
        (images(signed), KeyPolicy(str(other_key.public)), "signature check failed"),
        ({**images(signed), "mcp-gateway": unsigned.reference}, policy, "signature check failed"),
    ]
    for asked, trust, message in cases:
        with pytest.raises(VerificationError, match=message):
            asyncio.run(pins_for_deploy(runner, asked, trust))
    tools.push(runner, "binance-provider", contexts.provider, "provider.Dockerfile", tools.TAG)
    try:
        with pytest.raises(VerificationError, match="signature check failed"):
            asyncio.run(pins_for_deploy(runner, images(signed), policy))
        assert server.env_file.read_bytes() == env_before
        assert server.log_file.read_bytes() == log_before
        assert {s: c["image"] for s, c in server.containers().items()} == running

        # --allow-unsigned: the re-pushed tag deploys, still by digest; the log says unsigned.
        pins = deploy.pinned(asyncio.run(pins_for_deploy(runner, images(signed), None)))
    finally:
        # The other supply tests verify the signed image by this tag: point it back.
        runner.ok(["crane", "tag", signed.provider.pinned, tools.TAG])
    code, output = deploy_pins(server, pins)
    assert code == 0, output
    entry = server.log()[-1]
    assert entry["signature"] == "unsigned"
    assert entry["commits"] is None
    assert entry["digests"]["provider"] != signed.provider.digest
    assert pinned(server)[0] == pins["provider_tag"]


def test_rollback_to_a_verified_tag_runs_the_index_digest_and_refusals_change_nothing(
    runner: tools.HostRunner,
    signed: Signed,
    signed_index: Index,
    key: tools.KeyPair,
    other_key: tools.KeyPair,
    verified_server: Server,
) -> None:
    """`rollback --to T` with the real tools: the provider's T is a two-platform index, the
    gateway's a single image; both verified, pinned by digest, and what runs is the host's
    platform of the index. Run after the test above, it moves the server off that test's
    --allow-unsigned deploy."""
    server = verified_server
    runner.ok(["crane", "tag", signed.gateway.pinned, MULTI_TAG])
    asked = {
        "binance-provider": signed_index.index.reference,
        "mcp-gateway": f"{signed.gateway.repository}:{MULTI_TAG}",
    }
    env_before, log_before = server.env_file.read_bytes(), server.log_file.read_bytes()
    with pytest.raises(VerificationError, match="index signature check failed"):
        asyncio.run(pins_for_deploy(runner, asked, KeyPolicy(str(other_key.public))))
    assert server.env_file.read_bytes() == env_before
    assert server.log_file.read_bytes() == log_before

    pins = deploy.pinned(asyncio.run(pins_for_deploy(runner, asked, KeyPolicy(str(key.public)))))
    p_pin = f"{MULTI_TAG}@{signed_index.index.digest}"
    g_pin = f"{MULTI_TAG}@{signed.gateway.digest}"
    assert (pins["provider_tag"], pins["gateway_tag"]) == (p_pin, g_pin)
    result = server.run("rollback", **pins)
    assert result.returncode == 0, result.output
    assert pinned(server) == (p_pin, g_pin)
    running = {s: c["image"] for s, c in server.containers().items()}
    assert running["binance-provider"].endswith(f"/binance-provider:{p_pin}")
    # Docker took the amd64 manifest of the index (this host's platform).
    inspected = deploy_images.run(
        ["docker", "image", "inspect", "--format", "{{.Architecture}}", running["binance-provider"]]
    )
    assert inspected.stdout.strip() == "amd64"
    entry = server.log()[-1]
    assert (entry["action"], entry["result"], entry["signature"]) == (
        "rollback-to",
        "ok",
        "verified",
    )
    assert entry["digests"] == {
        "provider": signed_index.index.digest,
        "gateway": signed.gateway.digest,
    }
    assert entry["commits"] == {"provider": tools.REVISION, "gateway": tools.REVISION}
