"""The `ci` function: what GitHub Actions runs (`dagger call ci ...`), and what a developer can run.

Order of work:

1. Decide, from the ref alone and before any query, whether this run publishes (`decide`): a push
   to the default branch or a release tag (`refs/tags/v*`) publishes; a pull request, any other
   branch or any other tag is tested and built only. When it publishes, every publish input
   (repository, tags, username, credentials) is validated now, so bad input fails before any work.
2. Run the test suite and both image builds concurrently: all three are issued before any is
   awaited, and every failure is reported, each under its stage name.
3. Publish the very images just built (the publish helper's order and retry rules), or say why not.

A failure raises `CiError` whose message starts with the stage (`test`, each service's
`build <short>` from services.py, `publish`) followed by the underlying error; the stages run in
an anyio task group (`errors.run_all`) and exception groups are unwrapped, so the user reads the
compiler's or the registry's own message.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import dagger

from .errors import JobFailedError, run_all
from .errors import describe as describe_error
from .publish import Builder, format_created, plan_publish, publish_images, validate_created
from .services import SERVICES
from .supply import SigningFlags, SupplyChain, supply_chain
from .tags import (
    github_source_url,
    image_tags,
    parse_ref,
    short_sha_tag,
    validate_branch,
    validate_registry_username,
)

#: A stage of the run: "test", a service's `stage` ("build provider", ...), or "publish".
Stage = str
#: Release tags: what `on.push.tags` in .github/workflows/ci.yml triggers on.
RELEASE_TAG_PREFIX: Final = "v"
#: Where `ci` publishes: GHCR, publish_images' default.
REGISTRY: Final = "ghcr.io"
#: The one platform `ci` builds and publishes (GitHub's hosted runners are linux/amd64).
CI_PLATFORM: Final = "linux/amd64"


class CiError(Exception):
    """A `ci` stage failed; the message names the stage(s) and carries the underlying errors."""

    def __init__(self, failures: Sequence[tuple[Stage, BaseException]]) -> None:
        self.failures = list(failures)
        super().__init__(
            "\n".join(
                f"ci failed at stage '{stage}': {describe(error)}" for stage, error in failures
            )
        )


@dataclass(frozen=True)
class Decision:
    """Whether a run publishes, and the sentence that explains it to the user."""

    publish: bool
    reason: str
    #: The tags a publishing run pushes (empty when it does not publish).
    tags: tuple[str, ...] = field(default=())


def decide(*, sha: str, ref: str, default_branch: str = "main") -> Decision:
    """Publish for a push to `default_branch` or a release tag (`refs/tags/v*`); else build + test.

    Raises `ValueError` naming the bad value when `sha`, `ref` or `default_branch` is malformed,
    even for refs that would not publish, so a typo never silently turns publishing off. The
    ref and the branch are read by the same parser and validator as the tag rules (tags.py).
    """
    validate_branch(default_branch, what="default branch")
    short_sha_tag(sha)  # validates the sha
    parsed = parse_ref(ref)
    if parsed.kind == "pull":
        return Decision(
            publish=False,
            reason=(
                f"pull request #{parsed.number} ({ref}): tested and built only; images are "
                f"published for pushes to {default_branch} and release tags (v*)"
            ),
        )
    publishes = (parsed.kind == "branch" and parsed.name == default_branch) or (
        parsed.kind == "tag" and parsed.name.startswith(RELEASE_TAG_PREFIX)
    )
    if publishes:
        reason = (
            f"push to the default branch {default_branch}"
            if parsed.kind == "branch"
            else f"release tag {parsed.name}"
        )
        tags = image_tags(sha=sha, ref=ref, default_branch=default_branch)
        return Decision(publish=True, reason=reason, tags=tuple(tags))
    if parsed.kind == "branch":
        return Decision(
            publish=False,
            reason=(
                f"branch {parsed.name!r} is not the default branch {default_branch!r}: tested "
                "and built only"
            ),
        )
    return Decision(
        publish=False,
        reason=f"tag {parsed.name!r} is not a release tag (v*): tested and built only",
    )


def validate_credentials(
    decision: Decision, username: str | None, password: dagger.Secret | None
) -> tuple[str, dagger.Secret] | None:
    """The registry credentials a publishing run needs (None when it does not publish),
    checked before any work starts."""
    if not decision.publish:
        return None
    if not username or password is None:
        missing = " and ".join(
            flag
            for flag, value in (("--username", username), ("--password", password))
            if not value
        )
        raise ValueError(
            f"this run publishes ({decision.reason}) but {missing} is missing: pass the registry "
            'credentials (in GitHub Actions: --username "$GITHUB_ACTOR" --password '
            "env://GITHUB_TOKEN)"
        )
    return validate_registry_username(username), password


def describe(error: BaseException) -> str:
    """The underlying message(s) of an error, exception groups flattened."""
    leaves = flatten(error)
    # errors.describe adds a failed command's output (an ExecError's str() has none of it).
    return "; ".join(describe_error(leaf) for leaf in leaves)


def flatten(error: BaseException) -> list[BaseException]:
    """The leaf exceptions of (nested) exception groups; a plain exception is its own leaf."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in flatten(inner)]
    return [error]


