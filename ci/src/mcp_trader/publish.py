"""Publishing both runtime images to a registry (GHCR by default) under every tag of a commit.

The order of work is what makes a failed publish harmless:

1. Validate everything (tags, image names, platforms, the PR rule, the username) before any query.
2. Build both images for every platform and wait for all of them: a build failure pushes nothing.
3. Push the immutable tags (`sha-...`, `X.Y.Z`) of both images, then the moving ones (`X.Y`, `X`,
   the branch, `pr-N`), `latest` last. The first push of an image uploads its layers; the others
   publish the same container again, so they only write a manifest under a new tag, and the digest
   check below proves that every tag got the same content.
4. A failed push is retried only when the registry error looks transient (5xx, 429, timeouts,
   connection resets); otherwise, or after the last attempt, publishing stops: since all
   immutable tags come first, a failure there leaves every moving tag of both images untouched.

`publish_images` is the reusable entry point (the `publish` and `ci` functions call it); the
planning (`plan_publish`), the retry decision (`is_transient`) and the digest check are pure.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import dagger
from dagger import dag

from . import platforms as _platforms
from .labels import oci_labels
from .tags import (
    ImageTag,
    github_source_url,
    image_repository,
    is_pull_request_ref,
    tag_plan,
    version_label,
)

#: The two images, in push order: the provider first, as the gateway depends on it at runtime.
SERVICES: Final = ("binance-provider", "mcp-gateway")
#: What the builds can produce: the provider is cross-compiled on the build platform and the
#: gateway's virtualenv is resolved for the target platform, so neither needs emulation.
SUPPORTED_PLATFORMS: Final = _platforms.SUPPORTED
DEFAULT_PLATFORMS: Final = (_platforms.DEFAULT,)

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?Z")
# A status code standing alone, not part of a port (":5000"), a path or a digest.
_STATUS = r"(?<![\w.:/-]){code}(?![\w.:/-])"
# Registry answers that no retry can fix: credentials, permissions, names, TLS, DNS.
_PERMANENT = re.compile(
    "|".join(
        [
            _STATUS.format(code="40[0-9]"),
            _STATUS.format(code="41[0-9]"),
            _STATUS.format(code="42[0-8]"),
            r"unauthori[sz]ed",
            r"denied",
            r"forbidden",
            r"authentication required",
            r"name unknown",
            r"manifest invalid",
            r"x509",
            r"certificate",
            r"no such host",
            r"server gave http response to https client",
        ]
    ),
    re.IGNORECASE,
)
# Registry or network hiccups worth another attempt.
_TRANSIENT = re.compile(
    "|".join(
        [
            _STATUS.format(code="5[0-9][0-9]"),
            _STATUS.format(code="429"),
            r"too ?many ?requests",
            r"timeout",
            r"timed out",
            r"deadline exceeded",
            r"connection reset",
            r"broken pipe",
            r"unexpected eof",
            r":\s*EOF\b",
            r"temporar(?:y|ily) unavailable",
            r"service unavailable",
            r"bad gateway",
            r"server misbehaving",
        ]
    ),
    re.IGNORECASE,
)


class PublishError(Exception):
    """Publishing stopped; the message says what was pushed and what was not."""


@dataclass(frozen=True)
class PushStep:
    """One `Container.publish` call: one image under one tag."""

    service: str
    image: str
    tag: str
    moving: bool

    @property
    def address(self) -> str:
        return f"{self.image}:{self.tag}"


@dataclass(frozen=True)
class PublishPlan:
    """Everything `publish` will do, decided before the first query."""

    images: dict[str, str]
    tags: list[ImageTag]
    platforms: tuple[str, ...]
    steps: list[PushStep]
    labels: dict[str, str]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff for transient registry errors."""

    attempts: int = 4
    first_delay: float = 2.0
    factor: float = 2.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"invalid retry attempts {self.attempts}: expected at least 1")
        if self.first_delay < 0 or self.factor < 1 or self.max_delay < 0:
            raise ValueError(
                f"invalid retry delays {self}: expected first_delay >= 0, factor >= 1, "
                "max_delay >= 0"
            )

    def delays(self) -> list[float]:
        """The waits between attempts (one fewer than the attempts)."""
        return [
            min(self.first_delay * self.factor**n, self.max_delay) for n in range(self.attempts - 1)
        ]


def check_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    """The requested platforms, refused when empty, unknown or repeated."""
    if isinstance(platforms, str):
        # A bare string would otherwise be read character by character.
        platforms = [platforms]
    supported = ", ".join(SUPPORTED_PLATFORMS)
    if not platforms:
        raise ValueError(f"no platform given: expected one or more of {supported}")
    checked: list[str] = []
    for platform in platforms:
        # The same check (and `linux/arm64/v8` -> `linux/arm64`) as build-provider/build-gateway.
        name = str(_platforms.check(platform))
        if name in checked:
            raise ValueError(
                f"platform {platform!r} is given more than once (as {name}): list each once"
            )
        checked.append(name)
    return tuple(checked)


