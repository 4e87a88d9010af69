"""Verifying an image: its signature, its provenance and its SBOM, under one policy.

The order of checks, each a cosign or crane command from cosign.py run by a `Runner` (the
module's tools container in Dagger, a subprocess in the tests: the same argv either way):

1. resolve the reference to one digest (`crane digest`) and read what it names (`crane
   manifest`): one image, or a multi-platform index (below);
2. the signature of that digest (`cosign verify`);
3. the SLSA provenance attestation (`cosign verify-attestation --type slsaprovenance1`): signed
   under the same policy and about the same digest; its source commit must agree with a
   `sha-<hex>` tag the image was asked for by, and its repository with the expected one;
4. the SBOM attestation (`--type spdxjson`), likewise; its package counts are reported.

Each refusal raises `VerificationError` naming the check, the digest and the policy; the
report of a success names the digest, the signer, the source commit, the builder and the
SBOM's contents.

A multi-platform reference (the digest is an index, `crane manifest`) is verified as publish
signs it: the index's own signature, then steps 2-4 for every platform manifest it lists, each
on that manifest's digest (cosign has no recursive verify: `cosign verify` of an index checks
the index's signature only). Every platform is checked even after one fails, and the refusal
lists each failure by platform and digest; the platforms' provenance must name one source
commit, and each its own platform.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from . import provenance as _provenance
from . import sbom as _sbom
from .cosign import (
    PROVENANCE_TYPE,
    SBOM_TYPE,
    PlatformManifest,
    Policy,
    Signature,
    Signer,
    VerificationError,
    attest_argv,
    describe_failure,
    digest_argv,
    manifest_argv,
    parse_attestations,
    parse_digest,
    parse_manifest,
    parse_reference,
    parse_signatures,
    sign_argv,
    verify_argv,
    verify_attestation_argv,
)

_SHA_TAG = re.compile(r"sha-(?P<hex>[0-9a-f]{7,40})")


@dataclass(frozen=True)
class Result:
    """What a command did: its exit code and output."""

    exit_code: int
    stdout: str
    stderr: str


Runner = Callable[[list[str]], Awaitable[Result]]
"""Runs one argv (cosign or crane) and returns its result; never raises for a non-zero exit."""


@dataclass(frozen=True)
class Verified:
    """An image that passed every check, and what the checks established."""

    reference: str
    repository: str
    digest: str
    signatures: tuple[Signature, ...]
    provenance: _provenance.Facts
    sbom: _sbom.Summary
    policy: str

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"

    def report(self) -> str:
        lines = [
            f"verified {self.reference}",
            f"digest: {self.digest}",
            f"policy: {self.policy}",
            *self.details(),
        ]
        return "\n".join(lines)

    def details(self) -> list[str]:
        """Signer, provenance and SBOM lines (the report without its heading)."""
        return [
            f"signer: {_signers(self.signatures)}",
            *self.provenance.lines(),
            f"sbom: {self.sbom.line()}",
        ]


@dataclass(frozen=True)
class VerifiedIndex:
    """A multi-platform index that passed: its own signature, and every platform's checks."""

    reference: str
    repository: str
    digest: str
    signatures: tuple[Signature, ...]
    #: platform -> what its manifest's checks established, in the index's order.
    platforms: tuple[tuple[str, Verified], ...]
    policy: str

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"

    @property
    def provenance(self) -> _provenance.Facts:
        """The source every platform was built from (checked to be one commit)."""
        return self.platforms[0][1].provenance

    def report(self) -> str:
        lines = [
            f"verified {self.reference}",
            f"digest: {self.digest} (index of {', '.join(p for p, _ in self.platforms)})",
            f"policy: {self.policy}",
            f"index signer: {_signers(self.signatures)}",
        ]
        for platform, verified in self.platforms:
            lines.append(f"platform {platform}: {verified.digest}")
            lines.extend(f"  {line}" for line in verified.details())
        return "\n".join(lines)


def _signers(signatures: Sequence[Signature]) -> str:
    return ", ".join(
        sorted({s.signer + (f" ({s.issuer})" if s.issuer else "") for s in signatures})
    )