# ---------------------------------------------------------------------------------------------
# Orchestration


async def run_ci(
    *,
    test: Callable[[], Awaitable[object]],
    build: Builder,
    sha: str,
    ref: str,
    repository: str,
    username: str | None = None,
    password: dagger.Secret | None = None,
    default_branch: str = "main",
    created: str | None = None,
    signing: SigningFlags | None = None,
) -> str:
    """Test and build concurrently, then publish when `decide` says so; returns a report.

    `signing` says how the publish stage signs (supply.py); `created` is the commit's time.

    `test` runs the whole test suite and raises when it fails; `build(service, platform)` returns
    a service's runtime image (the module's build functions). Bad input raises `ValueError` before
    any query; a failing stage raises `CiError`.
    """
    decision = decide(sha=sha, ref=ref, default_branch=default_branch)
    source = github_source_url(repository)  # validates the repository in every case
    credentials = validate_credentials(decision, username, password)
    created = validate_created(created) if created else format_created(datetime.now(UTC))
    chain: SupplyChain | None = None
    if credentials is not None:
        flags = signing or SigningFlags()
        chain = supply_chain(
            signing=flags.config(),
            registry=REGISTRY,
            username=credentials[0],
            password=credentials[1],
            repository=repository,
            sha=sha,
            ref=ref,
            builder_id=flags.builder_id,
            invocation=flags.invocation,
            parameters={"function": "ci", "registry": REGISTRY, "created": created},
        )
        # Every publish input (image names, tags, labels), checked before the first query.
        plan_publish(
            repository=repository,
            sha=sha,
            ref=ref,
            created=created,
            platforms=[CI_PLATFORM],
            default_branch=default_branch,
        )
    platform = dagger.Platform(CI_PLATFORM)

    async def build_one(service: str) -> dagger.Container:
        return await (await build(service, platform)).sync()

    jobs: dict[Stage, Callable[[], Awaitable[object]]] = {
        "test": test,
        **{s.stage: functools.partial(build_one, s.name) for s in SERVICES},
    }
    # Every stage is issued before any is awaited: they run in the engine at the same time.
    try:
        results = await run_all(jobs)
    except JobFailedError as failed:
        raise CiError(list(failed.failures.items())) from failed
    images: dict[str, dagger.Container] = {}
    for service in SERVICES:
        image = results[service.stage]
        assert isinstance(image, dagger.Container)
        images[service.name] = image

    lines = [
        f"ci {short_sha_tag(sha)} {ref} ({source})",
        "test: passed",
        *(f"{s.stage}: built {s.name} ({CI_PLATFORM})" for s in SERVICES),
    ]
    if credentials is None:
        lines.append(f"publish: skipped: {decision.reason}")
        return "\n".join(lines)

    async def built_image(service: str, _platform: dagger.Platform) -> dagger.Container:
        # Publish the containers that were just tested and built, not a second build.
        return images[service]

    user, secret = credentials
    try:
        pushed = await publish_images(
            built_image,
            repository=repository,
            username=user,
            password=secret,
            sha=sha,
            ref=ref,
            registry=REGISTRY,
            platforms=[CI_PLATFORM],
            default_branch=default_branch,
            created=created,
            supply_chain=chain,
        )
    except Exception as error:
        raise CiError([("publish", error)]) from error
    lines.append(f"publish: {decision.reason}: pushed {len(pushed)} references")
    lines.extend(f"  {reference}" for reference in pushed)
    return "\n".join(lines)
