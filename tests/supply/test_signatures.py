"""Real cosign against the local registry: sign, attest, verify; and every refusal.

The images are built from the real binaries (tools.py) and pushed to 127.0.0.1:5000; signing
uses a key pair cosign generated, offline (no transparency log). Verification is the module's
own `verify_image` with the host runner: the argv the module runs in its tools container.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from mcp_trader import cosign, provenance
from mcp_trader.cosign import KeyPolicy, VerificationError
from mcp_trader.verify import Verified, verify_image

from tests.supply import tools
from tests.supply.conftest import Signed

pytestmark = pytest.mark.docker


def verify(runner: tools.HostRunner, image: str, key: tools.KeyPair, **kwargs: str) -> Verified:
    verified = asyncio.run(verify_image(runner, image, KeyPolicy(str(key.public)), **kwargs))
    assert isinstance(verified, Verified), verified  # these are single-platform images
    return verified


def test_signed_images_verify_by_tag_and_report_what_was_checked(
    runner: tools.HostRunner, signed: Signed, key: tools.KeyPair
) -> None:
    for image, ecosystems in (
        (signed.provider, ("deb", "cargo")),
        (signed.gateway, ("deb", "pypi")),
    ):
        verified = verify(runner, image.reference, key, expected_repository=tools.SOURCE.repository)
        assert verified.digest == image.digest
        assert verified.provenance.commit == tools.REVISION
        assert verified.provenance.builder == "local"
        assert verified.provenance.base_images == (f"bookworm-python3: {signed.base}",)
        for ecosystem in ecosystems:
            assert verified.sbom.counts.get(ecosystem, 0) > 0, verified.sbom
        report = verified.report()
        assert f"digest: {image.digest}" in report
        assert f"signer: key {key.public}" in report
        assert f"source: {tools.SOURCE.repository} refs/heads/main @ {tools.REVISION}" in report
        assert "builder: local (local:tests@mcp-trader)" in report
        assert f"sbom: {image.repository}: " in report


def test_pinned_digest_verifies_and_a_digest_the_repository_lacks_is_refused(
    runner: tools.HostRunner, signed: Signed, key: tools.KeyPair
) -> None:
    assert verify(runner, signed.provider.pinned, key).digest == signed.provider.digest
    # TAG@DIGEST means the digest (what Compose pulls); the gateway's is not in this repository.
    wrong = f"{signed.provider.reference}@{signed.gateway.digest}"
    with pytest.raises(VerificationError, match=r"cannot resolve .* MANIFEST_UNKNOWN"):
        verify(runner, wrong, key)


def test_wrong_key_is_refused(
    runner: tools.HostRunner, signed: Signed, other_key: tools.KeyPair
) -> None:
    with pytest.raises(VerificationError) as err:
        verify(runner, signed.provider.reference, other_key)
    message = str(err.value)
    assert message.startswith(f"signature check failed for {signed.provider.pinned}")
    assert f"signed by the key {other_key.public}" in message
    assert "no matching signatures" in message


def test_unsigned_image_is_refused(
    runner: tools.HostRunner, contexts: tools.Contexts, key: tools.KeyPair
) -> None:
    unsigned = tools.push(
        runner, "binance-provider", contexts.provider, "provider.Dockerfile", "unsigned"
    )
    with pytest.raises(VerificationError) as err:
        verify(runner, unsigned.reference, key)
    assert str(err.value).startswith(f"signature check failed for {unsigned.pinned}")
    assert "no signatures found" in str(err.value)


def test_tampered_image_repushed_under_the_signed_tag_is_refused(
    runner: tools.HostRunner,
    contexts: tools.Contexts,
    key: tools.KeyPair,
    home: Path,
    signed: Signed,
) -> None:
    tag = "tamper-sha-5a5a5a5"
    genuine = tools.push(runner, "mcp-gateway", contexts.gateway, "gateway.Dockerfile", tag)
    files = {
        "provenance": tools.provenance_file(genuine, signed.base, home / "tamper.prov.json"),
        "sbom": tools.sbom_file(runner, genuine, home / "tamper.spdx.json"),
    }
    tools.sign_and_attest(runner, genuine, key, files)
    assert verify(runner, genuine.reference, key).digest == genuine.digest
    # Someone with push access replaces the content behind the tag.
    forged = tools.push(runner, "mcp-gateway", contexts.gateway, "gateway.Dockerfile", tag)
    assert forged.digest != genuine.digest
    with pytest.raises(VerificationError) as err:
        verify(runner, genuine.reference, key)
    assert str(err.value).startswith(f"signature check failed for {forged.pinned}")
    # The genuine digest still verifies: deploys pinned to it are unaffected.
    assert verify(runner, genuine.pinned, key).digest == genuine.digest


def test_signed_image_without_attestations_is_refused(
    runner: tools.HostRunner, contexts: tools.Contexts, key: tools.KeyPair
) -> None:
    image = tools.push(
        runner, "binance-provider", contexts.provider, "provider.Dockerfile", "sig-only"
    )
    runner.env["COSIGN_PASSWORD"] = key.password
    runner.ok(cosign.sign_argv(image.pinned, cosign.KeySigner(str(key.private))))
    with pytest.raises(VerificationError) as err:
        verify(runner, image.reference, key)
    assert str(err.value).startswith(f"provenance attestation check failed for {image.pinned}")


def test_provenance_of_another_commit_or_repository_is_refused(
    runner: tools.HostRunner, signed: Signed, key: tools.KeyPair
) -> None:
    # The same signed digest asked for under a sha- tag of another commit.
    other_tag = f"{signed.provider.repository}:sha-0badc0d"
    runner.ok(["crane", "tag", signed.provider.pinned, "sha-0badc0d"])
    with pytest.raises(VerificationError, match="its provenance says it was built from commit"):
        verify(runner, other_tag, key)
    with pytest.raises(
        VerificationError, match=re.escape("was built from https://github.com/acme/mcp-trader, not")
    ):
        verify(
            runner,
            signed.provider.reference,
            key,
            expected_repository="https://github.com/evil/fork",
        )


def test_attestations_are_signed_in_toto_statements_about_the_digest(
    runner: tools.HostRunner, signed: Signed, key: tools.KeyPair, home: Path
) -> None:
    """What a user sees with plain `cosign verify-attestation` (README, "Supply chain")."""
    out = runner.ok(
        cosign.verify_attestation_argv(
            signed.gateway.pinned, cosign.PROVENANCE_TYPE, KeyPolicy(str(key.public))
        )
    )
    [statement] = cosign.parse_attestations(out, signed.gateway.digest, cosign.PROVENANCE_TYPE)
    # Exactly what provenance.statement says cosign signs (invocationId spelled cosign's way).
    attested = json.loads((home / "mcp-gateway.prov.json").read_text())
    metadata = attested["runDetails"]["metadata"]
    metadata["invocationID"] = metadata.pop("invocationId")
    assert statement == provenance.statement(
        signed.gateway.repository, signed.gateway.digest, attested
    )


def test_deploy_pins_both_services_by_verified_digest_or_refuses_all(
    runner: tools.HostRunner, signed: Signed, key: tools.KeyPair, other_key: tools.KeyPair
) -> None:
    from mcp_trader.verify import pins_for_deploy

    images = {
        "binance-provider": signed.provider.reference,
        "mcp-gateway": signed.gateway.reference,
    }
    pins = asyncio.run(pins_for_deploy(runner, images, KeyPolicy(str(key.public))))
    assert {s: p.value for s, p in pins.items()} == {
        "binance-provider": f"{tools.TAG}@{signed.provider.digest}",
        "mcp-gateway": f"{tools.TAG}@{signed.gateway.digest}",
    }
    assert {p.signature for p in pins.values()} == {"verified"}
    # One image failing refuses the whole deploy: no pin comes back for the other either.
    with pytest.raises(VerificationError, match="signature check failed"):
        asyncio.run(pins_for_deploy(runner, images, KeyPolicy(str(other_key.public))))
