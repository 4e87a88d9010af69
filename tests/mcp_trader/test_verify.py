"""The order and the refusals of verification (verify.py), with a scripted runner.

The real tools run the same checks in tests/supply; here every branch is driven by the output
a runner gives, including ones real cosign rarely produces (a signature about another digest).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from mcp_trader import provenance
from mcp_trader.cosign import PROVENANCE_TYPE, SBOM_TYPE, KeyPolicy, KeySigner, VerificationError
from mcp_trader.verify import Result, sign_steps, verify_image

REPO = "ghcr.io/acme/mcp-trader/binance-provider"
DIGEST = "sha256:" + "ab" * 32
COMMIT = "1a2b3c4" + "d" * 33
POLICY = KeyPolicy("/k.pub")


def envelope(predicate_type: str, predicate: dict[str, Any], digest: str = DIGEST) -> str:
    statement = {
        "_type": provenance.STATEMENT_TYPE,
        "subject": [{"name": REPO, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": payload})


PREDICATE = provenance.predicate(
    source=provenance.Source("https://github.com/acme/mcp-trader", "refs/heads/main", COMMIT),
    parameters={"service": "binance-provider"},
    base_images={},
    builder=provenance.local_builder("alice@example.com"),
)
SPDX = {
    "spdxVersion": "SPDX-2.3",
    "name": REPO,
    "packages": [
        {
            "name": "tonic",
            "versionInfo": "0.14.2",
            "externalRefs": [
                {"referenceType": "purl", "referenceLocator": "pkg:cargo/tonic@0.14.2"}
            ],
        }
    ],
}
SIGNATURE = json.dumps(
    [{"critical": {"image": {"docker-manifest-digest": DIGEST}}, "optional": None}]
)


class Script:
    """A runner answering by command: (tool, subcommand, --type) -> Result."""

    def __init__(self, **overrides: Result) -> None:
        self.answers = {
            "digest": Result(0, DIGEST + "\n", ""),
            "verify": Result(0, SIGNATURE, ""),
            "slsaprovenance1": Result(0, envelope(PROVENANCE_TYPE, PREDICATE) + "\n", ""),
            "spdxjson": Result(0, envelope(SBOM_TYPE, SPDX) + "\n", ""),
        }
        self.answers.update(overrides)
        self.ran: list[list[str]] = []

    async def __call__(self, argv: list[str]) -> Result:
        self.ran.append(argv)
        if argv[0] == "crane":
            return self.answers["digest"]
        if argv[1] == "verify":
            return self.answers["verify"]
        return self.answers[argv[argv.index("--type") + 1]]


async def test_checks_run_in_order_on_the_resolved_digest_and_report_everything() -> None:
    script = Script()
    verified = await verify_image(script, f"{REPO}:sha-1a2b3c4", POLICY)
    pinned = f"{REPO}@{DIGEST}"
    assert [argv[:2] for argv in script.ran] == [
        ["crane", "digest"],
        ["cosign", "verify"],
        ["cosign", "verify-attestation"],
        ["cosign", "verify-attestation"],
    ]
    assert script.ran[0][-1] == f"{REPO}:sha-1a2b3c4"
    assert all(argv[-1] == pinned for argv in script.ran[1:])
    assert verified.report().splitlines() == [
        f"verified {REPO}:sha-1a2b3c4",
        f"digest: {DIGEST}",
        "policy: signed by the key /k.pub",
        "signer: key /k.pub",
        f"source: https://github.com/acme/mcp-trader refs/heads/main @ {COMMIT}",
        "builder: local (local:alice@example.com)",
        f"sbom: {REPO}: 0 Debian packages, 0 Python distributions, 1 Rust crates",
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"digest": Result(1, "", "Error: MANIFEST_UNKNOWN: manifest unknown")}, "cannot resolve"),
        (
            {"verify": Result(1, "", "Error: no signatures found\nmain.go:74: error during")},
            "signature check failed for .*: no signatures found",
        ),
        (
            {"slsaprovenance1": Result(1, "", "Error: none of the attestations matched")},
            "provenance attestation check failed .*: none of the attestations matched",
        ),
        ({"spdxjson": Result(1, "", "Error: no matching attestations")}, "SBOM attestation check"),
        (
            {
                "slsaprovenance1": Result(
                    0, envelope(PROVENANCE_TYPE, PREDICATE, "sha256:" + "cd" * 32), ""
                )
            },
            "is about",
        ),
        (
            {"spdxjson": Result(0, envelope(SBOM_TYPE, {"bomFormat": "x"}), "")},
            "SBOM .* unreadable",
        ),
    ],
)
async def test_each_failed_check_is_a_refusal_naming_it(
    override: dict[str, Result], message: str
) -> None:
    with pytest.raises(VerificationError, match=message):
        await verify_image(Script(**override), f"{REPO}:sha-1a2b3c4", POLICY)


async def test_a_sha_tag_of_another_commit_is_refused_before_the_sbom_check() -> None:
    script = Script()
    with pytest.raises(VerificationError, match=r"asked for as sha-0000000 .* commit 1a2b3c4"):
        await verify_image(script, f"{REPO}:sha-0000000", POLICY)
    assert len(script.ran) == 3


def test_publish_signs_before_it_attests() -> None:
    steps = sign_steps(f"{REPO}@{DIGEST}", KeySigner("/k"), provenance_file="/p", sbom_file="/s")
    assert [name for name, _ in steps] == ["sign", "attest provenance", "attest SBOM"]
    assert steps[1][1][steps[1][1].index("--predicate") + 1] == "/p"
    assert steps[2][1][steps[2][1].index("--predicate") + 1] == "/s"


async def test_deploy_pins_are_verified_digests_or_explicitly_unsigned() -> None:
    from mcp_trader.verify import pins_for_deploy

    images = {"binance-provider": f"{REPO}:sha-1a2b3c4"}
    [pin] = (await pins_for_deploy(Script(), images, POLICY)).values()
    assert (pin.value, pin.signature) == (f"sha-1a2b3c4@{DIGEST}", "verified")
    assert pin.verified is not None and pin.verified.provenance.commit == COMMIT
    unsigned = Script(verify=Result(1, "", "Error: no signatures found"))
    [pin] = (await pins_for_deploy(unsigned, images, None)).values()
    assert (pin.value, pin.signature) == (f"sha-1a2b3c4@{DIGEST}", "unsigned")
    assert [argv[0] for argv in unsigned.ran] == ["crane"]  # resolved only
    with pytest.raises(VerificationError, match="no signatures found"):
        await pins_for_deploy(unsigned, images, POLICY)
    with pytest.raises(ValueError, match="as repository:tag"):
        await pins_for_deploy(Script(), {"x": f"{REPO}@{DIGEST}"}, POLICY)
