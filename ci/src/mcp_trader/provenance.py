"""SLSA v1 provenance (an in-toto v1 statement) for one image digest, built and read by pure code.

What a verifier learns from it (https://slsa.dev/spec/v1.0/provenance):
- `buildDefinition.externalParameters`: what the caller chose: the source repository, ref and
  commit, the service and platform, the registry and tags, the `created` time;
- `buildDefinition.resolvedDependencies`: the exact inputs: the git commit and the digest of
  every base image the build started from (rust, python, distroless, uv), as resolved by the
  engine at build time, so "which rust image built this?" has an answer even for a tag that
  moved since;
- `runDetails.builder.id`: who built it: the GitHub workflow file at its ref in Actions
  (`https://github.com/OWNER/REPO/.github/workflows/ci.yml@refs/heads/main`, the identity a
  keyless signature carries too), or `local` for a developer's machine, with the run (Actions)
  or the user (local) named in `runDetails.metadata.invocationId`.

cosign wraps the predicate in the statement and fills in the subject (`cosign attest --type
slsaprovenance1`); `statement` builds the same statement, so what is shown is what gets signed.
Two things cosign 2.6 does to it, which readers must expect: the statement layer is in-toto
`Statement/v0.1` (cosign 2 writes no other for image attestations; the SLSA v1 predicate inside
is unchanged), and the predicate is re-encoded through in-toto-golang's SLSA v1 struct, which
spells `runDetails.metadata.invocationId` as `invocationID`; `facts` reads either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from .cosign import PROVENANCE_TYPE, VerificationError
from .tags import validate_digest

#: What `cosign attest` (2.6) writes around the predicate; see the module docstring.
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v0.1"
#: The build this provenance describes: the Dagger module's publish (docs/supply-chain.md lists
#: its parameters). A URN: it names the process, it is not a page to fetch.
BUILD_TYPE: Final = "urn:mcp-trader:dagger-publish:v1"
LOCAL_BUILDER: Final = "local"

_SHA = re.compile(r"[0-9a-f]{7,40}")
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?Z")
_PINNED_IMAGE = re.compile(r"(?P<name>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})")
_IDENTITY = re.compile(r"[^\s\x00-\x1f\x7f]{1,256}")


@dataclass(frozen=True)
class Source:
    """The commit an image was built from."""

    repository: str  # https://github.com/owner/repo
    ref: str  # refs/heads/main, refs/tags/v1.2.3, refs/pull/7/merge
    commit: str  # the full sha as GitHub gives it (7 to 40 hex digits accepted)

    def __post_init__(self) -> None:
        if not _SHA.fullmatch(self.commit):
            raise ValueError(
                f"invalid commit {self.commit!r}: expected 7 to 40 lowercase hex digits"
            )
        if not self.repository.startswith("https://") or " " in self.repository:
            raise ValueError(
                f"invalid source repository {self.repository!r}: expected its https URL, "
                "e.g. https://github.com/acme/mcp-trader"
            )
        if not self.ref.startswith("refs/"):
            raise ValueError(f"invalid ref {self.ref!r}: expected a full git ref (refs/...)")


@dataclass(frozen=True)
class Builder:
    """Who ran the build: `id` (a workflow, or `local`) and this run (`invocation`)."""

    id: str
    invocation: str

    def __post_init__(self) -> None:
        for what, value in (("builder id", self.id), ("invocation", self.invocation)):
            if not _IDENTITY.fullmatch(value):
                raise ValueError(
                    f"invalid {what} {value!r}: expected 1 to 256 characters without spaces"
                )


def github_builder(
    *, server_url: str, repository: str, workflow_ref: str, run_id: str, run_attempt: str
) -> Builder:
    """The builder of a GitHub Actions run, from the runner's GITHUB_* variables.

    `workflow_ref` is GITHUB_WORKFLOW_REF (`owner/repo/.github/workflows/ci.yml@refs/heads/main`).
    """
    if not run_id.isdigit() or not run_attempt.isdigit():
        raise ValueError(
            f"invalid GitHub run {run_id!r} attempt {run_attempt!r}: expected numbers "
            "(GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT)"
        )
    if "/.github/workflows/" not in workflow_ref or "@" not in workflow_ref:
        raise ValueError(
            f"invalid workflow ref {workflow_ref!r}: expected GITHUB_WORKFLOW_REF, like "
            "acme/mcp-trader/.github/workflows/ci.yml@refs/heads/main"
        )
    server = server_url.rstrip("/")
    return Builder(
        id=f"{server}/{workflow_ref}",
        invocation=f"{server}/{repository}/actions/runs/{run_id}/attempts/{run_attempt}",
    )


def local_builder(user: str) -> Builder:
    """A build on a developer's machine: builder `local`, the user named in the invocation."""
    if not _IDENTITY.fullmatch(user):
        raise ValueError(
            f"invalid builder identity {user!r}: expected a name without spaces, e.g. "
            "alice@example.com (git config user.email)"
        )
    return Builder(id=LOCAL_BUILDER, invocation=f"local:{user}")


