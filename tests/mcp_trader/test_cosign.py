"""The cosign/syft/crane command lines and the reading of their output (cosign.py): pure.

The same argv run for real on the host in tests/supply; here: every flag each promises, and
every bad value refused before a command exists.
"""

from __future__ import annotations

import base64
import json
import re

import pytest
from mcp_trader import cosign
from mcp_trader.cosign import (
    PROVENANCE_TYPE,
    SBOM_TYPE,
    KeylessPolicy,
    KeylessSigner,
    KeyPolicy,
    KeySigner,
    VerificationError,
)

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
REPO = "ghcr.io/acme/mcp-trader/binance-provider"
PINNED = f"{REPO}@{DIGEST}"
KEYLESS = KeylessPolicy(
    "https://github.com/acme/mcp-trader/.github/workflows/ci.yml@refs/heads/main"
)


def test_images_are_official_and_pinned_by_digest() -> None:
    for image, name in (
        (cosign.COSIGN_IMAGE, "ghcr.io/sigstore/cosign/cosign:v"),
        (cosign.SYFT_IMAGE, "docker.io/anchore/syft:v"),
        (cosign.CRANE_IMAGE, "gcr.io/go-containerregistry/crane:"),
    ):
        assert image.startswith(name)
        assert re.fullmatch(r"[^@]+:[^@:]+@sha256:[0-9a-f]{64}", image), image
    assert f":v{cosign.COSIGN_VERSION}@" in cosign.COSIGN_IMAGE
    assert f":v{cosign.SYFT_VERSION}@" in cosign.SYFT_IMAGE


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest"),
    [
        (f"{REPO}:sha-1a2b3c4", REPO, "sha-1a2b3c4", None),
        (PINNED, REPO, None, DIGEST),
        (f"{REPO}:1.2.3@{DIGEST}", REPO, "1.2.3", DIGEST),
        ("127.0.0.1:5000/a/b:latest", "127.0.0.1:5000/a/b", "latest", None),
    ],
)
def test_references_are_split(
    text: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = cosign.parse_reference(text)
    assert (ref.repository, ref.tag, ref.digest) == (repository, tag, digest)
    assert str(ref) == text
    assert ref.pinned(OTHER) == f"{repository}@{OTHER}"


@pytest.mark.parametrize(
    "text",
    [
        REPO,  # neither tag nor digest
        "binance-provider:1",  # no registry
        f"{REPO.upper()}:1",  # GHCR refuses capitals
        f"{REPO}:-bad",
        f"{REPO}@sha256:abc",
        f"{REPO}:1 --key x",
        "",
    ],
)
def test_bad_references_are_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="invalid image reference") as err:
        cosign.parse_reference(text)
    assert repr(text) in str(err.value)


def test_key_signing_never_uploads_to_the_public_log() -> None:
    argv = cosign.sign_argv(PINNED, KeySigner("/run/cosign/cosign.key"))
    assert argv == [
        "cosign",
        "sign",
        "--yes",
        "--key",
        "/run/cosign/cosign.key",
        "--tlog-upload=false",
        PINNED,
    ]


def test_keyless_signing_has_no_key_and_uses_the_log() -> None:
    argv = cosign.sign_argv(PINNED, KeylessSigner())
    assert argv == ["cosign", "sign", "--yes", PINNED]


@pytest.mark.parametrize(
    ("predicate_type", "cosign_type"),
    [(PROVENANCE_TYPE, "slsaprovenance1"), (SBOM_TYPE, "spdxjson")],
)
def test_attestations_replace_their_earlier_copy(predicate_type: str, cosign_type: str) -> None:
    argv = cosign.attest_argv(PINNED, "/in/p.json", predicate_type, KeySigner("/k"))
    assert argv[:4] == ["cosign", "attest", "--yes", "--replace"]
    assert argv[argv.index("--type") + 1] == cosign_type
    assert argv[argv.index("--predicate") + 1] == "/in/p.json"
    assert argv[-1] == PINNED
    assert "--tlog-upload=false" in argv


def test_unknown_predicate_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported predicate type 'x'"):
        cosign.attest_argv(PINNED, "/p", "x", KeylessSigner())


@pytest.mark.parametrize("image", [f"{REPO}:sha-1a2b3c4", f"{REPO}:v1@{DIGEST}"])
def test_everything_signed_or_verified_is_pinned_by_digest_alone(image: str) -> None:
    with pytest.raises(ValueError, match="not pinned by digest"):
        cosign.sign_argv(image, KeylessSigner())
    with pytest.raises(ValueError, match="not pinned by digest"):
        cosign.verify_argv(image, KEYLESS)
    with pytest.raises(ValueError, match="not pinned by digest"):
        cosign.verify_attestation_argv(image, SBOM_TYPE, KEYLESS)


def test_key_policy_flags() -> None:
    argv = cosign.verify_argv(PINNED, KeyPolicy("/run/cosign/cosign.pub"))
    assert argv == [
        "cosign",
        "verify",
        "--key",
        "/run/cosign/cosign.pub",
        "--insecure-ignore-tlog=true",
        "--output",
        "json",
        PINNED,
    ]