async def resolve(run: Runner, image: str) -> str:
    """The digest `image` names in its registry (the digest itself when already pinned)."""
    ref = parse_reference(image)
    result = await run(digest_argv(image))
    if result.exit_code != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise VerificationError(
            f"cannot resolve {image} in its registry: {reason[-1] if reason else 'crane failed'}"
        )
    digest = parse_digest(result.stdout, image)
    if ref.digest is not None and digest != ref.digest:
        raise VerificationError(
            f"{image} is pinned to {ref.digest} but the registry serves {digest}"
        )
    return digest


async def verify_image(
    run: Runner,
    image: str,
    policy: Policy,
    *,
    expected_repository: str | None = None,
) -> Verified | VerifiedIndex:
    """Check `image` under `policy`; returns what was verified or raises `VerificationError`.

    An index is checked as a whole: its signature and every platform manifest it lists.
    """
    ref = parse_reference(image)
    digest = await resolve(run, image)
    pinned = ref.pinned(digest)
    listed = await platform_manifests(run, pinned)
    if listed is None:
        return await _verify_manifest(run, image, digest, policy, expected_repository)
    failures: list[str] = []
    signatures: list[Signature] = []
    try:
        signatures = await _signatures(run, pinned, digest, policy, step="index signature check")
    except VerificationError as error:
        failures.append(f"index {digest}: {error}")
    platforms: list[tuple[str, Verified]] = []
    for manifest in listed:
        try:
            verified = await _verify_manifest(
                run, image, manifest.digest, policy, expected_repository, manifest.platform
            )
        except VerificationError as error:
            failures.append(f"{manifest.platform} {manifest.digest}: {error}")
            continue
        platforms.append((manifest.platform, verified))
    commits = {v.provenance.commit for _, v in platforms}
    if not failures and len(commits) > 1:
        built = ", ".join(f"{p} from {v.provenance.commit}" for p, v in platforms)
        failures.append(f"its platforms were built from different commits ({built})")
    if failures:
        raise VerificationError(
            f"refusing {image}: the index {pinned} of "
            f"{', '.join(m.platform for m in listed)} failed verification:\n"
            + "\n".join(f"- {failure}" for failure in failures)
        )
    return VerifiedIndex(
        reference=image,
        repository=ref.repository,
        digest=digest,
        signatures=tuple(signatures),
        platforms=tuple(platforms),
        policy=policy.describe(),
    )


async def platform_manifests(run: Runner, pinned: str) -> tuple[PlatformManifest, ...] | None:
    """The platform manifests of the index `pinned` names; None when it is one image."""
    result = await run(manifest_argv(pinned))
    if result.exit_code != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise VerificationError(
            f"cannot read the manifest of {pinned}: {reason[-1] if reason else 'crane failed'}"
        )
    return parse_manifest(result.stdout, pinned)


async def _checked(run: Runner, step: str, argv: list[str], pinned: str, policy: Policy) -> str:
    result = await run(argv)
    if result.exit_code != 0:
        raise VerificationError(
            describe_failure(step, pinned, result.stderr or result.stdout, policy)
        )
    return result.stdout


async def _signatures(
    run: Runner, pinned: str, digest: str, policy: Policy, *, step: str = "signature check"
) -> list[Signature]:
    return parse_signatures(
        await _checked(run, step, verify_argv(pinned, policy), pinned, policy), digest, policy
    )