def predicate(
    *,
    source: Source,
    parameters: Mapping[str, Any],
    base_images: Mapping[str, str],
    builder: Builder,
    builder_version: Mapping[str, str] | None = None,
    started: str | None = None,
    finished: str | None = None,
) -> dict[str, Any]:
    """The SLSA v1 provenance predicate of one image build.

    `parameters`: the build's own choices (service, platform, registry, tags, created...);
    `base_images`: name -> the resolved `image@sha256:...` each base was pulled as.
    """
    dependencies: list[dict[str, Any]] = [
        {
            "uri": f"git+{source.repository}@{source.ref}",
            "digest": {"gitCommit": source.commit},
        }
    ]
    for name, resolved in sorted(base_images.items()):
        match = _PINNED_IMAGE.fullmatch(resolved)
        if match is None:
            raise ValueError(
                f"base image {name} resolved to {resolved!r}, not image@sha256:<digest>: "
                "provenance records only exact digests"
            )
        dependencies.append(
            {
                "name": name,
                "uri": f"oci://{match['name']}",
                "digest": {"sha256": validate_digest(match["digest"]).removeprefix("sha256:")},
            }
        )
    metadata: dict[str, Any] = {"invocationId": builder.invocation}
    for key, moment in (("startedOn", started), ("finishedOn", finished)):
        if moment is not None:
            if not _RFC3339.fullmatch(moment):
                raise ValueError(f"invalid {key} {moment!r}: expected RFC 3339 UTC (...Z)")
            metadata[key] = moment
    builder_doc: dict[str, Any] = {"id": builder.id}
    if builder_version:
        builder_doc["version"] = dict(builder_version)
    return {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "source": {
                    "repository": source.repository,
                    "ref": source.ref,
                    "commit": source.commit,
                },
                **dict(parameters),
            },
            "internalParameters": {},
            "resolvedDependencies": dependencies,
        },
        "runDetails": {"builder": builder_doc, "metadata": metadata},
    }


def statement(name: str, digest: str, provenance: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto v1 statement binding `provenance` to the image `name@digest`."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": validate_digest(digest).removeprefix("sha256:")}}
        ],
        "predicateType": PROVENANCE_TYPE,
        "predicate": dict(provenance),
    }


@dataclass(frozen=True)
class Facts:
    """What a verified provenance says, in the terms `verify` prints."""

    repository: str
    ref: str
    commit: str
    builder: str
    invocation: str
    base_images: tuple[str, ...]
    #: The platform the build parameters name (`linux/arm64`), "" when they name none.
    platform: str = ""

    def lines(self) -> list[str]:
        return [
            f"source: {self.repository} {self.ref} @ {self.commit}",
            f"builder: {self.builder} ({self.invocation})",
            *(f"base image: {image}" for image in self.base_images),
        ]


def facts(statements: Sequence[Mapping[str, Any]]) -> Facts:
    """The facts of the (last) verified provenance statement; refused when incomplete."""
    if not statements:
        raise VerificationError("no provenance statement to read")
    doc = statements[-1]
    try:
        definition = doc["predicate"]["buildDefinition"]
        source = definition["externalParameters"]["source"]
        run = doc["predicate"]["runDetails"]
        result = Facts(
            repository=str(source["repository"]),
            ref=str(source["ref"]),
            commit=str(source["commit"]),
            builder=str(run["builder"]["id"]),
            invocation=str(
                run.get("metadata", {}).get("invocationId")
                or run.get("metadata", {}).get("invocationID", "")
            ),
            base_images=tuple(
                f"{dep.get('name', '?')}: {dep['uri'].removeprefix('oci://')}"
                f"@sha256:{dep['digest']['sha256']}"
                for dep in definition.get("resolvedDependencies", [])
                if str(dep.get("uri", "")).startswith("oci://")
            ),
            platform=str(definition["externalParameters"].get("platform") or ""),
        )
    except (KeyError, TypeError) as error:
        raise VerificationError(
            f"the provenance lacks {error} (expected SLSA v1 with the source repository, ref, "
            "commit and builder)"
        ) from None
    if not _SHA.fullmatch(result.commit):
        raise VerificationError(f"the provenance names no commit (got {result.commit!r})")
    return result