def check_username(username: str) -> str:
    """The registry username: non-empty, no whitespace or control characters."""
    if not username or re.search(r"[\s\x00-\x1f\x7f]", username):
        raise ValueError(
            f"invalid registry username {username!r}: expected a non-empty name without spaces "
            "(on GHCR, github.actor)"
        )
    return username


def format_created(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, seconds precision: the `created` label."""
    if moment.tzinfo is None:
        raise ValueError(f"created time {moment!r} has no time zone: expected an aware datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_created(created: str) -> str:
    """An RFC 3339 UTC timestamp given by the caller (e.g. the commit time), as `...Z`."""
    if not _RFC3339_UTC.fullmatch(created):
        raise ValueError(
            f"invalid created time {created!r}: expected RFC 3339 in UTC, like 2024-05-01T12:00:00Z"
        )
    try:
        datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"invalid created time {created!r}: not a real date and time (RFC 3339, UTC)"
        ) from None
    return created


def plan_publish(
    *,
    repository: str,
    sha: str,
    ref: str,
    created: str,
    registry: str = "ghcr.io",
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    default_branch: str = "main",
    allow_pr: bool = False,
) -> PublishPlan:
    """Validate every input and decide every push, in order; raises `ValueError` on bad input."""
    tags = tag_plan(sha=sha, ref=ref, default_branch=default_branch)
    if is_pull_request_ref(ref) and not allow_pr:
        raise ValueError(
            f"refusing to publish pull request ref {ref!r} (it would push "
            f"{', '.join(t.name for t in tags)}): pull requests from forks must not write to the "
            "registry; pass --allow-pr to publish it anyway"
        )
    checked_platforms = check_platforms(platforms)
    images = {service: image_repository(repository, service, registry) for service in SERVICES}
    check_created(created)
    # Immutable tags of both images first, then moving ones; `latest` is last in `tags` already.
    ordered = [t for t in tags if not t.moving] + [t for t in tags if t.moving]
    steps = [
        PushStep(service=service, image=images[service], tag=tag.name, moving=tag.moving)
        for tag in ordered
        for service in SERVICES
    ]
    # What depends on the commit and the push; the builds already set title, description and
    # licenses (labels.py), so `licenses` is not repeated here.
    labels = oci_labels(
        source=github_source_url(repository),
        revision=sha.lower(),
        version=version_label([t.name for t in tags]),
        created=created,
        licenses=None,
    )
    return PublishPlan(
        images=images, tags=tags, platforms=checked_platforms, steps=steps, labels=labels
    )


def is_transient(message: str) -> bool:
    """Whether a registry error is worth retrying: a 5xx, 429, timeout or dropped connection.

    Anything that names credentials, permissions, a missing name, TLS or DNS is permanent, even
    when it also mentions a timeout, because retrying cannot change the answer.
    """
    if _PERMANENT.search(message):
        return False
    return _TRANSIENT.search(message) is not None


def digest_of(published: str, step: PushStep) -> str:
    """The `sha256:...` digest of the reference `Container.publish` returned for `step`."""
    prefix = f"{step.address}@"
    digest = published.removeprefix(prefix)
    if not published.startswith(prefix) or not _DIGEST.fullmatch(digest):
        raise PublishError(
            f"pushing {step.address} returned {published!r}, not {step.address}@sha256:<digest>: "
            "cannot prove which content the tag points at"
        )
    return digest


def check_same_digest(first: tuple[PushStep, str], later: tuple[PushStep, str]) -> None:
    """Every tag of an image must point at the content its first (`sha-`) tag got."""
    (first_step, first_digest), (step, digest) = first, later
    if digest != first_digest:
        raise PublishError(
            f"{step.address} got digest {digest} but {first_step.address} got {first_digest}: "
            f"the tags of {step.image} would point at different content"
        )


Builder = Callable[[str, dagger.Platform], "dagger.Container | Awaitable[dagger.Container]"]
"""Builds the runtime image of a service (a name in SERVICES) for a platform."""


async def publish_images(
    build: Builder,
    *,
    repository: str,
    username: str,
    password: dagger.Secret,
    sha: str,
    ref: str,
    registry: str = "ghcr.io",
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    default_branch: str = "main",
    allow_pr: bool = False,
    created: str | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    registry_service: dagger.Service | None = None,
) -> list[str]:
    """Build both images for every platform, then push them under every tag of `sha`/`ref`.

    Returns the pushed references with their digests (`image:tag@sha256:...`) in push order.
    `password` is only ever passed by reference to `with_registry_auth`. `created` defaults to
    now (RFC 3339, UTC). `registry_service` routes the pushes to a service (tests' registry).
    """
    plan = plan_publish(
        repository=repository,
        sha=sha,
        ref=ref,
        created=format_created(datetime.now(UTC)) if created is None else created,
        registry=registry,
        platforms=platforms,
        default_branch=default_branch,
        allow_pr=allow_pr,
    )
    check_username(username)
    variants = await build_all(build, plan)
    return await push_all(
        plan,
        variants,
        username=username,
        password=password,
        retry=retry or RetryPolicy(),
        sleep=sleep,
        registry_service=registry_service,
    )


async def build_all(build: Builder, plan: PublishPlan) -> dict[str, list[dagger.Container]]:
    """Every image for every platform, labelled and evaluated; fails (naming them) if any fails."""
    jobs: list[tuple[str, str]] = [(s, p) for s in SERVICES for p in plan.platforms]

    async def one(service: str, platform: str) -> dagger.Container:
        built = build(service, dagger.Platform(platform))
        container = await built if inspect.isawaitable(built) else built
        for name, value in plan.labels.items():
            container = container.with_label(name, value)
        return await container.sync()

    results = await asyncio.gather(*(one(s, p) for s, p in jobs), return_exceptions=True)
    failures = [
        (job, result)
        for job, result in zip(jobs, results, strict=True)
        if isinstance(result, BaseException)
    ]
    if failures:
        for _, error in failures:
            if not isinstance(error, Exception):
                raise error  # cancellation and the like are not build failures
        named = "; ".join(f"{s} ({p}): {error}" for (s, p), error in failures)
        raise PublishError(f"build failed, nothing was pushed: {named}") from failures[0][1]
    built: dict[str, list[dagger.Container]] = {s: [] for s in SERVICES}
    for (service, _), result in zip(jobs, results, strict=True):
        assert isinstance(result, dagger.Container)
        built[service].append(result)
    return built


async def push_all(
    plan: PublishPlan,
    variants: dict[str, list[dagger.Container]],
    *,
    username: str,
    password: dagger.Secret,
    retry: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    registry_service: dagger.Service | None = None,
) -> list[str]:
    """Push `plan.steps` in order; stop at the first failure (after retrying transient ones)."""
    pushed: list[str] = []
    first: dict[str, tuple[PushStep, str]] = {}
    for index, step in enumerate(plan.steps):
        try:
            published = await _push(
                step, variants[step.service], username, password, retry, sleep, registry_service
            )
        except Exception as error:
            raise PublishError(_stopped(plan, index, pushed, error)) from error
        pushed.append(published)
        try:
            digest = digest_of(published, step)
            if step.service in first:
                check_same_digest(first[step.service], (step, digest))
            else:
                first[step.service] = (step, digest)
        except PublishError as error:
            # The tag is written, but nothing after it is: stop before more tags follow it.
            raise PublishError(_stopped(plan, index, pushed, error, step_pushed=True)) from error
    return pushed


async def _push(
    step: PushStep,
    containers: list[dagger.Container],
    username: str,
    password: dagger.Secret,
    retry: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    registry_service: dagger.Service | None,
) -> str:
    delays = retry.delays()
    for attempt in range(retry.attempts):
        try:
            if len(containers) == 1:
                single = containers[0].with_registry_auth(step.image, username, password)
                return await single.publish(step.address, registry_service=registry_service)
            # One multi-platform index: an empty receiver holds only the credentials.
            receiver = dag.container().with_registry_auth(step.image, username, password)
            return await receiver.publish(
                step.address, platform_variants=containers, registry_service=registry_service
            )
        except dagger.QueryError as error:
            if not is_transient(str(error)):
                raise _PushFailed(
                    f"not retried, not a transient registry error: {error}"
                ) from error
            if attempt == retry.attempts - 1:
                raise _PushFailed(
                    f"gave up after {retry.attempts} attempts on transient registry errors: {error}"
                ) from error
            await sleep(delays[attempt])
    raise AssertionError("unreachable: the last attempt returns or raises")


class _PushFailed(Exception):
    """A push that failed for good; the message says whether it was retried."""


def _stopped(
    plan: PublishPlan, index: int, pushed: list[str], error: Exception, *, step_pushed: bool = False
) -> str:
    step = plan.steps[index]
    done = index + 1 if step_pushed else index
    moved = [s.address for s in plan.steps[:done] if s.moving]
    left = [s.address for s in plan.steps[index + 1 :]]
    verb = "checking" if step_pushed else "publishing"
    lines = [f"{verb} {step.service} as {step.address} failed: {error}"]
    lines.append(f"already pushed: {', '.join(pushed) if pushed else 'nothing'}")
    if moved:
        lines.append(f"moving tags already changed: {', '.join(moved)}")
    else:
        lines.append("no moving tag (branch, X.Y, X, pr-N, latest) was changed for either image")
    if left:
        lines.append(f"not pushed: {', '.join(left)}")
    return "\n".join(lines)
