"""The cosign, syft and crane command lines of signing, attesting and verifying, built by pure code.

Like ssh.py for deploys: the module runs these argv lists in its tools container (supply.py),
and the tests run the very same lists on the host against a real registry with the same tool
versions (.ci/setup.d/50-supply-chain.sh installs them), so what is tested is what ships.
Every value a user passes is validated here, with an error naming it, before any container.

Choices, each visible on every command line:
- cosign 2.6 and its classic storage (signatures and attestations as `sha256-<digest>.sig/.att`
  tags next to the image): every registry accepts it (GHCR, a plain `registry:2`), where cosign
  3's OCI 1.1 referrers need registry support or a fallback;
- everything is addressed by digest (`repo@sha256:...`), never by tag: what is signed, attested
  and verified is one manifest, and a tag moved in between cannot redirect it;
- keyless (GitHub's OIDC token -> Fulcio certificate, Rekor transparency log) or a key pair; with
  a key nothing is uploaded to the public transparency log (`--tlog-upload=false`), so it works
  offline and for private images, and verification then skips the log
  (`--insecure-ignore-tlog=true`: the key is the trust anchor);
- attestations replace earlier ones of the same type (`--replace`): re-running a publish leaves
  one provenance and one SBOM per image, not a growing pile.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from .tags import DIGEST, validate_digest

#: Official images, pinned by digest (multi-platform indexes); the host tools are the same
#: versions (.ci/setup.d/50-supply-chain.sh). Bump tag and digest together, deliberately.
COSIGN_VERSION: Final = "2.6.5"
COSIGN_IMAGE: Final = (
    f"ghcr.io/sigstore/cosign/cosign:v{COSIGN_VERSION}"
    "@sha256:ad281047f85c5e1fc6ffbc30c2b55be3b07b4032bef715a12122ce5829619aca"
)
SYFT_VERSION: Final = "1.50.0"
SYFT_IMAGE: Final = (
    f"docker.io/anchore/syft:v{SYFT_VERSION}"
    "@sha256:1288ea4c8b38767b4e620c1e312c8cb26b6e887a99b4f07ab6cd19fc6f225026"
)
#: crane's `debug` image: crane plus a busybox shell, the one shell the tools container has
#: (it logs in to the registry from a Secret before exec'ing the tool, see supply.py).
CRANE_IMAGE: Final = (
    "gcr.io/go-containerregistry/crane:debug"
    "@sha256:e78770b31258a3846f878036d9c1f63fbe4c871f9f56990bf77fd95c013e3c1b"
)

#: The in-toto predicate types of the two attestations, and cosign's names for them.
PROVENANCE_TYPE: Final = "https://slsa.dev/provenance/v1"
SBOM_TYPE: Final = "https://spdx.dev/Document"
COSIGN_TYPES: Final = {PROVENANCE_TYPE: "slsaprovenance1", SBOM_TYPE: "spdxjson"}
IN_TOTO_PAYLOAD: Final = "application/vnd.in-toto+json"

#: GitHub Actions' OIDC issuer: what a keyless signature made in a workflow names.
GITHUB_ISSUER: Final = "https://token.actions.githubusercontent.com"

_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY = rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*(?::[0-9]{{1,5}})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# host[:port]/path[:tag][@sha256:hex]; the registry part is required (no Docker Hub shorthand).
_REFERENCE = re.compile(
    rf"(?P<repository>(?P<registry>{_REGISTRY})/{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class VerificationError(Exception):
    """An image failed verification; the message names what failed and for which digest."""


@dataclass(frozen=True)
class Reference:
    """An image reference split into repository (with registry), tag and digest."""

    repository: str
    registry: str
    tag: str | None
    digest: str | None

    def __str__(self) -> str:
        text = self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def pinned(self, digest: str) -> str:
        """`repository@digest`: the form every cosign command here takes."""
        return f"{self.repository}@{validate_digest(digest)}"


def parse_reference(reference: str) -> Reference:
    """`registry/path[:tag][@sha256:...]`; refused without a registry or without a tag/digest."""
    match = _REFERENCE.fullmatch(reference)
    if match is None or (match["tag"] is None and match["digest"] is None):
        raise ValueError(
            f"invalid image reference {reference!r}: expected registry/path:tag or "
            "registry/path@sha256:<64 hex> (lowercase path), e.g. "
            "ghcr.io/acme/mcp-trader/binance-provider:sha-1a2b3c4"
        )
    return Reference(
        repository=match["repository"],
        registry=match["registry"],
        tag=match["tag"],
        digest=match["digest"],
    )


# ---------------------------------------------------------------------------------------------
# Who signs, and what a verifier accepts


@dataclass(frozen=True)
class KeySigner:
    """A cosign key pair's private key (a file); its password comes from `COSIGN_PASSWORD`."""

    key_file: str


