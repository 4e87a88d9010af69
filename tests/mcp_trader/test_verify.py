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
from mcp_trader.verify import Result, Verified, VerifiedIndex, sign_steps, verify_image

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


IMAGE_MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
)


class Script:
    """A runner answering by command: (tool, subcommand, --type) -> Result."""

    def __init__(self, **overrides: Result) -> None:
        self.answers = {
            "digest": Result(0, DIGEST + "\n", ""),
            "manifest": Result(0, IMAGE_MANIFEST, ""),
            "verify": Result(0, SIGNATURE, ""),
            "slsaprovenance1": Result(0, envelope(PROVENANCE_TYPE, PREDICATE) + "\n", ""),
            "spdxjson": Result(0, envelope(SBOM_TYPE, SPDX) + "\n", ""),
        }
        self.answers.update(overrides)
        self.ran: list[list[str]] = []

    async def __call__(self, argv: list[str]) -> Result:
        self.ran.append(argv)
        if argv[0] == "crane":
            return self.answers[argv[1]]
        if argv[1] == "verify":
            return self.answers["verify"]
        return self.answers[argv[argv.index("--type") + 1]]


async def test_checks_run_in_order_on_the_resolved_digest_and_report_everything() -> None:
    script = Script()
    verified = await verify_image(script, f"{REPO}:sha-1a2b3c4", POLICY)
    pinned = f"{REPO}@{DIGEST}"
    assert [argv[:2] for argv in script.ran] == [
        ["crane", "digest"],
        ["crane", "manifest"],
        ["cosign", "verify"],
        ["cosign", "verify-attestation"],
        ["cosign", "verify-attestation"],
    ]
    assert script.ran[0][-1] == f"{REPO}:sha-1a2b3c4"
    assert all(argv[-1] == pinned for argv in script.ran[1:])
    assert isinstance(verified, Verified)
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
    assert len(script.ran) == 4


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
    assert unsigned.ran == [["crane", "digest", f"{REPO}:sha-1a2b3c4"]]  # resolved only
    with pytest.raises(VerificationError, match="no signatures found"):
        await pins_for_deploy(unsigned, images, POLICY)
    with pytest.raises(ValueError, match="as repository:tag"):
        await pins_for_deploy(Script(), {"x": f"{REPO}@{DIGEST}"}, POLICY)


# --- a multi-platform index: its signature, then every platform manifest ----------------------

INDEX = "sha256:" + "11" * 32
AMD64 = "sha256:" + "a6" * 32
ARM64 = "sha256:" + "a8" * 32


def index_manifest(*entries: dict[str, Any]) -> str:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": list(entries),
        }
    )


def entry(digest: str, os: str, arch: str, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": 1,
        "platform": {"os": os, "architecture": arch, **extra},
    }


TWO_PLATFORMS = index_manifest(
    entry(AMD64, "linux", "amd64"), entry(ARM64, "linux", "arm64", variant="v8")
)


def signature(digest: str) -> str:
    return json.dumps(
        [{"critical": {"image": {"docker-manifest-digest": digest}}, "optional": None}]
    )


class IndexScript:
    """A registry holding one index of two platform manifests, each signed and attested with
    a provenance naming its platform; `broken` maps (check, digest) to the Result instead."""

    def __init__(
        self,
        broken: dict[tuple[str, str], Result] | None = None,
        manifest: str = TWO_PLATFORMS,
        commits: dict[str, str] | None = None,
        platforms: dict[str, str] | None = None,
    ) -> None:
        self.broken = broken or {}
        self.manifest = manifest
        self.commits = commits or {}
        self.platforms = {AMD64: "linux/amd64", ARM64: "linux/arm64", **(platforms or {})}
        self.ran: list[list[str]] = []

    async def __call__(self, argv: list[str]) -> Result:
        self.ran.append(argv)
        digest = argv[-1].rpartition("@")[2]
        if argv[:2] == ["crane", "digest"]:
            return Result(0, INDEX + "\n", "")
        if argv[:2] == ["crane", "manifest"]:
            return Result(0, self.manifest if digest == INDEX else IMAGE_MANIFEST, "")
        check = argv[argv.index("--type") + 1] if "--type" in argv else "verify"
        if (check, digest) in self.broken:
            return self.broken[(check, digest)]
        if check == "verify":
            return Result(0, signature(digest), "")
        if check == "spdxjson":
            return Result(0, envelope(SBOM_TYPE, SPDX, digest) + "\n", "")
        doc = provenance.predicate(
            source=provenance.Source(
                "https://github.com/acme/mcp-trader",
                "refs/heads/main",
                self.commits.get(digest, COMMIT),
            ),
            parameters={"service": "binance-provider", "platform": self.platforms[digest]},
            base_images={},
            builder=provenance.local_builder("alice@example.com"),
        )
        return Result(0, envelope(PROVENANCE_TYPE, doc, digest) + "\n", "")


