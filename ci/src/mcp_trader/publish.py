"""Publishing both runtime images to a registry (GHCR by default) under every tag of a commit.

The order of work is what makes a failed publish harmless:

1. Validate everything (tags, image names, platforms, the PR rule, the username) before any query.
2. Build both images for every platform and wait for all of them: a build failure pushes nothing.
3. Push the immutable tags (`sha-...`, `X.Y.Z`) of both images, then the moving ones (`X.Y`, `X`,
   the branch, `pr-N`), `latest` last. The first push of an image uploads its layers; the others
   publish the same container again, so they only write a manifest under a new tag, and the digest
   check below proves that every tag got the same content. The two phases are separate calls of
   one `Pusher`, so a step that must follow the immutable pushes and precede any moving tag
   (signing the digests, say) goes between them in `publish_images`.
4. A failed push is retried only when the registry error looks transient (5xx, 429, timeouts,
   connection resets); otherwise, or after the last attempt, publishing stops: since all
   immutable tags come first, a failure there leaves every moving tag of both images untouched.
5. With a `SupplyChain` (supply.py): before building, an immutable tag that already exists is
   kept, never overwritten (its digest is reused for every other tag of that image, or the
   publish fails when it is another commit's build); after the immutable pushes, every image
   digest is signed and gets its provenance and SBOM attestations; a failure there is reported
   like a push failure and moves no tag.

`publish_images` is the reusable entry point (the `publish` and `ci` functions call it); the
planning (`plan_publish`), the retry decision (`is_transient`) and the digest check are pure.
The digest check reads only the digest of the reference the engine returns: the engine
normalizes image names (`reference.ParseNormalizedNamed`: `index.docker.io/...` comes back as
`docker.io/...`), so the name part is not ours to compare.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import dagger
from dagger import dag

from . import platforms as _platforms
from .errors import JobFailedError, describe, run_all
from .labels import oci_labels
from .services import SERVICES, NamedBuilder
from .tags import (
    DIGEST,
    ImageTag,
    github_source_url,
    image_repository,
    parse_ref,
    tag_plan,
    validate_registry_username,
    version_label,
)

if TYPE_CHECKING:
    from .supply import SupplyChain

DEFAULT_PLATFORMS: Final = (_platforms.DEFAULT,)

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

    @property
    def immutable(self) -> list[PushStep]:
        """The pushes of tags that name one build (`sha-...`, `X.Y.Z`), both images."""
        return [s for s in self.steps if not s.moving]

    @property
    def moving(self) -> list[PushStep]:
        """The pushes of tags that follow a line (`X.Y`, `X`, branch, `pr-N`), `latest` last."""
        return [s for s in self.steps if s.moving]


@dataclass(frozen=True)
class Pushed:
    """One push that went through: the reference the engine returned and its digest."""

    step: PushStep
    reference: str
    digest: str


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


def format_created(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, seconds precision: the `created` label."""
    if moment.tzinfo is None:
        raise ValueError(f"created time {moment!r} has no time zone: expected an aware datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_created(created: str) -> str:
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
    if parse_ref(ref).kind == "pull" and not allow_pr:
        raise ValueError(
            f"refusing to publish pull request ref {ref!r} (it would push "
            f"{', '.join(t.name for t in tags)}): pull requests from forks must not write to the "
            "registry; pass --allow-pr to publish it anyway"
        )
    checked_platforms = _platforms.validate_platforms(platforms)
    images = {s.name: image_repository(repository, s.name, registry) for s in SERVICES}
    validate_created(created)
    # Immutable tags of both images first, then moving ones; `latest` is last in `tags` already.
    ordered = [t for t in tags if not t.moving] + [t for t in tags if t.moving]
    steps = [
        PushStep(service=service, image=images[service], tag=tag.name, moving=tag.moving)
        for tag in ordered
        for service in images
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
    """The `sha256:...` digest of the reference `Container.publish` returned for `step`.

    Only the digest after the last `@` is read: the engine normalizes the name it returns.
    """
    _, at, digest = published.rpartition("@")
    if not at or not DIGEST.fullmatch(digest):
        raise PublishError(
            f"pushing {step.address} returned {published!r}, not a reference ending in "
            "@sha256:<digest>: cannot prove which content the tag points at"
        )
    return digest


def check_same_digest(first: Pushed, later: Pushed) -> None:
    """Every tag of an image must point at the content its first (`sha-`) tag got."""
    if later.digest != first.digest:
        raise PublishError(
            f"{later.step.address} got digest {later.digest} but {first.step.address} got "
            f"{first.digest}: the tags of {later.step.image} would point at different content"
        )


#: Builds the runtime image of a service (a name in services.SERVICES) for a platform.
Builder = NamedBuilder


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
    supply_chain: SupplyChain | None = None,
) -> list[str]:
    """Build both images for every platform, then push them under every tag of `sha`/`ref`.

    Returns the pushed references with their digests (`image:tag@sha256:...`) in push order.
    `password` is only ever passed by reference to `with_registry_auth`. `created` defaults to
    now (RFC 3339, UTC). `registry_service` routes the pushes to a service (tests' registry).
    `supply_chain` keeps existing immutable tags and signs and attests every digest (step 5).
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
    validate_registry_username(username)
    kept = await supply_chain.existing(plan) if supply_chain is not None else {}
    variants = await build_variants(build, plan)
    pusher = Pusher(
        plan,
        variants,
        username=username,
        password=password,
        retry=retry or RetryPolicy(),
        sleep=sleep,
        registry_service=registry_service,
        kept=kept,
        retag=supply_chain.retag if supply_chain is not None else None,
    )
    await pusher.push(plan.immutable)
    if supply_chain is not None:
        digests = {p.step.service: p.digest for p in reversed(pusher.pushed)}
        try:
            await supply_chain.sign_all(plan, digests, variants)
        except Exception as error:
            raise PublishError(pusher.report(f"signing failed: {error}", plan.moving)) from error
    await pusher.push(plan.moving)
    return [p.reference for p in pusher.pushed]


async def build_variants(build: Builder, plan: PublishPlan) -> dict[str, list[dagger.Container]]:
    """Every image for every platform, labelled and evaluated, all at once (`errors.run_all`);
    fails, naming each failed image and platform, before anything is pushed."""

    async def one(service: str, platform: str) -> dagger.Container:
        container = await build(service, dagger.Platform(platform))
        for name, value in plan.labels.items():
            container = container.with_label(name, value)
        return await container.sync()

    jobs = {
        (service, platform): functools.partial(one, service, platform)
        for service in plan.images
        for platform in plan.platforms
    }
    try:
        built = await run_all(
            {f"{service} ({platform})": job for (service, platform), job in jobs.items()}
        )
    except JobFailedError as failed:
        named = "; ".join(f"{name}: {describe(error)}" for name, error in failed.failures.items())
        raise PublishError(f"build failed, nothing was pushed: {named}") from failed
    return {
        service: [built[f"{service} ({platform})"] for platform in plan.platforms]
        for service in plan.images
    }


@dataclass
class Pusher:
    """Pushes the plan's steps in the order given, remembering what went through, so that a
    failure can say exactly what was and was not pushed, and every tag of an image is checked
    against the digest its first tag got."""

    plan: PublishPlan
    variants: dict[str, list[dagger.Container]]
    username: str
    password: dagger.Secret
    retry: RetryPolicy
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    registry_service: dagger.Service | None = None
    #: service -> the digest its existing immutable tags name: its other tags point there too
    #: (through `retag`) instead of at a new push.
    kept: dict[str, str] = field(default_factory=dict)
    retag: Callable[[PushStep, str], Awaitable[str]] | None = None
    pushed: list[Pushed] = field(default_factory=list)

    async def push(self, steps: Sequence[PushStep]) -> list[Pushed]:
        """Push `steps` in order; stop at the first failure (after retrying transient ones)."""
        done: list[Pushed] = []
        for step in steps:
            index = self.plan.steps.index(step)
            try:
                reference = await self._publish(step)
            except Exception as error:
                raise PublishError(self._stopped(index, error)) from error
            try:
                pushed = Pushed(step, reference, digest_of(reference, step))
            except PublishError as error:
                self.pushed.append(Pushed(step, reference, ""))
                raise PublishError(self._stopped(index, error, step_pushed=True)) from error
            first = next((p for p in self.pushed if p.step.service == step.service), None)
            self.pushed.append(pushed)
            done.append(pushed)
            if first is not None:
                try:
                    check_same_digest(first, pushed)
                except PublishError as error:
                    # The tag is written, but nothing after it is: stop before more tags follow.
                    raise PublishError(self._stopped(index, error, step_pushed=True)) from error
        return done

    async def _publish(self, step: PushStep) -> str:
        if step.service in self.kept:
            assert self.retag is not None, "kept digests need a retag"
            return await self.retag(step, self.kept[step.service])
        containers = self.variants[step.service]
        delays = self.retry.delays()
        for attempt in range(self.retry.attempts):
            try:
                if len(containers) == 1:
                    single = containers[0].with_registry_auth(
                        step.image, self.username, self.password
                    )
                    return await single.publish(
                        step.address, registry_service=self.registry_service
                    )
                # One multi-platform index: an empty receiver holds only the credentials.
                receiver = dag.container().with_registry_auth(
                    step.image, self.username, self.password
                )
                return await receiver.publish(
                    step.address,
                    platform_variants=containers,
                    registry_service=self.registry_service,
                )
            except dagger.QueryError as error:
                if not is_transient(str(error)):
                    raise _PushFailed(
                        f"not retried, not a transient registry error: {error}"
                    ) from error
                if attempt == self.retry.attempts - 1:
                    raise _PushFailed(
                        f"gave up after {self.retry.attempts} attempts on transient registry "
                        f"errors: {error}"
                    ) from error
                await self.sleep(delays[attempt])
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _stopped(self, index: int, error: Exception, *, step_pushed: bool = False) -> str:
        step = self.plan.steps[index]
        verb = "checking" if step_pushed else "publishing"
        return self.report(
            f"{verb} {step.service} as {step.address} failed: {error}",
            self.plan.steps[index + 1 :],
        )

    def report(self, headline: str, left_steps: Sequence[PushStep]) -> str:
        """`headline`, then what was pushed, which moving tags changed, and what was not pushed."""
        pushed = [p.reference for p in self.pushed]
        moved = [p.step.address for p in self.pushed if p.step.moving]
        left = [s.address for s in left_steps]
        lines = [headline]
        lines.append(f"already pushed: {', '.join(pushed) if pushed else 'nothing'}")
        if moved:
            lines.append(f"moving tags already changed: {', '.join(moved)}")
        else:
            lines.append(
                "no moving tag (branch, X.Y, X, pr-N, latest) was changed for either image"
            )
        if left:
            lines.append(f"not pushed: {', '.join(left)}")
        return "\n".join(lines)


class _PushFailed(Exception):
    """A push that failed for good; the message says whether it was retried."""