@dataclass(frozen=True)
class KeylessSigner:
    """Sigstore's keyless flow: an OIDC identity token (in GitHub Actions, the workflow's own,
    which cosign fetches with ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN), a Fulcio certificate and a
    Rekor transparency log entry."""


Signer = KeySigner | KeylessSigner


@dataclass(frozen=True)
class KeyPolicy:
    """Accept what the private key matching this public key (a file) signed."""

    public_key_file: str

    def describe(self) -> str:
        return f"signed by the key {self.public_key_file}"


@dataclass(frozen=True)
class KeylessPolicy:
    """Accept a keyless signature whose certificate names this identity and OIDC issuer.

    For a GitHub workflow the identity is the workflow file at a ref, e.g.
    `https://github.com/acme/mcp-trader/.github/workflows/ci.yml@refs/heads/main`;
    `identity_regexp` matches it as a regular expression instead (cosign's `--certificate-
    identity-regexp`), e.g. to accept every release tag.
    """

    identity: str
    issuer: str = GITHUB_ISSUER
    identity_regexp: bool = False

    def __post_init__(self) -> None:
        for what, value in (("identity", self.identity), ("issuer", self.issuer)):
            if not value or _CONTROL.search(value) or value != value.strip():
                raise ValueError(
                    f"invalid keyless {what} {value!r}: expected a non-empty value without "
                    "spaces at the ends, e.g. "
                    + (
                        "https://github.com/acme/mcp-trader/.github/workflows/ci.yml@refs/heads/main"
                        if what == "identity"
                        else GITHUB_ISSUER
                    )
                )
        if self.identity_regexp:
            try:
                re.compile(self.identity)
            except re.error as error:
                raise ValueError(
                    f"invalid identity regular expression {self.identity!r}: {error}"
                ) from None

    def describe(self) -> str:
        kind = "matching" if self.identity_regexp else "as"
        return f"signed keyless {kind} {self.identity} (issuer {self.issuer})"


Policy = KeyPolicy | KeylessPolicy


def _signer_flags(signer: Signer) -> list[str]:
    if isinstance(signer, KeySigner):
        return ["--key", signer.key_file, "--tlog-upload=false"]
    return []


def policy_flags(policy: Policy) -> list[str]:
    """The flags that make cosign accept only what `policy` accepts."""
    if isinstance(policy, KeyPolicy):
        return ["--key", policy.public_key_file, "--insecure-ignore-tlog=true"]
    identity_flag = (
        "--certificate-identity-regexp" if policy.identity_regexp else "--certificate-identity"
    )
    return [identity_flag, policy.identity, "--certificate-oidc-issuer", policy.issuer]


# ---------------------------------------------------------------------------------------------
# Command lines


def sign_argv(image: str, signer: Signer) -> list[str]:
    """Sign one manifest (`repo@sha256:...`)."""
    return ["cosign", "sign", "--yes", *_signer_flags(signer), _by_digest(image)]


def attest_argv(image: str, predicate_file: str, predicate_type: str, signer: Signer) -> list[str]:
    """Attach a signed in-toto attestation of `predicate_type` (provenance or SBOM)."""
    return [
        "cosign",
        "attest",
        "--yes",
        "--replace",
        *_signer_flags(signer),
        "--type",
        _cosign_type(predicate_type),
        "--predicate",
        predicate_file,
        _by_digest(image),
    ]


def verify_argv(image: str, policy: Policy) -> list[str]:
    """Check the image's signature; prints the verified signature payloads as JSON."""
    return ["cosign", "verify", *policy_flags(policy), "--output", "json", _by_digest(image)]