def test_keyless_policy_flags_exact_and_regexp() -> None:
    argv = cosign.verify_attestation_argv(PINNED, PROVENANCE_TYPE, KEYLESS)
    assert argv == [
        "cosign",
        "verify-attestation",
        "--certificate-identity",
        KEYLESS.identity,
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
        "--type",
        "slsaprovenance1",
        PINNED,
    ]
    regexp = KeylessPolicy(r"^https://github\.com/acme/.*$", identity_regexp=True)
    assert "--certificate-identity-regexp" in cosign.verify_argv(PINNED, regexp)


@pytest.mark.parametrize(
    ("identity", "issuer", "regexp", "message"),
    [
        ("", cosign.GITHUB_ISSUER, False, "invalid keyless identity"),
        (" x", cosign.GITHUB_ISSUER, False, "invalid keyless identity"),
        ("x", "", False, "invalid keyless issuer"),
        ("x", "a\nb", False, "invalid keyless issuer"),
        ("(", cosign.GITHUB_ISSUER, True, "invalid identity regular expression"),
    ],
)
def test_bad_keyless_policy_is_refused(
    identity: str, issuer: str, regexp: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        KeylessPolicy(identity, issuer, identity_regexp=regexp)


def test_digest_and_sbom_argv() -> None:
    assert cosign.digest_argv(f"{REPO}:1") == ["crane", "digest", f"{REPO}:1"]
    argv = cosign.sbom_argv("oci-archive:/in/image.tar", "/out/sbom.json", name=REPO, version="1")
    assert argv == [
        "syft",
        "scan",
        "oci-archive:/in/image.tar",
        "--quiet",
        "--output",
        "spdx-json@2.3=/out/sbom.json",
        "--source-name",
        REPO,
        "--source-version",
        "1",
    ]
    with pytest.raises(ValueError, match="invalid SBOM source 'dir:/'"):
        cosign.sbom_argv("dir:/", "/o", name=REPO)


# --- reading the tools' output -----------------------------------------------------------------


def signature_payload(digest: str, **optional: str) -> dict[str, object]:
    return {
        "critical": {
            "identity": {"docker-reference": REPO},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": optional or None,
    }


def test_signatures_must_cover_the_digest() -> None:
    out = json.dumps([signature_payload(DIGEST)])
    [sig] = cosign.parse_signatures(out, DIGEST, KeyPolicy("/k.pub"))
    assert sig.signer == "key /k.pub"
    keyless = json.dumps(
        [signature_payload(DIGEST, Subject=KEYLESS.identity, Issuer=cosign.GITHUB_ISSUER)]
    )
    [sig] = cosign.parse_signatures(keyless, DIGEST, KEYLESS)
    assert (sig.signer, sig.issuer) == (KEYLESS.identity, cosign.GITHUB_ISSUER)
    with pytest.raises(VerificationError, match=f"covers '{OTHER}' instead"):
        cosign.parse_signatures(json.dumps([signature_payload(OTHER)]), DIGEST, KEYLESS)
    for empty in ("[]", "", "null"):
        with pytest.raises(VerificationError, match="signature"):
            cosign.parse_signatures(empty, DIGEST, KEYLESS)


def envelope(statement: dict[str, object], payload_type: str = cosign.IN_TOTO_PAYLOAD) -> str:
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps({"payloadType": payload_type, "payload": payload, "signatures": []})


def about(digest: str, predicate_type: str = PROVENANCE_TYPE) -> dict[str, object]:
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": REPO, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": {"n": 1},
    }


def test_attestations_are_decoded_filtered_by_type_and_bound_to_the_digest() -> None:
    out = "\n".join([envelope(about(DIGEST, SBOM_TYPE)), envelope(about(DIGEST)), ""])
    [statement] = cosign.parse_attestations(out, DIGEST, PROVENANCE_TYPE)
    assert statement["predicate"] == {"n": 1}
    with pytest.raises(VerificationError, match="is about"):
        cosign.parse_attestations(envelope(about(OTHER)), DIGEST, PROVENANCE_TYPE)
    with pytest.raises(VerificationError, match=f"no verified {re.escape(PROVENANCE_TYPE)}"):
        cosign.parse_attestations(envelope(about(DIGEST, SBOM_TYPE)), DIGEST, PROVENANCE_TYPE)
    with pytest.raises(VerificationError, match="not an in-toto statement"):
        cosign.parse_attestations(envelope(about(DIGEST), "text/plain"), DIGEST, PROVENANCE_TYPE)
    with pytest.raises(VerificationError, match="not an in-toto statement"):
        cosign.parse_attestations('{"payloadType": "x"', DIGEST, PROVENANCE_TYPE)


def test_digest_output_and_failure_reasons() -> None:
    assert cosign.parse_digest(DIGEST + "\n", PINNED) == DIGEST
    with pytest.raises(VerificationError, match="gave no digest"):
        cosign.parse_digest("MANIFEST_UNKNOWN", PINNED)
    text = cosign.describe_failure(
        "signature check",
        PINNED,
        "Error: no matching signatures: invalid signature\nmain.go:74: error during command",
        KeyPolicy("/k.pub"),
    )
    assert text == (
        f"signature check failed for {PINNED} (signed by the key /k.pub): "
        "no matching signatures: invalid signature"
    )
