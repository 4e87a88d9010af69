"""The Dagger side of the supply chain: the tools container, SBOMs, signing and verification.

Thin adapters over the pure command lines (cosign.py) and checks (verify.py):
- `tools()`: one container holding cosign, syft and crane from their official images, each
  pinned by digest, on crane's `debug` image (the only one of the three with a shell);
- registry credentials reach it only as Secrets: a fixed wrapper (`LOGIN`) pipes the password
  secret into `crane auth login --password-stdin`, writing the docker config into a temporary
  mount that lives for that one exec, then exec's the tool; the values are never in a query,
  an argv, a layer or a log;
- every exec carries a fresh nonce, so the engine never answers a signature check or a
  registry look-up from its cache (the registry's state is what is being checked).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final

import dagger
from dagger import Doc, dag

from .cosign import (
    COSIGN_IMAGE,
    CRANE_IMAGE,
    GITHUB_ISSUER,
    SYFT_IMAGE,
    KeylessPolicy,
    KeylessSigner,
    KeyPolicy,
    KeySigner,
    PlatformManifest,
    Policy,
    Signer,
    VerificationError,
    config_platform,
    parse_reference,
    sbom_argv,
    sign_argv,
)
from .errors import JobFailedError, describe, run_all
from .labels import PREFIX as LABEL_PREFIX
from .provenance import LOCAL_BUILDER, Builder, Source, local_builder, predicate
from .publish import PublishError, PublishPlan, PushStep
from .verify import (
    Result,
    Runner,
    Verified,
    VerifiedIndex,
    platform_manifests,
    resolve,
    sign_steps,
    verify_image,
)

BIN: Final = "/usr/local/bin"
SHELL: Final = "/busybox/sh"
#: Where secrets and inputs are mounted in the tools container.
KEY_FILE: Final = "/run/cosign/cosign.key"
PUBLIC_KEY_FILE: Final = "/run/cosign/cosign.pub"
PROVENANCE_FILE: Final = "/in/provenance.json"
SBOM_FILE: Final = "/in/sbom.spdx.json"
IMAGE_TARBALL: Final = "/in/image.tar"
SBOM_OUT: Final = "/out/sbom.spdx.json"
DOCKER_CONFIG: Final = "/run/docker"
#: Log in from the secret env vars, then run the tool given as arguments. Fixed text: no value
#: is ever interpolated into it; the tool's argv follows as positional parameters.
LOGIN: Final = (
    'printf %s "$REGISTRY_PASSWORD" | crane auth login "$REGISTRY_HOST" '
    '--username "$REGISTRY_USERNAME" --password-stdin >/dev/null && exec "$@"'
)


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry host, the password as a Secret."""

    host: str
    username: str
    password: dagger.Secret


def tools() -> dagger.Container:
    """cosign, syft and crane (official images, pinned by digest) with a busybox shell."""
    return (
        dag.container()
        .from_(CRANE_IMAGE)
        .with_file(f"{BIN}/cosign", dag.container().from_(COSIGN_IMAGE).file("/ko-app/cosign"))
        .with_file(f"{BIN}/syft", dag.container().from_(SYFT_IMAGE).file("/syft"))
        .with_file(f"{BIN}/crane", dag.container().from_(CRANE_IMAGE).file("/ko-app/crane"))
        .with_env_variable("PATH", f"{BIN}:/busybox:/ko-app")
        .with_env_variable("HOME", "/tmp")  # noqa: S108 - the container's own, nothing shared
        .with_env_variable("DOCKER_CONFIG", DOCKER_CONFIG)
        .with_env_variable("SYFT_CHECK_FOR_APP_UPDATE", "false")
        .with_env_variable("COSIGN_YES", "true")
    )