async def _verify_manifest(
    run: Runner,
    image: str,
    digest: str,
    policy: Policy,
    expected_repository: str | None,
    platform: str | None = None,
) -> Verified:
    """Signature, provenance and SBOM of one image manifest `digest` (of `image`'s repository);
    `platform` is the one an index lists it for, which its provenance must name."""
    ref = parse_reference(image)
    pinned = ref.pinned(digest)
    signatures = await _signatures(run, pinned, digest, policy)
    provenance_docs = parse_attestations(
        await _checked(
            run,
            "provenance attestation check",
            verify_attestation_argv(pinned, PROVENANCE_TYPE, policy),
            pinned,
            policy,
        ),
        digest,
        PROVENANCE_TYPE,
    )
    facts = _provenance.facts(provenance_docs)
    check_source(ref.tag, facts, expected_repository, pinned)
    if platform is not None and facts.platform and facts.platform != platform:
        raise VerificationError(
            f"{pinned} is listed for {platform} but its provenance says it was built for "
            f"{facts.platform}: refusing a mislabelled platform"
        )
    sbom_docs = parse_attestations(
        await _checked(
            run,
            "SBOM attestation check",
            verify_attestation_argv(pinned, SBOM_TYPE, policy),
            pinned,
            policy,
        ),
        digest,
        SBOM_TYPE,
    )
    try:
        summary = _sbom.summarize(sbom_docs[-1].get("predicate"))
    except _sbom.SbomError as error:
        raise VerificationError(
            f"the SBOM attestation of {pinned} is unreadable: {error}"
        ) from None
    return Verified(
        reference=image,
        repository=ref.repository,
        digest=digest,
        signatures=tuple(signatures),
        provenance=facts,
        sbom=summary,
        policy=policy.describe(),
    )


def check_source(
    tag: str | None, facts: _provenance.Facts, expected_repository: str | None, image: str
) -> None:
    """The provenance must be about the commit a `sha-` tag names and the expected repository."""
    match = _SHA_TAG.fullmatch(tag or "")
    if match is not None and not facts.commit.startswith(match["hex"]):
        raise VerificationError(
            f"{image} was asked for as {tag} but its provenance says it was built from commit "
            f"{facts.commit}: refusing a mismatching image"
        )
    if expected_repository is not None and facts.repository.rstrip(
        "/"
    ) != expected_repository.rstrip("/"):
        raise VerificationError(
            f"{image} was built from {facts.repository}, not {expected_repository}: refusing it"
        )


def sign_steps(
    image: str, signer: Signer, *, provenance_file: str, sbom_file: str
) -> Sequence[tuple[str, list[str]]]:
    """What publish runs for one pushed image manifest, in order: sign, then both attestations.

    For a multi-platform index these run for every platform manifest, and then the index is
    signed (`sign_argv`) and nothing else: a provenance and an SBOM describe one platform's
    image. Signing the index last means its signature is only there once every platform is.
    """
    return (
        ("sign", sign_argv(image, signer)),
        ("attest provenance", attest_argv(image, provenance_file, PROVENANCE_TYPE, signer)),
        ("attest SBOM", attest_argv(image, sbom_file, SBOM_TYPE, signer)),
    )


@dataclass(frozen=True)
class Pin:
    """What a deploy pins for one service: `TAG@sha256:...` and how it was checked."""

    service: str
    tag: str
    digest: str
    #: "verified" after `verify_image` passed; "unsigned" only with an explicit escape hatch.
    signature: str
    verified: Verified | VerifiedIndex | None = None

    @property
    def value(self) -> str:
        """The server script's form (`--tag`, `.env`): the tag for people, the digest for pulls."""
        return f"{self.tag}@{self.digest}"


async def pins_for_deploy(
    run: Runner,
    images: dict[str, str],
    policy: Policy | None,
    *,
    expected_repository: str | None = None,
) -> dict[str, Pin]:
    """service -> its pin, every image resolved and (unless `policy` is None) verified first.

    `images` maps each service to `repository:tag`. Nothing is returned unless every image
    passed, so a deploy that uses these pins changes nothing on the server after a refusal;
    `policy=None` is `--allow-unsigned`: resolved by digest, recorded as unsigned.
    """
    pins: dict[str, Pin] = {}
    for service, image in images.items():
        ref = parse_reference(image)
        if ref.tag is None or ref.digest is not None:
            raise ValueError(f"deploy takes {service} as repository:tag, got {image!r}")
        if policy is None:
            pins[service] = Pin(service, ref.tag, await resolve(run, image), "unsigned")
            continue
        verified = await verify_image(run, image, policy, expected_repository=expected_repository)
        pins[service] = Pin(service, ref.tag, verified.digest, "verified", verified)
    return pins
