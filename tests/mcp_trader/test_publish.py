"""Publishing (ci/src/mcp_trader/publish.py): the pure planning, then `publish_images` run for
real against the engine double (tests/enginedouble), with a small stand-in builder so these tests
are about what publishing asks of the engine, not about how the images are built."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import dagger
import pytest
from dagger import dag
from mcp_trader.main import McpTrader
from mcp_trader.publish import (
    DEFAULT_PLATFORMS,
    PublishError,
    Pushed,
    PushStep,
    RetryPolicy,
    check_same_digest,
    digest_of,
    format_created,
    is_transient,
    plan_publish,
    publish_images,
    validate_created,
)
from mcp_trader.services import SERVICES

from tests.enginedouble import Call, EngineDouble, Obj, Step
from tests.mcp_trader.test_platforms import BAD_PLATFORMS
from tests.mcp_trader.test_supply import SIGNING_ARGS, ToolsDouble
from tests.registration import Function, is_optional, object_name, required

SHA = "1A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D7E8F9A0B"
CREATED = "2024-05-01T12:00:00Z"
PROVIDER = "ghcr.io/acme/mcp-trader/binance-provider"
GATEWAY = "ghcr.io/acme/mcp-trader/mcp-gateway"
TOKEN_ENV = "GHCR_TOKEN_FOR_TEST"
TOKEN = "ghp_do-not-leak-7f3a9c1e5b"  # the value a leak would show


def plan(ref: str = "refs/heads/main", **kw: object) -> list[str]:
    args: dict[str, object] = {"repository": "Acme/MCP-Trader", "sha": SHA, "ref": ref}
    args["created"] = CREATED
    args.update(kw)
    return [s.address for s in plan_publish(**args).steps]  # type: ignore[arg-type]


# ======================================================================== pure planning


def test_default_branch_push_order_immutable_first_latest_last() -> None:
    assert plan() == [
        f"{PROVIDER}:sha-1a2b3c4",
        f"{GATEWAY}:sha-1a2b3c4",
        f"{PROVIDER}:main",
        f"{GATEWAY}:main",
        f"{PROVIDER}:latest",
        f"{GATEWAY}:latest",
    ]


def test_release_push_order_puts_x_y_z_before_the_moving_x_y_and_x() -> None:
    assert plan("refs/tags/v1.2.3") == [
        f"{PROVIDER}:sha-1a2b3c4",
        f"{GATEWAY}:sha-1a2b3c4",
        f"{PROVIDER}:1.2.3",
        f"{GATEWAY}:1.2.3",
        f"{PROVIDER}:1.2",
        f"{GATEWAY}:1.2",
        f"{PROVIDER}:1",
        f"{GATEWAY}:1",
    ]
    steps = plan_publish(repository="o/r", sha=SHA, ref="refs/tags/v1.2.3", created=CREATED).steps
    assert [s.moving for s in steps] == [False] * 4 + [True] * 4


def test_registry_override_and_labels() -> None:
    p = plan_publish(
        repository="Acme/MCP-Trader",
        sha=SHA,
        ref="refs/tags/v2.0.0-rc.1",
        created=CREATED,
        registry="localhost:5000",
    )
    assert p.images == {
        "binance-provider": "localhost:5000/acme/mcp-trader/binance-provider",
        "mcp-gateway": "localhost:5000/acme/mcp-trader/mcp-gateway",
    }
    assert p.labels == {
        "org.opencontainers.image.revision": SHA.lower(),
        "org.opencontainers.image.version": "2.0.0-rc.1",
        "org.opencontainers.image.created": CREATED,
        "org.opencontainers.image.source": "https://github.com/acme/mcp-trader",
    }


def test_pull_requests_are_refused_unless_allowed() -> None:
    with pytest.raises(
        ValueError, match=r"refusing to publish pull request ref 'refs/pull/5/merge'"
    ):
        plan("refs/pull/5/merge")
    with pytest.raises(ValueError, match="--allow-pr"):
        plan("refs/pull/5/head")
    assert plan("refs/pull/5/merge", allow_pr=True) == [
        f"{PROVIDER}:sha-1a2b3c4",
        f"{GATEWAY}:sha-1a2b3c4",
        f"{PROVIDER}:pr-5",
        f"{GATEWAY}:pr-5",
    ]


def test_a_malformed_pull_ref_gets_the_ref_error_not_the_pr_rule() -> None:
    with pytest.raises(ValueError, match="invalid pull request number '0'"):
        plan("refs/pull/0/merge")


@pytest.mark.parametrize(("platforms", "message"), BAD_PLATFORMS)
def test_bad_platforms_are_refused(platforms: list[str], message: str) -> None:
    # The validator itself is tested in test_platforms.py; the plan refuses what it refuses.
    with pytest.raises(ValueError, match=message):
        plan(platforms=platforms)


def test_platforms() -> None:
    assert DEFAULT_PLATFORMS == ("linux/amd64",)
    assert plan_publish(
        repository="a/b",
        sha=SHA,
        ref="refs/heads/main",
        created=CREATED,
        platforms=["linux/arm64/v8", "linux/amd64"],
    ).platforms == ("linux/arm64", "linux/amd64")


def test_created_time() -> None:
    assert format_created(
        datetime(2024, 5, 1, 14, 0, 0, 999, tzinfo=timezone(timedelta(hours=2)))
    ) == ("2024-05-01T12:00:00Z")
    with pytest.raises(ValueError, match="no time zone"):
        format_created(datetime(2024, 5, 1))
    assert validate_created("2024-05-01T12:00:00.25Z") == "2024-05-01T12:00:00.25Z"
    for bad in ("2024-05-01", "2024-05-01T12:00:00+02:00", "2024-13-01T00:00:00Z", "now"):
        with pytest.raises(ValueError, match="invalid created time"):
            validate_created(bad)


@pytest.mark.parametrize(
    "message",
    [
        "failed to push ghcr.io/a/b/c:sha-1: unexpected status from PUT request to "
        "https://ghcr.io/v2/a/b/c/manifests/sha-1: 503 Service Unavailable",
        "unexpected status from HEAD request to https://ghcr.io/v2/x/blobs/sha256:ab: "
        "502 Bad Gateway",
        "500 Internal Server Error",
        "unexpected status: 429 Too Many Requests",
        "toomanyrequests: retry-after: 1s",
        'failed to do request: Head "https://ghcr.io/v2/": dial tcp 1.2.3.4:443: i/o timeout',
        "net/http: TLS handshake timeout",
        "context deadline exceeded",
        "read tcp 10.0.0.2:50000->1.2.3.4:443: read: connection reset by peer",
        'Put "https://ghcr.io/v2/a/blobs/uploads/x": EOF',
        "write: broken pipe",
        "unexpected EOF",
        "lookup ghcr.io on 127.0.0.53:53: server misbehaving",
    ],
)
def test_transient_registry_errors(message: str) -> None:
    assert is_transient(message)


@pytest.mark.parametrize(
    "message",
    [
        "failed to authorize: failed to fetch oauth token: unexpected status from GET request to "
        "https://ghcr.io/token?scope=repository: 401 Unauthorized",
        "denied: permission_denied: write_package",
        "unexpected status from PUT request: 403 Forbidden",
        "name unknown: repository name not known to registry",
        "tls: failed to verify certificate: x509: certificate signed by unknown authority",
        "dial tcp: lookup ghcr.example: no such host",
        "http: server gave HTTP response to HTTPS client",
        # A permanent answer wins even when a timeout is mentioned too.
        "denied: requested access to the resource is denied (after timeout)",
        # Numbers inside ports, digests and paths are not status codes.
        "failed to push localhost:5000/a/b:c: invalid reference format",
        "blob sha256:5030aa missing",
        "something else went wrong",
        "",
    ],
)
def test_permanent_or_unknown_errors_are_not_retried(message: str) -> None:
    assert not is_transient(message)


def test_retry_policy() -> None:
    assert RetryPolicy().delays() == [2.0, 4.0, 8.0]
    assert RetryPolicy(attempts=6, first_delay=10, max_delay=25).delays() == [10, 20, 25, 25, 25]
    assert RetryPolicy(attempts=1).delays() == []
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="invalid retry delays"):
        RetryPolicy(factor=0.5)


def test_digest_of_and_same_digest() -> None:
    step = PushStep("mcp-gateway", GATEWAY, "main", moving=True)
    digest = "sha256:" + "a" * 64
    assert digest_of(f"{GATEWAY}:main@{digest}", step) == digest
    for bad in ("", f"{GATEWAY}:main", f"{GATEWAY}:main@sha256:abc", f"{GATEWAY}:main@{digest}x"):
        with pytest.raises(PublishError, match="cannot prove which content"):
            digest_of(bad, step)
    first = PushStep("mcp-gateway", GATEWAY, "sha-1a2b3c4", moving=False)
    check_same_digest(Pushed(first, "", digest), Pushed(step, "", digest))
    other = "sha256:" + "b" * 64
    with pytest.raises(PublishError, match=rf"{GATEWAY}:main got digest {other} but "):
        check_same_digest(Pushed(first, "", digest), Pushed(step, "", other))


@pytest.mark.parametrize(
    "returned",
    [
        # The engine returns the name as reference.ParseNormalizedNamed spells it.
        "docker.io/acme/mcp-gateway:main@{d}",
        "docker.io/library/mcp-gateway:main@{d}",
        "GHCR.IO/acme/mcp-trader/mcp-gateway:main@{d}",
        "{image}:main@{d}",
    ],
)
def test_the_digest_alone_is_compared_whatever_name_the_engine_returns(returned: str) -> None:
    # Behaviour changed on purpose (issue 15.6): the name part used to have to match exactly.
    step = PushStep("mcp-gateway", "index.docker.io/acme/mcp-gateway", "main", moving=True)
    digest = "sha256:" + "c" * 64
    assert digest_of(returned.format(d=digest, image=GATEWAY), step) == digest


# ======================================================================== with the engine double


def digest_for(address: str) -> str:
    """A stable fake digest per image (every tag of one image gets the same one)."""
    image = address.rsplit(":", 1)[0]
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


class Registry:
    """Answers `publish` as a registry would and records what was pushed, in order."""

    def __init__(self, engine: EngineDouble) -> None:
        self.pushed: list[str] = []
        self.attempts: list[str] = []
        self.digest: Callable[[str], str] = digest_for
        engine.answer("Container.publish", self._publish)
        # The immutable-tag look-ups (supply.py) find an empty registry.
        self.tools = ToolsDouble(engine)

    def _publish(self, call: Call) -> str:
        address = str(call.args["address"])
        self.pushed.append(address)
        return f"{address}@{self.digest(address)}"

    def fail(
        self,
        engine: EngineDouble,
        address: str,
        message: str,
        times: int | None = None,
    ) -> None:
        """Fail pushes of `address` (the first `times` of them, or all)."""
        failed = [0]

        def when(step: Step) -> bool:
            if step.args.get("address") != address:
                return False
            self.attempts.append(address)
            if times is not None and failed[0] >= times:
                return False
            failed[0] += 1
            return True

        engine.fail("Container.publish", when=when, message=message)


def builder(
    calls: list[tuple[str, str]] | None = None,
) -> Callable[[str, dagger.Platform], Awaitable[dagger.Container]]:
    async def build(service: str, platform: dagger.Platform) -> dagger.Container:
        if calls is not None:
            calls.append((service, str(platform)))
        return dag.container(platform=platform).from_(f"registry.invalid/base-{service}:1")

    return build


async def no_sleep(_: float) -> None:
    return None


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def token_secret(monkeypatch: pytest.MonkeyPatch) -> dagger.Secret:
    # The module never creates secrets from values; like a CLI user, the test names an env var.
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return dag.secret(f"env://{TOKEN_ENV}")


async def run(
    monkeypatch: pytest.MonkeyPatch,
    ref: str = "refs/heads/main",
    **kw: object,
) -> list[str]:
    args: dict[str, object] = {
        "repository": "Acme/MCP-Trader",
        "username": "octo-bot",
        "password": token_secret(monkeypatch),
        "sha": SHA,
        "ref": ref,
        "created": CREATED,
        "sleep": no_sleep,
    }
    args.update(kw)
    build = args.pop("build", builder())
    return await publish_images(build, **args)  # type: ignore[arg-type]


async def test_pushes_every_tag_of_both_images_in_order_with_digests(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    result = await run(monkeypatch)
    expected = plan()
    assert registry.pushed == expected
    assert result == [f"{a}@{digest_for(a)}" for a in expected]


async def test_release_tag_pushes_versions(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    await run(monkeypatch, "refs/tags/v1.2.3")
    assert registry.pushed == plan("refs/tags/v1.2.3")
    assert not any(a.endswith(":latest") for a in registry.pushed)


async def test_builds_every_image_and_platform_before_the_first_push(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    calls: list[tuple[str, str]] = []
    await run(monkeypatch, build=builder(calls), platforms=["linux/amd64", "linux/arm64"])
    assert calls == [(s.name, p) for s in SERVICES for p in ("linux/amd64", "linux/arm64")]
    leaves = [field for _, field in engine.evaluated]
    first_publish = leaves.index("publish")
    assert set(leaves[:first_publish]) == {"sync"}
    assert "sync" not in leaves[first_publish:]
    # The four labelled images (2 services x 2 platforms) are the ones evaluated first.
    synced = {obj for obj, field in engine.evaluated[:first_publish] if "withLabel" in obj.fields}
    assert len(synced) == 4


async def test_registry_auth_uses_the_secret_by_reference_only(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    await run(monkeypatch, platforms=["linux/amd64", "linux/arm64"])
    publishes = engine.calls("publish")
    assert publishes
    for call in publishes:
        auth = call.receiver.find("withRegistryAuth")
        assert auth is not None, f"no registry auth before {call.args['address']}"
        image = str(call.args["address"]).rsplit(":", 1)[0]
        assert auth.args["address"] == image
        assert auth.args["username"] == "octo-bot"
        secret = auth.args["secret"]
        assert isinstance(secret, Obj)
        assert secret.fields == ["secret"]
        assert secret.arg("secret", "uri") == f"env://{TOKEN_ENV}"
    # The token's value never travels: not in any query, variable or answer, and the module
    # never asks for it (plaintext) nor creates a secret from a value (setSecret).
    for record in engine.queries:
        assert TOKEN not in record.text
        assert TOKEN not in repr(record.variables)
        assert TOKEN not in repr(record.data)
        assert "plaintext" not in record.text
        assert "setSecret" not in record.text


async def test_images_carry_the_publish_time_labels(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    await run(monkeypatch, "refs/tags/v1.2.3")
    for call in engine.calls("publish"):
        labels = {s.args["name"]: s.args["value"] for s in call.receiver.find_all("withLabel")}
        assert labels == {
            "org.opencontainers.image.revision": SHA.lower(),
            "org.opencontainers.image.version": "1.2.3",
            "org.opencontainers.image.created": CREATED,
            "org.opencontainers.image.source": "https://github.com/acme/mcp-trader",
        }


async def test_created_defaults_to_now_in_utc(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    before = datetime.now(UTC).replace(microsecond=0)
    await run(monkeypatch, created=None)
    after = datetime.now(UTC)
    values = {
        s.args["value"]
        for call in engine.calls("publish")
        for s in call.receiver.find_all("withLabel")
        if s.args["name"] == "org.opencontainers.image.created"
    }
    assert len(values) == 1  # one timestamp for both images and every tag
    created = datetime.fromisoformat(values.pop().replace("Z", "+00:00"))
    assert before <= created <= after


async def test_multi_platform_is_one_publish_with_platform_variants(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    await run(monkeypatch, platforms=["linux/amd64", "linux/arm64"])
    assert registry.pushed == plan()  # one publish per address, not one per platform
    for call in engine.calls("publish"):
        service = str(call.args["address"]).rsplit("/", 1)[1].split(":")[0]
        variants = call.args["platformVariants"]
        assert [v.arg("container", "platform") for v in variants] == ["linux/amd64", "linux/arm64"]
        assert all(
            v.arg("from", "address") == f"registry.invalid/base-{service}:1" for v in variants
        )
        # The receiver is an empty container holding only the credentials.
        assert call.receiver.fields == ["container", "withRegistryAuth"]


async def test_single_platform_publishes_the_image_itself(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    await run(monkeypatch, platforms=["linux/arm64"])
    for call in engine.calls("publish"):
        assert call.args.get("platformVariants", []) == []
        assert call.receiver.arg("container", "platform") == "linux/arm64"
        assert call.receiver.fields[-1] == "withRegistryAuth"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"ref": "refs/pull/5/merge"}, "refusing to publish pull request ref"),
        ({"ref": "main"}, "unsupported ref 'main'"),
        ({"sha": "xyz"}, "invalid commit sha"),
        ({"repository": "acme"}, "invalid repository 'acme'"),
        ({"registry": "https://ghcr.io"}, "invalid registry"),
        ({"platforms": ["linux/s390x"]}, "unsupported platform 'linux/s390x'"),
        ({"default_branch": "refs/heads/main"}, "invalid default branch"),
        ({"username": ""}, "invalid registry username"),
        ({"created": "yesterday"}, "invalid created time"),
    ],
)
async def test_bad_input_is_refused_before_any_query(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch, kw: dict[str, Any], message: str
) -> None:
    Registry(engine)
    secret = token_secret(monkeypatch)  # lazy: building it sends nothing
    calls: list[tuple[str, str]] = []
    before = len(engine.queries)
    with pytest.raises(ValueError, match=message):
        await run(monkeypatch, password=secret, build=builder(calls), **kw)
    assert len(engine.queries) == before
    assert calls == []


async def test_allow_pr_publishes_the_pr_tag(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    await run(monkeypatch, "refs/pull/5/merge", allow_pr=True)
    assert registry.pushed == plan("refs/pull/5/merge", allow_pr=True)


async def test_a_build_failure_pushes_nothing_and_names_the_image(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    engine.fail(
        "from",
        when=lambda s: s.args["address"] == "registry.invalid/base-mcp-gateway:1",
        message="failed to resolve source metadata: not found",
    )
    with pytest.raises(PublishError) as err:
        await run(monkeypatch, platforms=["linux/amd64", "linux/arm64"])
    message = str(err.value)
    assert "build failed, nothing was pushed" in message
    assert "mcp-gateway (linux/amd64)" in message
    assert "mcp-gateway (linux/arm64)" in message
    assert "binance-provider" not in message
    assert registry.pushed == []
    assert "publish" not in [field for _, field in engine.evaluated]


async def test_a_refused_push_stops_before_any_moving_tag_and_is_not_retried(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    registry.fail(engine, f"{GATEWAY}:sha-1a2b3c4", "denied: permission_denied: write_package")
    sleeps = Sleeps()
    with pytest.raises(PublishError) as err:
        await run(monkeypatch, sleep=sleeps)
    message = str(err.value)
    assert f"publishing mcp-gateway as {GATEWAY}:sha-1a2b3c4 failed" in message
    assert "not retried" in message
    assert "denied: permission_denied" in message
    assert "no moving tag" in message
    assert f"not pushed: {GATEWAY}:main" not in message  # the list starts with the provider
    assert f"not pushed: {PROVIDER}:main, {GATEWAY}:main, {PROVIDER}:latest" in message
    assert registry.pushed == [f"{PROVIDER}:sha-1a2b3c4"]
    assert registry.attempts == [f"{GATEWAY}:sha-1a2b3c4"]
    assert sleeps.delays == []
    # The engine's own error stays attached for tracebacks.
    cause = err.value.__cause__
    assert cause is not None
    assert isinstance(cause.__cause__, dagger.QueryError)


async def test_a_failed_version_push_leaves_the_moving_version_tags_alone(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    registry.fail(engine, f"{PROVIDER}:1.2.3", "unexpected status: 401 Unauthorized")
    with pytest.raises(PublishError, match=rf"{PROVIDER}:1\.2\.3 failed"):
        await run(monkeypatch, "refs/tags/v1.2.3")
    assert registry.pushed == [f"{PROVIDER}:sha-1a2b3c4", f"{GATEWAY}:sha-1a2b3c4"]


async def test_a_failure_among_moving_tags_says_which_already_moved(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    registry.fail(engine, f"{GATEWAY}:latest", "denied")
    with pytest.raises(PublishError) as err:
        await run(monkeypatch)
    message = str(err.value)
    assert (
        f"moving tags already changed: {PROVIDER}:main, {GATEWAY}:main, {PROVIDER}:latest"
        in message
    )
    assert "not pushed" not in message  # it was the last step
    assert registry.pushed == plan()[:-1]


async def test_transient_errors_are_retried_with_backoff(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    address = f"{GATEWAY}:sha-1a2b3c4"
    registry.fail(
        engine,
        address,
        f"failed to push {address}: unexpected status from PUT request: 503 Service Unavailable",
        times=2,
    )
    sleeps = Sleeps()
    result = await run(monkeypatch, sleep=sleeps)
    assert sleeps.delays == [2.0, 4.0]
    assert registry.attempts == [address] * 3
    assert registry.pushed == plan()
    assert len(result) == 6


async def test_retries_are_bounded(engine: EngineDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(engine)
    address = f"{PROVIDER}:sha-1a2b3c4"
    registry.fail(engine, address, "dial tcp 140.82.0.1:443: i/o timeout")
    sleeps = Sleeps()
    with pytest.raises(PublishError) as err:
        await run(monkeypatch, sleep=sleeps, retry=RetryPolicy(attempts=3, first_delay=1))
    assert "gave up after 3 attempts on transient registry errors" in str(err.value)
    assert "i/o timeout" in str(err.value)
    assert sleeps.delays == [1.0, 2.0]
    assert registry.attempts == [address] * 3
    assert registry.pushed == []


async def test_a_tag_with_another_digest_stops_publishing(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    other = "sha256:" + "f" * 64
    registry.digest = lambda a: other if a == f"{PROVIDER}:main" else digest_for(a)
    with pytest.raises(PublishError) as err:
        await run(monkeypatch)
    message = str(err.value)
    assert f"checking binance-provider as {PROVIDER}:main failed" in message
    assert f"{PROVIDER}:main got digest {other} but {PROVIDER}:sha-1a2b3c4 got" in message
    assert f"moving tags already changed: {PROVIDER}:main" in message
    assert registry.pushed == plan()[:3]


async def test_a_publish_without_digest_is_an_error(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.answer("Container.publish", lambda call: str(call.args["address"]))
    with pytest.raises(PublishError, match="cannot prove which content"):
        await run(monkeypatch)


# ======================================================================== the module's functions


def module() -> McpTrader:
    # @object_type makes the class a dataclass at runtime; mypy does not see its fields.
    return McpTrader(source=dag.directory())  # type: ignore[call-arg]


async def test_tags_function_is_the_dry_run(engine: EngineDouble) -> None:
    before = len(engine.queries)
    assert module().tags(sha=SHA, ref="refs/tags/v1.2.3") == ["sha-1a2b3c4", "1.2.3", "1.2", "1"]
    assert module().tags(sha=SHA, ref="refs/heads/trunk", default_branch="trunk") == [
        "sha-1a2b3c4",
        "trunk",
        "latest",
    ]
    with pytest.raises(ValueError, match="unsupported ref 'main'"):
        module().tags(sha=SHA, ref="main")
    assert len(engine.queries) == before  # pure: the engine is never asked anything


async def test_publish_function_pushes_the_module_builds(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    result = await module().publish(
        repository="Acme/MCP-Trader",
        username="octo-bot",
        password=token_secret(monkeypatch),
        sha=SHA,
        ref="refs/heads/main",
        platforms=["linux/amd64", "linux/arm64"],
        created=CREATED,
        unsigned=True,
    )
    assert registry.pushed == plan()
    assert result == [f"{a}@{digest_for(a)}" for a in plan()]
    for call in engine.calls("publish"):
        variants = call.args["platformVariants"]
        assert len(variants) == 2
        for variant in variants:
            labels = {s.args["name"]: s.args["value"] for s in variant.find_all("withLabel")}
            # The build's static labels plus the four publish adds, with the real values.
            assert labels["org.opencontainers.image.revision"] == SHA.lower()
            assert labels["org.opencontainers.image.version"] == "main"
            assert labels["org.opencontainers.image.created"] == CREATED
            assert labels["org.opencontainers.image.source"] == "https://github.com/acme/mcp-trader"
            assert labels["org.opencontainers.image.licenses"] == "MIT"
            assert "org.opencontainers.image.title" in labels
    for record in engine.queries:
        assert TOKEN not in record.text
    # Each target triple has its own target/ volume: the arm64 build never waits for amd64's.
    assert engine.serialized_conflicts() == []
    assert engine.serialized_volumes() == {
        "mcp-trader-provider-target-release-x86_64",
        "mcp-trader-provider-target-release-aarch64",
    }


async def test_publish_function_defaults_to_amd64_and_refuses_prs_before_building(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    secret = token_secret(monkeypatch)
    before = len(engine.queries)
    with pytest.raises(ValueError, match="--allow-pr"):
        await module().publish(
            repository="acme/mcp-trader",
            username="octo-bot",
            password=secret,
            sha=SHA,
            ref="refs/pull/9/merge",
            unsigned=True,
        )
    assert len(engine.queries) == before
    await module().publish(
        repository="acme/mcp-trader",
        username="octo-bot",
        password=secret,
        sha=SHA,
        ref="refs/pull/9/merge",
        allow_pr=True,
        unsigned=True,
    )
    assert registry.pushed == plan("refs/pull/9/merge", allow_pr=True)
    for call in engine.calls("publish"):
        assert call.args.get("platformVariants", []) == []


# ======================================================================== registration


def test_tags_and_publish_register_with_the_sdk(
    registered_functions: dict[str, Function],
) -> None:
    tags, publish = registered_functions["tags"], registered_functions["publish"]
    assert tags.cache_policy is None  # pure: cacheable
    assert list(tags.args) == ["sha", "ref", "default_branch"]
    assert publish.cache_policy == "Never"  # a side effect: never cached
    args = publish.args
    assert list(args) == [
        "repository",
        "username",
        "password",
        "sha",
        "ref",
        "registry",
        "platforms",
        "default_branch",
        "allow_pr",
        *(a["name"] for a in SIGNING_ARGS),
    ]
    assert required(publish) == {"repository", "username", "password", "sha", "ref"}
    assert object_name(args["password"]) == "Secret"  # the token only ever as a Secret
    assert args["registry"]["defaultValue"] == '"ghcr.io"'
    assert args["default_branch"]["defaultValue"] == '"main"'
    assert args["allow_pr"]["defaultValue"] == "false"
    assert is_optional(args["platforms"]) and is_optional(args["created"])