def with_auth(ctr: dagger.Container, auth: RegistryAuth | None) -> dagger.Container:
    """The login's inputs: host and user as plain values, the password as a secret variable."""
    if auth is None:
        return ctr
    return (
        ctr.with_env_variable("REGISTRY_HOST", auth.host)
        .with_env_variable("REGISTRY_USERNAME", auth.username)
        .with_secret_variable("REGISTRY_PASSWORD", auth.password)
    )


def wrapped(argv: list[str], auth: RegistryAuth | None) -> list[str]:
    """The argv as run in the tools container: behind the login wrapper when there is a login."""
    return argv if auth is None else [SHELL, "-c", LOGIN, "login", *argv]


def runner(base: dagger.Container, auth: RegistryAuth | None = None) -> Runner:
    """A `Runner` that runs each argv in `base` (the tools container plus mounted inputs)."""
    prepared = with_auth(base, auth).with_mounted_temp(DOCKER_CONFIG)

    async def run(argv: list[str]) -> Result:
        done = prepared.with_env_variable("MCP_TRADER_NONCE", uuid.uuid4().hex).with_exec(
            wrapped(argv, auth), expect=dagger.ReturnType.ANY
        )
        return Result(await done.exit_code(), await done.stdout(), await done.stderr())

    return run


def with_signer(
    ctr: dagger.Container,
    signer: Signer,
    *,
    key: dagger.Secret | None = None,
    key_password: dagger.Secret | None = None,
    oidc_request_url: dagger.Secret | None = None,
    oidc_request_token: dagger.Secret | None = None,
) -> dagger.Container:
    """The signer's secrets, mounted or in secret variables (cosign reads them from there)."""
    if isinstance(signer, KeySigner):
        if key is None:
            raise ValueError("a key signer needs its private key secret")
        ctr = ctr.with_mounted_secret(KEY_FILE, key)
        if key_password is not None:
            return ctr.with_secret_variable("COSIGN_PASSWORD", key_password)
        return ctr.with_env_variable("COSIGN_PASSWORD", "")
    if oidc_request_url is None or oidc_request_token is None:
        raise ValueError(
            "keyless signing needs the GitHub OIDC request URL and token (--oidc-request-url "
            "env://ACTIONS_ID_TOKEN_REQUEST_URL --oidc-request-token "
            "env://ACTIONS_ID_TOKEN_REQUEST_TOKEN, with `id-token: write` on the job)"
        )
    # cosign's GitHub provider fetches the workflow's identity token with these two.
    return ctr.with_secret_variable(
        "ACTIONS_ID_TOKEN_REQUEST_URL", oidc_request_url
    ).with_secret_variable("ACTIONS_ID_TOKEN_REQUEST_TOKEN", oidc_request_token)


def signer_for(key: dagger.Secret | None) -> Signer:
    """A key signer when a key is given, keyless otherwise."""
    return KeySigner(KEY_FILE) if key is not None else KeylessSigner()


# The verification policy's flags, written once: `verify` and `server ... deploy|rollback`
# take them (main.py, server.py).
PublicKey = Annotated[dagger.File | None, Doc("cosign public key the images were signed with.")]
CertificateIdentity = Annotated[
    str | None,
    Doc(
        "Keyless: the signing workflow, e.g. https://github.com/O/R/.github/workflows/ci.yml@refs/heads/main."
    ),
]
CertificateIdentityRegexp = Annotated[
    str | None, Doc("Keyless: a regular expression the signing workflow must match.")
]
CertificateOidcIssuer = Annotated[
    str, Doc("Keyless: the OIDC issuer (GitHub Actions' by default).")
]
ExpectedRepository = Annotated[
    str | None, Doc("Refuse unless the provenance names this source, https://github.com/O/R.")
]
AllowUnsigned = Annotated[
    bool,
    Doc(
        "Escape hatch: deploy without verifying signatures (still pinned by digest); the "
        "server's deployments.log records it as unsigned."
    ),
]


