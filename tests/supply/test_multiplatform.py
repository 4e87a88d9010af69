"""A multi-platform index with real cosign and crane: signed as publish signs it (every platform
manifest signed and attested with its own SBOM and provenance, then the index), verified by the
module's own `verify_image`, and refused, naming the platform, when one platform manifest is
unsigned or the index tag is re-pushed.

The index lists the provider test image (linux/amd64) and the same image with an arm64 config
(tools.as_platform says why); everything else is the real tools against 127.0.0.1:5000.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from mcp_trader import cosign
from mcp_trader.cosign import KeyPolicy, VerificationError
from mcp_trader.verify import VerifiedIndex, pins_for_deploy, verify_image

from tests.deploy import images
from tests.supply import tools
from tests.supply.conftest import MULTI_TAG as TAG
from tests.supply.conftest import Index

pytestmark = pytest.mark.docker


def verify(runner: tools.HostRunner, image: str, key: tools.KeyPair) -> VerifiedIndex:
    verified = asyncio.run(verify_image(runner, image, KeyPolicy(str(key.public))))
    assert isinstance(verified, VerifiedIndex), verified
    return verified


def test_a_signed_index_verifies_per_platform_and_with_plain_cosign(
    runner: tools.HostRunner, signed_index: Index, key: tools.KeyPair
) -> None:
    verified = verify(runner, signed_index.index.reference, key)
    assert verified.digest == signed_index.index.digest
    assert [(p, v.digest) for p, v in verified.platforms] == [
        ("linux/amd64", signed_index.amd64.digest),
        ("linux/arm64", signed_index.arm64.digest),
    ]
    for _, platform in verified.platforms:
        assert platform.provenance.commit == tools.REVISION
        assert platform.sbom.counts.get("cargo", 0) > 0, platform.sbom
    report = verified.report()
    assert f"digest: {signed_index.index.digest} (index of linux/amd64, linux/arm64)" in report
    assert f"platform linux/arm64: {signed_index.arm64.digest}" in report
    # What the README tells a user: one platform's digest, then plain cosign on it.
    policy = KeyPolicy(str(key.public))
    arm64 = runner.ok(
        ["crane", "digest", "--platform", "linux/arm64", signed_index.index.reference]
    ).strip()
    assert arm64 == signed_index.arm64.digest
    pinned = f"{signed_index.index.repository}@{arm64}"
    runner.ok(cosign.verify_argv(pinned, policy))
    out = runner.ok(cosign.verify_attestation_argv(pinned, cosign.PROVENANCE_TYPE, policy))
    [statement] = cosign.parse_attestations(out, arm64, cosign.PROVENANCE_TYPE)
    assert statement["predicate"]["buildDefinition"]["externalParameters"]["platform"] == (
        "linux/arm64"
    )


def test_deploy_pins_the_index_digest_and_docker_pulls_the_host_platform(
    runner: tools.HostRunner, signed_index: Index, key: tools.KeyPair
) -> None:
    images_ = {"binance-provider": signed_index.index.reference}
    [pin] = asyncio.run(pins_for_deploy(runner, images_, KeyPolicy(str(key.public)))).values()
    assert (pin.value, pin.signature) == (f"{TAG}@{signed_index.index.digest}", "verified")
    # The server pulls TAG@<index digest> (compose.yml's image: form); Docker picks amd64.
    reference = f"{signed_index.index.repository}:{pin.value}"
    images.run(["docker", "pull", "--quiet", reference])
    try:
        inspected = json.loads(images.run(["docker", "image", "inspect", reference]).stdout)
        assert inspected[0]["Architecture"] == "amd64"
    finally:
        images.run(["docker", "image", "rm", "--no-prune", reference])


def test_an_unsigned_platform_manifest_is_refused_naming_the_platform(
    runner: tools.HostRunner, signed_index: Index, key: tools.KeyPair
) -> None:
    # A signed index whose arm64 manifest was never signed (nor attested).
    unsigned = tools.as_platform(runner, signed_index.amd64, "linux/arm64", f"{TAG}-unsigned")
    index = tools.push_index(runner, [signed_index.amd64, unsigned], f"{TAG}-half")
    runner.ok(cosign.sign_argv(index.pinned, cosign.KeySigner(str(key.private))))
    with pytest.raises(VerificationError) as err:
        verify(runner, index.reference, key)
    failures = str(err.value).splitlines()[1:]
    assert len(failures) == 1, failures
    assert failures[0].startswith(
        f"- linux/arm64 {unsigned.digest}: signature check failed for {unsigned.pinned}"
    )
    assert "no signatures found" in failures[0]


def test_an_index_tag_repushed_with_another_platform_manifest_is_refused(
    runner: tools.HostRunner, signed_index: Index, key: tools.KeyPair
) -> None:
    tag = f"{TAG}-tamper"
    runner.ok(["crane", "tag", signed_index.index.pinned, tag])
    genuine = f"{signed_index.index.repository}:{tag}"
    assert verify(runner, genuine, key).digest == signed_index.index.digest
    # Someone with push access swaps the arm64 image behind the tag.
    forged_arm64 = tools.as_platform(runner, signed_index.amd64, "linux/arm64", f"{tag}-arm64")
    forged = tools.push_index(runner, [signed_index.amd64, forged_arm64], tag)
    assert forged.digest != signed_index.index.digest
    with pytest.raises(VerificationError) as err:
        verify(runner, genuine, key)
    failures = str(err.value).splitlines()[1:]
    assert len(failures) == 2, failures
    assert failures[0].startswith(f"- index {forged.digest}: index signature check failed")
    assert failures[1].startswith(
        f"- linux/arm64 {forged_arm64.digest}: signature check failed for {forged_arm64.pinned}"
    )
    # The genuine index still verifies by digest: deploys pinned to it are unaffected.
    pinned = f"{signed_index.index.repository}@{signed_index.index.digest}"
    assert verify(runner, pinned, key).digest == signed_index.index.digest