async def test_an_index_is_verified_by_its_signature_and_every_platform() -> None:
    script = IndexScript()
    verified = await verify_image(script, f"{REPO}:sha-1a2b3c4", POLICY)
    assert isinstance(verified, VerifiedIndex)
    checked = [
        (argv[1], argv[argv.index("--type") + 1] if "--type" in argv else "", argv[-1])
        for argv in script.ran
    ]
    assert checked == [
        ("digest", "", f"{REPO}:sha-1a2b3c4"),
        ("manifest", "", f"{REPO}@{INDEX}"),
        ("verify", "", f"{REPO}@{INDEX}"),
        ("verify", "", f"{REPO}@{AMD64}"),
        ("verify-attestation", "slsaprovenance1", f"{REPO}@{AMD64}"),
        ("verify-attestation", "spdxjson", f"{REPO}@{AMD64}"),
        ("verify", "", f"{REPO}@{ARM64}"),
        ("verify-attestation", "slsaprovenance1", f"{REPO}@{ARM64}"),
        ("verify-attestation", "spdxjson", f"{REPO}@{ARM64}"),
    ]
    assert (verified.digest, verified.provenance.commit) == (INDEX, COMMIT)
    assert [(p, v.digest) for p, v in verified.platforms] == [
        ("linux/amd64", AMD64),
        ("linux/arm64", ARM64),
    ]
    report = verified.report().splitlines()
    assert report[:4] == [
        f"verified {REPO}:sha-1a2b3c4",
        f"digest: {INDEX} (index of linux/amd64, linux/arm64)",
        "policy: signed by the key /k.pub",
        "index signer: key /k.pub",
    ]
    assert f"platform linux/arm64: {ARM64}" in report
    assert f"  source: https://github.com/acme/mcp-trader refs/heads/main @ {COMMIT}" in report
    assert (
        report.count(f"  sbom: {REPO}: 0 Debian packages, 0 Python distributions, 1 Rust crates")
        == 2
    )


async def test_an_unsigned_platform_is_refused_naming_it_after_checking_every_platform() -> None:
    script = IndexScript(
        {("verify", ARM64): Result(1, "", "Error: no signatures found\nmain.go:74: error")}
    )
    with pytest.raises(VerificationError) as err:
        await verify_image(script, f"{REPO}:sha-1a2b3c4", POLICY)
    message = str(err.value)
    assert message.splitlines() == [
        f"refusing {REPO}:sha-1a2b3c4: the index {REPO}@{INDEX} of linux/amd64, linux/arm64 "
        "failed verification:",
        f"- linux/arm64 {ARM64}: signature check failed for {REPO}@{ARM64} (signed by the key "
        "/k.pub): no signatures found",
    ]
    # amd64 was checked in full; arm64 stopped at its signature.
    assert sum(1 for argv in script.ran if argv[-1] == f"{REPO}@{AMD64}") == 3
    assert sum(1 for argv in script.ran if argv[-1] == f"{REPO}@{ARM64}") == 1


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            IndexScript({("verify", INDEX): Result(1, "", "Error: no signatures found")}),
            f"- index {INDEX}: index signature check failed for {REPO}@{INDEX}",
        ),
        (
            IndexScript({("spdxjson", AMD64): Result(1, "", "Error: no matching attestations")}),
            f"- linux/amd64 {AMD64}: SBOM attestation check failed",
        ),
        (
            IndexScript(platforms={ARM64: "linux/amd64"}),
            f"- linux/arm64 {ARM64}: {REPO}@{ARM64} is listed for linux/arm64 but its "
            "provenance says it was built for linux/amd64",
        ),
        (
            IndexScript(commits={ARM64: "1a2b3c4" + "e" * 33}),
            "- its platforms were built from different commits (linux/amd64 from 1a2b3c4ddd",
        ),
    ],
)
async def test_index_refusals_name_the_index_or_the_platform(
    script: IndexScript, expected: str
) -> None:
    with pytest.raises(VerificationError) as err:
        await verify_image(script, f"{REPO}:sha-1a2b3c4", POLICY)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (index_manifest(), "lists no platform image"),
        (index_manifest({"digest": AMD64, "mediaType": "x"}), "without a platform"),
        (
            index_manifest(entry(AMD64, "linux", "amd64"), entry(ARM64, "linux", "amd64")),
            "lists linux/amd64 twice",
        ),
        (
            index_manifest(
                {
                    **entry(AMD64, "linux", "amd64"),
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                }
            ),
            "index of indexes",
        ),
        ("not json", "no readable manifest"),
    ],
)
async def test_an_ambiguous_index_is_refused(manifest: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        await verify_image(IndexScript(manifest=manifest), f"{REPO}:sha-1a2b3c4", POLICY)


async def test_attestation_manifests_in_an_index_are_not_platforms() -> None:
    buildkit = {
        **entry("sha256:" + "ee" * 32, "unknown", "unknown"),
        "annotations": {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": AMD64,
        },
    }
    manifest = index_manifest(entry(AMD64, "linux", "amd64"), buildkit)
    verified = await verify_image(IndexScript(manifest=manifest), f"{REPO}@{INDEX}", POLICY)
    assert isinstance(verified, VerifiedIndex)
    assert [p for p, _ in verified.platforms] == ["linux/amd64"]


async def test_deploy_pins_an_index_by_its_own_digest() -> None:
    from mcp_trader.verify import pins_for_deploy

    images = {"binance-provider": f"{REPO}:sha-1a2b3c4"}
    [pin] = (await pins_for_deploy(IndexScript(), images, POLICY)).values()
    # The server pulls TAG@<index digest>; Docker picks the host's platform from the index.
    assert (pin.value, pin.signature) == (f"sha-1a2b3c4@{INDEX}", "verified")
    assert pin.verified is not None and pin.verified.provenance.commit == COMMIT