def policy_for(
    *,
    public_key: dagger.File | None,
    certificate_identity: str | None,
    certificate_identity_regexp: str | None,
    certificate_oidc_issuer: str,
) -> Policy:
    """One policy from verify's flags: a public key, or a keyless identity (exact or regexp)."""
    given = [
        flag
        for flag, value in (
            ("--public-key", public_key),
            ("--certificate-identity", certificate_identity),
            ("--certificate-identity-regexp", certificate_identity_regexp),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError(
            "give exactly one of --public-key, --certificate-identity or "
            f"--certificate-identity-regexp (got {', '.join(given) or 'none'}): the key that "
            "signed, or the workflow identity of a keyless signature, e.g. "
            "https://github.com/OWNER/REPO/.github/workflows/ci.yml@refs/heads/main"
        )
    if public_key is not None:
        return KeyPolicy(PUBLIC_KEY_FILE)
    if certificate_identity is not None:
        return KeylessPolicy(certificate_identity, certificate_oidc_issuer)
    assert certificate_identity_regexp is not None
    return KeylessPolicy(certificate_identity_regexp, certificate_oidc_issuer, identity_regexp=True)


def deploy_policy(
    *,
    allow_unsigned: bool,
    public_key: dagger.File | None,
    certificate_identity: str | None,
    certificate_identity_regexp: str | None,
    certificate_oidc_issuer: str = GITHUB_ISSUER,
) -> Policy | None:
    """The policy a deploy verifies its images under; None for `--allow-unsigned`.

    There is no default trust anchor: the repository's own keyless identity cannot be known
    reliably from here, and a deploy that silently skipped verification would defeat it.
    """
    anchors = (public_key, certificate_identity, certificate_identity_regexp)
    if allow_unsigned:
        if any(a is not None for a in anchors):
            raise ValueError(
                "--allow-unsigned deploys without verifying: give it alone, or drop it and keep "
                "--public-key / --certificate-identity(-regexp)"
            )
        return None
    if all(a is None for a in anchors):
        raise ValueError(
            "deploy verifies every image before connecting to the server and needs to know whom "
            "to trust: give --public-key cosign.pub (key-signed images), or "
            "--certificate-identity(-regexp) with --certificate-oidc-issuer (keyless, e.g. "
            "https://github.com/OWNER/REPO/.github/workflows/ci.yml@refs/heads/main and "
            f"{GITHUB_ISSUER}), or --allow-unsigned to deploy unverified images (recorded)"
        )
    return policy_for(
        public_key=public_key,
        certificate_identity=certificate_identity,
        certificate_identity_regexp=certificate_identity_regexp,
        certificate_oidc_issuer=certificate_oidc_issuer,
    )


def verifier(
    policy: Policy | None, public_key: dagger.File | None, auth: RegistryAuth | None = None
) -> Runner:
    """The runner verification uses: the tools plus the public key (key policies); with no
    policy (`--allow-unsigned`), the tools alone, to resolve digests."""
    ctr = tools()
    if isinstance(policy, KeyPolicy):
        assert public_key is not None
        ctr = ctr.with_mounted_file(PUBLIC_KEY_FILE, public_key)
    return runner(ctr, auth)


async def verify(
    image: str,
    policy: Policy,
    public_key: dagger.File | None,
    auth: RegistryAuth | None = None,
    expected_repository: str | None = None,
) -> Verified | VerifiedIndex:
    """Resolve, then check signature, provenance and SBOM of `image`, of every platform of an
    index (verify.py)."""
    parse_reference(image)
    return await verify_image(
        verifier(policy, public_key, auth), image, policy, expected_repository=expected_repository
    )


async def digest(image: str, auth: RegistryAuth | None = None) -> str | None:
    """The digest a tag names in its registry, or None when the registry has no such tag."""
    try:
        return await resolve(runner(tools(), auth), image)
    except VerificationError as error:
        if _not_found(str(error)):
            return None
        raise


def _not_found(message: str) -> bool:
    lowered = message.lower()
    return "manifest_unknown" in lowered or "not found" in lowered or "name_unknown" in lowered


def sbom(container: dagger.Container, *, name: str, version: str | None = None) -> dagger.File:
    """syft's SPDX 2.3 JSON SBOM of `container`, from the image itself (its OCI tarball)."""
    scan = (
        tools()
        .with_mounted_file(IMAGE_TARBALL, container.as_tarball())
        .with_directory("/out", dag.directory())
        .with_exec(sbom_argv(f"oci-archive:{IMAGE_TARBALL}", SBOM_OUT, name=name, version=version))
    )
    return scan.file(SBOM_OUT)


async def sign_and_attest(
    image: str,
    *,
    signer: Signer,
    provenance: Mapping[str, Any],
    sbom_file: dagger.File,
    auth: RegistryAuth,
    key: dagger.Secret | None = None,
    key_password: dagger.Secret | None = None,
    oidc_request_url: dagger.Secret | None = None,
    oidc_request_token: dagger.Secret | None = None,
) -> list[str]:
    """Sign `image` (one image manifest, pinned by digest), then attach provenance and SBOM;
    stops at a failure.

    Returns the names of the steps done; a failing step raises `SigningError` naming it.
    """
    base = (
        tools()
        .with_new_file(PROVENANCE_FILE, json.dumps(provenance, indent=2, sort_keys=True))
        .with_mounted_file(SBOM_FILE, sbom_file)
    )
    steps = sign_steps(image, signer, provenance_file=PROVENANCE_FILE, sbom_file=SBOM_FILE)
    return await _run_signing(
        base,
        steps,
        image,
        signer,
        auth,
        key=key,
        key_password=key_password,
        oidc_request_url=oidc_request_url,
        oidc_request_token=oidc_request_token,
    )


async def sign_index(
    image: str, *, signer: Signer, auth: RegistryAuth, **secrets: dagger.Secret | None
) -> list[str]:
    """Sign a multi-platform index (pinned by digest): its signature only, no attestation
    (those are per platform manifest, `sign_and_attest`). `secrets`: as `sign_and_attest`'s."""
    steps = [("sign index", sign_argv(image, signer))]
    return await _run_signing(tools(), steps, image, signer, auth, **secrets)


async def _run_signing(
    base: dagger.Container,
    steps: Sequence[tuple[str, list[str]]],
    image: str,
    signer: Signer,
    auth: RegistryAuth,
    **secrets: dagger.Secret | None,
) -> list[str]:
    run = runner(with_signer(base, signer, **secrets), auth)
    done: list[str] = []
    for step, argv in steps:
        result = await run(argv)
        if result.exit_code != 0:
            output = (result.stderr or result.stdout).strip().splitlines()
            raise SigningError(
                f"{step} of {image} failed (exit {result.exit_code}): "
                f"{output[-1] if output else 'cosign gave no reason'}"
            )
        done.append(step)
    return done


class SigningError(Exception):
    """cosign could not sign or attest a pushed digest."""


async def resolved_base(image: str, platform: dagger.Platform | None = None) -> str:
    """`image` as the engine resolves it now: `name:tag@sha256:...` (for provenance)."""
    return await dag.container(platform=platform).from_(image).image_ref()


# ---------------------------------------------------------------------------------------------
# What `publish` asks of the supply chain


def base_images() -> dict[str, dict[str, tuple[str, bool]]]:
    """service -> base name -> (image, resolved for the target platform?) for provenance.

    The builders' own constants, so a bumped base is recorded without a second edit here. The
    Rust image runs on the engine's platform (cross-compiling); the others are the target's.
    """
    from . import gateway, provider

    return {
        "binance-provider": {
            "rust": (provider.RUST_IMAGE, False),
            "distroless": (provider.RUNTIME_IMAGE, True),
        },
        "mcp-gateway": {
            "python": (gateway.PYTHON_IMAGE, True),
            "uv": (gateway.UV_IMAGE, False),
        },
    }


@dataclass(frozen=True)
class SigningConfig:
    """How `publish` signs: a key pair's private key, or keyless with GitHub's OIDC request."""

    key: dagger.Secret | None = None
    key_password: dagger.Secret | None = None
    oidc_request_url: dagger.Secret | None = None
    oidc_request_token: dagger.Secret | None = None

    def __post_init__(self) -> None:
        keyless = self.oidc_request_url is not None or self.oidc_request_token is not None
        if self.key is not None and keyless:
            raise ValueError(
                "give either --signing-key (a cosign key pair's private key) or the GitHub "
                "OIDC request (--oidc-request-url/--oidc-request-token) to sign, not both"
            )
        if keyless and (self.oidc_request_url is None or self.oidc_request_token is None):
            raise ValueError(
                "keyless signing needs both --oidc-request-url env://ACTIONS_ID_TOKEN_REQUEST_URL "
                "and --oidc-request-token env://ACTIONS_ID_TOKEN_REQUEST_TOKEN"
            )
        if self.key is None and not keyless:
            raise ValueError(
                "publish signs every image: pass --signing-key file://cosign.key (with "
                "--signing-key-password) or, in GitHub Actions, --oidc-request-url "
                "env://ACTIONS_ID_TOKEN_REQUEST_URL --oidc-request-token "
                "env://ACTIONS_ID_TOKEN_REQUEST_TOKEN (the job needs `id-token: write`); "
                "--unsigned publishes without signatures"
            )

    @property
    def signer(self) -> Signer:
        return signer_for(self.key)


def signing_config(
    *,
    unsigned: bool,
    key: dagger.Secret | None,
    key_password: dagger.Secret | None,
    oidc_request_url: dagger.Secret | None,
    oidc_request_token: dagger.Secret | None,
) -> SigningConfig | None:
    """The signing flags of `publish`/`ci`, checked; None only for an explicit `--unsigned`."""
    given = [key, key_password, oidc_request_url, oidc_request_token]
    if unsigned:
        if any(value is not None for value in given):
            raise ValueError("--unsigned contradicts the signing flags given with it: drop one")
        return None
    return SigningConfig(key, key_password, oidc_request_url, oidc_request_token)


@dataclass
class SupplyChain:
    """The supply-chain steps of one publish (publish.py step 5), for one commit."""

    signing: SigningConfig | None
    auth: RegistryAuth
    source: Source
    builder: Builder
    parameters: Mapping[str, Any]

    async def existing(self, plan: PublishPlan) -> dict[str, str]:
        """service -> the digest its existing immutable tags name (absent: nothing exists yet).

        Refuses when those tags disagree, or name a build of another commit: an immutable tag
        never moves. A build of this same commit is kept (a re-run, or a release tag on a commit
        main already published), even when the new build differs in non-reproducible bits.
        """
        kept: dict[str, str] = {}
        for service, image in plan.images.items():
            steps = [s for s in plan.immutable if s.service == service]
            found = {s.tag: await digest(s.address, self.auth) for s in steps}
            present = {tag: d for tag, d in found.items() if d is not None}
            if not present:
                continue
            if len(set(present.values())) > 1:
                listed = ", ".join(f"{image}:{t} -> {d}" for t, d in present.items())
                raise PublishError(
                    f"the immutable tags of {image} already point at different digests ({listed}):"
                    " refusing to publish over them; nothing was built or pushed"
                )
            existing_digest = next(iter(present.values()))
            pinned = f"{image}@{existing_digest}"
            manifests = await self._listed(pinned)
            # An index's revision is read from a platform it has (any: one commit built all).
            config = await self._config(pinned, manifests[0].platform if manifests else None)
            revision = _label(config, f"{LABEL_PREFIX}revision")
            wanted = plan.labels[f"{LABEL_PREFIX}revision"]
            tags = ", ".join(present)
            if not revision or not (revision.startswith(wanted) or wanted.startswith(revision)):
                raise PublishError(
                    f"{image}:{tags} already exists ({existing_digest}) and was built from commit "
                    f"{revision or 'unknown'}, not {wanted}: an immutable tag never changes "
                    "digest; publish a new version instead. Nothing was built or pushed"
                )
            has = tuple(m.platform for m in manifests) if manifests else (config_platform(config),)
            if sorted(has) != sorted(plan.platforms):
                raise PublishError(
                    f"{image}:{tags} already exists ({existing_digest}) for "
                    f"{', '.join(has) or 'an unknown platform'}, and this publish asks for "
                    f"{', '.join(plan.platforms)}: an immutable tag never changes digest; "
                    "publish this commit with the platforms it has, or the new set as a new "
                    "version. Nothing was built or pushed"
                )
            kept[service] = existing_digest
        return kept

    async def _config(self, image: str, platform: str | None) -> str:
        """`crane config` of `image` (of `platform`'s manifest when it is an index)."""
        chosen = ["--platform", platform] if platform else []
        result = await runner(tools(), self.auth)(["crane", "config", *chosen, image])
        if result.exit_code != 0:
            raise PublishError(
                f"cannot read the config of {image}: {(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    async def _listed(self, pinned: str) -> tuple[PlatformManifest, ...] | None:
        """The platform manifests of the index `pinned` names (None: one image manifest)."""
        try:
            return await platform_manifests(runner(tools(), self.auth), pinned)
        except VerificationError as error:
            raise PublishError(str(error)) from None

    async def retag(self, step: PushStep, existing: str) -> str:
        """Point `step`'s tag at the kept digest (`crane tag`: the manifest as is, no re-push)."""
        result = await runner(tools(), self.auth)(
            ["crane", "tag", f"{step.image}@{existing}", step.tag]
        )
        if result.exit_code != 0:
            raise RuntimeError((result.stderr or result.stdout).strip() or "crane tag failed")
        return f"{step.address}@{existing}"

    async def sign_all(
        self,
        plan: PublishPlan,
        digests: Mapping[str, str],
        variants: Mapping[str, list[dagger.Container]],
    ) -> None:
        """Sign each image and attach its provenance and SBOM (both services, in order).

        One platform: the pushed digest is the image manifest. Several: the pushed digest is
        an index; each platform manifest it lists is signed and attested, concurrently, with
        its own SBOM (from that platform's build) and provenance (that platform's bases), and
        the index is signed last, once every platform is done. cosign's `sign --recursive`
        would sign the same digests, but attestations cannot recurse (each platform has its
        own), so every digest is signed by its own command: what runs is one argv per digest,
        the same ones tests/supply runs with the real tool.
        """
        if self.signing is None:
            return
        for service, image in plan.images.items():
            pinned = f"{image}@{digests[service]}"
            built = dict(zip(plan.platforms, variants[service], strict=True))
            if len(plan.platforms) == 1:
                [(platform, container)] = built.items()
                await self._sign_manifest(plan, service, image, pinned, platform, container)
                continue
            listed = await self._listed(pinned)
            if listed is None or sorted(m.platform for m in listed) != sorted(plan.platforms):
                has = ", ".join(m.platform for m in listed) if listed else "one image manifest"
                raise SigningError(
                    f"{pinned} was pushed for {', '.join(plan.platforms)} but the registry "
                    f"lists {has} under it: nothing of {service} was signed"
                )
            jobs = {
                f"{service} {m.platform} ({m.digest})": functools.partial(
                    self._sign_manifest,
                    plan,
                    service,
                    image,
                    f"{image}@{m.digest}",
                    m.platform,
                    built[m.platform],
                )
                for m in listed
            }
            try:
                await run_all(jobs)
            except JobFailedError as failed:
                named = "; ".join(f"{name}: {describe(e)}" for name, e in failed.failures.items())
                raise SigningError(f"{named}; the index {pinned} was not signed") from failed
            await sign_index(pinned, signer=self.signing.signer, auth=self.auth, **self._secrets())

    async def _sign_manifest(
        self,
        plan: PublishPlan,
        service: str,
        image: str,
        pinned: str,
        platform: str,
        container: dagger.Container,
    ) -> list[str]:
        assert self.signing is not None
        return await sign_and_attest(
            pinned,
            signer=self.signing.signer,
            provenance=await self.provenance(service, image, platform),
            sbom_file=sbom(container, name=image, version=plan.tags[0].name),
            auth=self.auth,
            **self._secrets(),
        )

    def _secrets(self) -> dict[str, dagger.Secret | None]:
        assert self.signing is not None
        return {
            "key": self.signing.key,
            "key_password": self.signing.key_password,
            "oidc_request_url": self.signing.oidc_request_url,
            "oidc_request_token": self.signing.oidc_request_token,
        }

    async def provenance(self, service: str, image: str, platform: str) -> dict[str, Any]:
        """The SLSA v1 predicate of `service` built for `platform` (bases resolved now)."""
        bases = {
            name: await resolved_base(ref, dagger.Platform(platform) if on_target else None)
            for name, (ref, on_target) in base_images()[service].items()
        }
        return predicate(
            source=self.source,
            parameters={
                **self.parameters,
                "service": service,
                "image": image,
                "platform": platform,
            },
            base_images=bases,
            builder=self.builder,
            builder_version={"dagger": await dag.version()},
        )


def _label(config: str, name: str) -> str:
    """One label of the image config `crane config` printed ("" when absent or unreadable)."""
    try:
        labels = json.loads(config).get("config", {}).get("Labels") or {}
    except (ValueError, AttributeError):
        return ""
    return str(labels.get(name, ""))


def supply_chain(
    *,
    signing: SigningConfig | None,
    registry: str,
    username: str,
    password: dagger.Secret,
    repository: str,
    sha: str,
    ref: str,
    builder_id: str,
    invocation: str,
    parameters: Mapping[str, Any],
) -> SupplyChain:
    """The supply-chain side of one publish, every input checked before any query.

    `builder_id` is `local` on a developer's machine (the invocation then names the registry
    user, unless given) or the GitHub workflow (`$GITHUB_SERVER_URL/$GITHUB_WORKFLOW_REF`) with
    the run as invocation (`.../actions/runs/$GITHUB_RUN_ID/attempts/$GITHUB_RUN_ATTEMPT`).
    """
    from .tags import github_source_url

    builder = (
        local_builder(username)
        if builder_id == LOCAL_BUILDER and not invocation
        else Builder(builder_id, invocation or f"local:{username}")
    )
    return SupplyChain(
        signing=signing,
        auth=RegistryAuth(registry, username, password),
        source=Source(github_source_url(repository), ref, sha.lower()),
        builder=builder,
        parameters=dict(parameters),
    )


@dataclass(frozen=True)
class SigningFlags:
    """The signing and provenance flags of `ci`, passed through to its publish stage."""

    unsigned: bool = False
    key: dagger.Secret | None = None
    key_password: dagger.Secret | None = None
    oidc_request_url: dagger.Secret | None = None
    oidc_request_token: dagger.Secret | None = None
    builder_id: str = LOCAL_BUILDER
    invocation: str = ""

    def config(self) -> SigningConfig | None:
        return signing_config(
            unsigned=self.unsigned,
            key=self.key,
            key_password=self.key_password,
            oidc_request_url=self.oidc_request_url,
            oidc_request_token=self.oidc_request_token,
        )


def registry_auth(
    image: str, username: str | None, password: dagger.Secret | None
) -> RegistryAuth | None:
    """Credentials for `image`'s registry, or None (public images); both or neither."""
    if (username is None) != (password is None):
        raise ValueError(
            "give both --registry-username and --registry-password (or neither, for public images)"
        )
    if username is None or password is None:
        return None
    return RegistryAuth(parse_reference(image).registry, username, password)