def verify_attestation_argv(image: str, predicate_type: str, policy: Policy) -> list[str]:
    """Check the signed attestations of one type; prints their DSSE envelopes, one per line."""
    return [
        "cosign",
        "verify-attestation",
        *policy_flags(policy),
        "--type",
        _cosign_type(predicate_type),
        _by_digest(image),
    ]


def digest_argv(image: str) -> list[str]:
    """Ask the registry which manifest digest a tag (or digest) names."""
    return ["crane", "digest", str(parse_reference(image))]


def manifest_argv(image: str) -> list[str]:
    """The manifest a digest names, as stored: an image manifest, or an index of platforms."""
    return ["crane", "manifest", _by_digest(image)]


def sbom_argv(source: str, output_file: str, *, name: str, version: str | None = None) -> list[str]:
    """SPDX 2.3 JSON of an image: `oci-archive:FILE`, `registry:REF` or `docker-archive:FILE`.

    `name` (and `version`) become the SBOM's subject, so it names the image, not a temp file.
    """
    if not re.fullmatch(r"(oci-archive|docker-archive|registry|oci-dir):\S+", source):
        raise ValueError(
            f"invalid SBOM source {source!r}: expected oci-archive:FILE, docker-archive:FILE, "
            "oci-dir:DIR or registry:REFERENCE"
        )
    argv = [
        "syft",
        "scan",
        source,
        "--quiet",
        "--output",
        f"spdx-json@2.3={output_file}",
        "--source-name",
        name,
    ]
    if version:
        argv += ["--source-version", version]
    return argv


def _by_digest(image: str) -> str:
    ref = parse_reference(image)
    if ref.digest is None or ref.tag is not None:
        raise ValueError(
            f"{image!r} is not pinned by digest: sign and verify repository@sha256:<digest> "
            "(resolve a tag first), so a tag moved in between cannot change what is checked"
        )
    return str(ref)


def _cosign_type(predicate_type: str) -> str:
    try:
        return COSIGN_TYPES[predicate_type]
    except KeyError:
        raise ValueError(
            f"unsupported predicate type {predicate_type!r}: expected one of "
            + ", ".join(COSIGN_TYPES)
        ) from None


# ---------------------------------------------------------------------------------------------
# Reading what the tools printed


def parse_digest(output: str, image: str) -> str:
    """The digest `crane digest` printed for `image`."""
    digest = output.strip()
    if not DIGEST.fullmatch(digest):
        raise VerificationError(
            f"the registry gave no digest for {image}: crane printed {output.strip()[:200]!r}"
        )
    return digest


#: Media types of a multi-platform index (OCI's, and Docker's manifest list).
INDEX_TYPES: Final = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


@dataclass(frozen=True)
class PlatformManifest:
    """One platform's image manifest in an index: `linux/arm64` and its digest."""

    platform: str
    digest: str


def parse_manifest(output: str, image: str) -> tuple[PlatformManifest, ...] | None:
    """The platforms of the index `crane manifest` printed for `image`, in the index's order;
    None for a plain image manifest.

    BuildKit's attestation manifests (`vnd.docker.reference.type: attestation-manifest`, platform
    unknown/unknown) are not images to run and are skipped. An index of indexes, an entry
    without a platform and a platform listed twice are refused: which manifest runs on a host
    must be unambiguous for verification to mean anything.
    """
    try:
        manifest = json.loads(output)
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except ValueError as error:
        raise VerificationError(
            f"the registry gave no readable manifest for {image}: {error}"
        ) from None
    if manifest.get("mediaType") not in INDEX_TYPES and "manifests" not in manifest:
        return None
    found: list[PlatformManifest] = []
    for entry in manifest.get("manifests") or []:
        annotations = (entry.get("annotations") or {}) if isinstance(entry, dict) else {}
        if annotations.get("vnd.docker.reference.type") == "attestation-manifest":
            continue
        digest = _get(entry, "digest")
        platform = _get(entry, "platform")
        if entry.get("mediaType") in INDEX_TYPES:
            raise VerificationError(
                f"{image} is an index of indexes ({digest}): refusing it, only an index of "
                "platform images is verified"
            )
        name = _platform_name(platform)
        if not name:
            raise VerificationError(f"the index {image} lists {digest} without a platform")
        if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
            raise VerificationError(f"the index {image} lists {name} with no digest ({digest!r})")
        if any(m.platform == name for m in found):
            raise VerificationError(f"the index {image} lists {name} twice: refusing it")
        found.append(PlatformManifest(name, digest))
    if not found:
        raise VerificationError(f"the index {image} lists no platform image")
    return tuple(found)


def config_platform(output: str) -> str:
    """`os/architecture[/variant]` of the image config `crane config` printed ("" if unknown)."""
    try:
        return _platform_name(json.loads(output))
    except ValueError:
        return ""


def _platform_name(doc: Any) -> str:
    """An index entry's `platform` or an image config as `os/arch[/variant]`, arm64 without its
    implied `v8` (platforms.normalize's spelling); "" when os or architecture is missing."""
    if not isinstance(doc, dict) or not doc.get("os") or not doc.get("architecture"):
        return ""
    name = f"{doc['os']}/{doc['architecture']}"
    if doc.get("variant"):
        name += f"/{doc['variant']}"
    return "linux/arm64" if name == "linux/arm64/v8" else name


@dataclass(frozen=True)
class Signature:
    """One verified signature: the digest it covers and who made it (keyless) or 'key'."""

    digest: str
    signer: str
    issuer: str | None


def parse_signatures(output: str, digest: str, policy: Policy) -> list[Signature]:
    """The signatures `cosign verify --output json` vouched for; each must cover `digest`."""
    try:
        payloads = json.loads(output)
    except json.JSONDecodeError as error:
        raise VerificationError(
            f"cosign verify printed no signature list for {digest}: {error}"
        ) from None
    if not isinstance(payloads, list) or not payloads:
        raise VerificationError(f"no verified signature for {digest}")
    signatures: list[Signature] = []
    for payload in payloads:
        signed = _get(payload, "critical", "image", "docker-manifest-digest")
        if signed != digest:
            raise VerificationError(
                f"a signature checked for {digest} covers {signed!r} instead: refusing it"
            )
        optional = payload.get("optional") or {}
        if isinstance(policy, KeylessPolicy):
            subject = optional.get("Subject") or policy.identity
            signatures.append(Signature(digest, str(subject), optional.get("Issuer")))
        else:
            signatures.append(Signature(digest, f"key {policy.public_key_file}", None))
    return signatures


def parse_attestations(output: str, digest: str, predicate_type: str) -> list[dict[str, Any]]:
    """The in-toto statements of `cosign verify-attestation`, each about `digest` and of the type.

    cosign prints one DSSE envelope per line; the statement is the base64 `payload`.
    """
    statements: list[dict[str, Any]] = []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            envelope = json.loads(line)
            if envelope.get("payloadType") != IN_TOTO_PAYLOAD:
                raise ValueError(f"payload type {envelope.get('payloadType')!r}")
            statement = json.loads(base64.b64decode(envelope["payload"], validate=True))
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as error:
            raise VerificationError(
                f"cosign printed an attestation for {digest} that is not an in-toto statement: "
                f"{error}"
            ) from None
        if statement.get("predicateType") != predicate_type:
            continue
        subjects = statement.get("subject") or []
        hexes = {s.get("digest", {}).get("sha256") for s in subjects if isinstance(s, dict)}
        if digest.removeprefix("sha256:") not in hexes:
            raise VerificationError(
                f"a {predicate_type} attestation attached to {digest} is about "
                f"{sorted(h for h in hexes if h)} instead: refusing it"
            )
        statements.append(statement)
    if not statements:
        raise VerificationError(f"no verified {predicate_type} attestation for {digest}")
    return statements


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def describe_failure(step: str, image: str, output: str, policy: Policy) -> str:
    """A refusal in a user's terms: which check failed, on which digest, under which policy."""
    reason = _cosign_reason(output)
    return f"{step} failed for {image} ({policy.describe()}): {reason}"


def _cosign_reason(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    text = errors[-1].removeprefix("Error:").strip() if errors else (lines[-1] if lines else "")
    return text or "cosign gave no reason"


def joined(argv: Sequence[str]) -> str:
    """An argv as one line for messages (never holds a secret: secrets are files or env)."""
    return " ".join(argv)
