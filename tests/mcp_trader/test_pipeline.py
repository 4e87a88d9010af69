"""The `ci` function: when it publishes, what it publishes, and how a failure reads.

The decision (`decide`) and the error reporting are pure and tested directly. The function itself
runs against the engine double (tests/enginedouble): every query it sends is recorded, so the tests
assert that a pull request never reaches `publish`, and which addresses a push does publish.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dagger
import pytest
from dagger import dag
from mcp_trader.main import McpTrader
from mcp_trader.pipeline import (
    CiError,
    Decision,
    decide,
    describe,
    flatten,
    run_ci,
    validate_credentials,
)
from mcp_trader.supply import SigningFlags

from tests.enginedouble import Call, EngineDouble
from tests.mcp_trader.test_provider import cargo_command, fail_cargo
from tests.mcp_trader.test_publish import TOKEN, Registry, digest_for, token_secret
from tests.mcp_trader.test_supply import SIGNING_ARGS
from tests.registration import Function, is_optional

REPO = Path(__file__).resolve().parents[2]
SHA = "1A2B3C4D5E6F7081920a1b2c3d4e5f6071829304"
SHORT = "sha-1a2b3c4"


# ---------------------------------------------------------------------------------------------
# decide: what a ref means


@pytest.mark.parametrize(
    ("ref", "tags"),
    [
        ("refs/heads/main", (SHORT, "main", "latest")),
        ("refs/tags/v1.2.3", (SHORT, "1.2.3", "1.2", "1")),
        ("refs/tags/v2.0.0-rc.1", (SHORT, "2.0.0-rc.1")),
        ("refs/tags/v0.3.1", (SHORT, "0.3.1", "0.3")),
    ],
)
def test_default_branch_and_release_tags_publish(ref: str, tags: tuple[str, ...]) -> None:
    decision = decide(sha=SHA, ref=ref)
    assert decision.publish
    assert decision.tags == tags


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("refs/pull/42/merge", "pull request #42"),
        ("refs/pull/42/head", "pull request #42"),
        ("refs/heads/feature/login", "'feature/login' is not the default branch 'main'"),
        ("refs/heads/mainline", "'mainline' is not the default branch"),
        ("refs/tags/release-1", "'release-1' is not a release tag"),
    ],
)
def test_other_refs_only_test_and_build(ref: str, says: str) -> None:
    decision = decide(sha=SHA, ref=ref)
    assert decision == Decision(publish=False, reason=decision.reason, tags=())
    assert says in decision.reason
    assert "tested and built only" in decision.reason


def test_the_default_branch_is_configurable() -> None:
    assert decide(sha=SHA, ref="refs/heads/trunk", default_branch="trunk").tags == (
        SHORT,
        "trunk",
        "latest",
    )
    assert not decide(sha=SHA, ref="refs/heads/main", default_branch="trunk").publish


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sha": "xyz", "ref": "refs/heads/main"}, "invalid commit sha 'xyz'"),
        ({"sha": SHA, "ref": "main"}, "unsupported ref 'main'"),
        ({"sha": SHA, "ref": "refs/remotes/origin/main"}, "unsupported ref"),
        ({"sha": SHA, "ref": "refs/pull/abc/merge"}, "invalid pull request number 'abc'"),
        (
            {"sha": SHA, "ref": "refs/heads/main", "default_branch": "refs/heads/main"},
            "invalid default branch 'refs/heads/main'",
        ),
        # Publishing refs go through the tag rules, which refuse a build-metadata version.
        ({"sha": SHA, "ref": "refs/tags/v1.2.3+build.5"}, "build metadata"),
    ],
)
def test_bad_input_is_refused_with_the_bad_value(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        decide(**kwargs)


def test_a_bad_sha_fails_even_when_nothing_would_be_published() -> None:
    with pytest.raises(ValueError, match="invalid commit sha"):
        decide(sha="not-a-sha", ref="refs/pull/1/merge")


@pytest.mark.parametrize("branch", ["a..b", "x.lock", "-x", "x/", "@", "foo.", "a//b"])
@pytest.mark.parametrize("ref", ["refs/pull/7/merge", "refs/heads/main", "refs/tags/v1.2.3"])
def test_a_default_branch_git_refuses_is_refused_whatever_the_ref(branch: str, ref: str) -> None:
    # One validator (tags.validate_branch) for the tag rules and the decision: these used to
    # pass for a pull request and fail for refs/heads/main.
    with pytest.raises(ValueError, match="invalid default branch"):
        decide(sha=SHA, ref=ref, default_branch=branch)


@pytest.mark.parametrize(
    "ref", ["refs/heads/a..b", "refs/heads/x.lock", "refs/tags/x/", "refs/heads/a//b"]
)
def test_a_ref_git_refuses_is_refused_even_when_it_would_not_publish(ref: str) -> None:
    with pytest.raises(ValueError, match="invalid ref"):
        decide(sha=SHA, ref=ref)


def test_publishing_without_credentials_is_refused_up_front() -> None:
    decision = decide(sha=SHA, ref="refs/heads/main")
    with pytest.raises(ValueError, match="--username and --password is missing"):
        validate_credentials(decision, None, None)
    with pytest.raises(ValueError, match="invalid registry username"):
        validate_credentials(decision, "has space", object())  # type: ignore[arg-type]


def test_no_credentials_needed_when_not_publishing() -> None:
    assert validate_credentials(decide(sha=SHA, ref="refs/pull/3/merge"), None, None) is None


# ---------------------------------------------------------------------------------------------
# Failure messages


def test_exception_groups_are_unwrapped_into_their_messages() -> None:
    group = BaseExceptionGroup(
        "unhandled errors in a TaskGroup",
        [
            ValueError("clippy: unused variable"),
            ExceptionGroup("inner", [OSError("pytest: 1 failed")]),
        ],
    )
    assert [str(e) for e in flatten(group)] == ["clippy: unused variable", "pytest: 1 failed"]
    assert describe(group) == "clippy: unused variable; pytest: 1 failed"
    assert "TaskGroup" not in describe(group)


def test_ci_error_names_every_failed_stage() -> None:
    error = CiError([("test", RuntimeError("cargo test: 2 failed")), ("build gateway", KeyError())])
    assert str(error).splitlines() == [
        "ci failed at stage 'test': cargo test: 2 failed",
        "ci failed at stage 'build gateway': KeyError",
    ]


# ---------------------------------------------------------------------------------------------
# The orchestration against the engine double (test and builds injected)

REPOSITORY = "Acme/MCP-Trader"
PROVIDER = "ghcr.io/acme/mcp-trader/binance-provider"
GATEWAY = "ghcr.io/acme/mcp-trader/mcp-gateway"


async def fake_test_suite() -> str:
    return await dag.container().from_("registry.invalid/tests:1").with_exec(["run-tests"]).stdout()


async def fake_build(service: str, platform: dagger.Platform) -> dagger.Container:
    return dag.container(platform=platform).from_(f"registry.invalid/base-{service}:1")


async def run(monkeypatch: pytest.MonkeyPatch, ref: str, **kw: object) -> str:
    args: dict[str, object] = {
        "test": fake_test_suite,
        "build": fake_build,
        "sha": SHA,
        "ref": ref,
        "repository": REPOSITORY,
        "username": "octo-bot",
        "password": token_secret(monkeypatch),
        # Signing is supply.py's (tests/mcp_trader/test_supply.py); these tests are about ci.
        "signing": SigningFlags(unsigned=True),
    }
    args.update(kw)
    return await run_ci(**args)  # type: ignore[arg-type]


def queries_text(engine: EngineDouble) -> str:
    return "\n".join(q.text for q in engine.queries)


async def test_pull_request_never_reaches_publish(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    report = await run(monkeypatch, "refs/pull/7/merge")
    assert registry.pushed == []
    assert engine.calls("publish") == []
    assert "publish" not in queries_text(engine)
    assert "withRegistryAuth" not in queries_text(engine)
    assert "publish: skipped: pull request #7" in report
    # It did test and build.
    assert [c.args["args"] for c in engine.calls("withExec")] == [["run-tests"]]
    assert {str(c.args["address"]) for c in engine.calls("from")} >= {
        "registry.invalid/base-binance-provider:1",
        "registry.invalid/base-mcp-gateway:1",
    }


async def test_pull_request_needs_no_credentials(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = await run(monkeypatch, "refs/pull/7/merge", username=None, password=None)
    assert "publish: skipped" in report


async def test_default_branch_publishes_sha_branch_and_latest(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    report = await run(monkeypatch, "refs/heads/main")
    assert registry.pushed == [
        f"{PROVIDER}:sha-1a2b3c4",
        f"{GATEWAY}:sha-1a2b3c4",
        f"{PROVIDER}:main",
        f"{GATEWAY}:main",
        f"{PROVIDER}:latest",
        f"{GATEWAY}:latest",
    ]
    for address in registry.pushed:
        assert f"  {address}@{digest_for(address)}" in report.splitlines()
    assert "publish: push to the default branch main" in report
    assert TOKEN not in queries_text(engine)  # by reference only


async def test_release_tag_publishes_versions_and_no_latest(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    await run(monkeypatch, "refs/tags/v1.2.3")
    tags = [address.rsplit(":", 1)[1] for address in registry.pushed]
    assert tags == ["sha-1a2b3c4", "sha-1a2b3c4", "1.2.3", "1.2.3", "1.2", "1.2", "1", "1"]
    assert "latest" not in tags


async def test_other_branches_build_and_test_only(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    report = await run(monkeypatch, "refs/heads/feature/x")
    assert registry.pushed == []
    assert "publish: skipped: branch 'feature/x' is not the default branch" in report


async def test_publishes_the_images_it_built_and_tested(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    await run(monkeypatch, "refs/heads/main")
    # Every pushed container is the built one (labelled by publish), not a second build.
    bases = {c.receiver.arg("from", "address") for c in engine.calls("publish")}
    assert bases == {
        "registry.invalid/base-binance-provider:1",
        "registry.invalid/base-mcp-gateway:1",
    }


async def test_test_and_builds_are_issued_before_either_is_awaited(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test stage's query blocks in the engine until both builds were evaluated: a
    sequential implementation would never send the builds and this would time out."""

    def both_builds_seen() -> bool:
        synced = {obj.arg("from", "address") for obj, leaf in engine.evaluated if leaf == "sync"}
        return {
            "registry.invalid/base-binance-provider:1",
            "registry.invalid/base-mcp-gateway:1",
        } <= synced

    def test_output(_: Call) -> str:
        deadline = time.monotonic() + 5
        while not both_builds_seen():
            if time.monotonic() > deadline:
                return "builds were not issued concurrently"
            time.sleep(0.01)
        return "concurrent"

    engine.answer("Container.stdout", test_output)
    outputs: list[str] = []

    async def recording_test_suite() -> str:
        outputs.append(await fake_test_suite())
        return outputs[-1]

    await run(monkeypatch, "refs/pull/1/merge", test=recording_test_suite)
    assert outputs == ["concurrent"]


async def test_a_failing_test_stage_is_named_and_nothing_is_published(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    engine.fail(
        "withExec",
        when=lambda step: step.args["args"] == ["run-tests"],
        exit_code=101,
        stderr="error[E0425]: cannot find value `x` in this scope",
    )
    with pytest.raises(CiError) as failure:
        await run(monkeypatch, "refs/heads/main")
    assert str(failure.value).startswith("ci failed at stage 'test': ")
    assert "cannot find value `x`" in str(failure.value)
    assert [stage for stage, _ in failure.value.failures] == ["test"]
    assert registry.pushed == []


async def test_every_failing_stage_is_named(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    engine.fail(
        "from",
        when=lambda step: "base-mcp-gateway" in str(step.args["address"]),
        message="failed to resolve source metadata for registry.invalid/base-mcp-gateway:1",
    )

    async def grouped_failure() -> None:
        # What an anyio task group raises when two checks fail.
        raise ExceptionGroup(
            "unhandled errors in a TaskGroup",
            [RuntimeError("clippy: 1 error"), RuntimeError("pytest: 2 failed")],
        )

    with pytest.raises(CiError) as failure:
        await run(monkeypatch, "refs/heads/main", test=grouped_failure)
    lines = str(failure.value).splitlines()
    assert lines[0] == "ci failed at stage 'test': clippy: 1 error; pytest: 2 failed"
    assert lines[1].startswith("ci failed at stage 'build gateway': ")
    assert "base-mcp-gateway" in lines[1]
    assert engine.calls("publish") == []


async def test_a_failing_push_is_named_publish(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    engine.fail(
        "Container.publish",
        when=lambda step: str(step.args["address"]).endswith(":sha-1a2b3c4"),
        message="denied: permission_denied: write_package",
    )
    with pytest.raises(CiError, match=r"^ci failed at stage 'publish': .*denied"):
        await run(monkeypatch, "refs/heads/main")


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"username": None}, "--username is missing"),
        ({"password": None}, "--password is missing"),
        ({"repository": "no-slash"}, "invalid repository 'no-slash'"),
        ({"ref": "refs/tags/v1.2.3+build.7"}, "build metadata"),
    ],
)
async def test_bad_input_fails_before_any_query(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch, kw: dict[str, object], message: str
) -> None:
    ref = str(kw.pop("ref", "refs/heads/main"))
    before = len(engine.queries)
    with pytest.raises(ValueError, match=message):
        await run(monkeypatch, ref, **kw)
    # Only the secret lookup done by the test itself may have been sent.
    assert all("withExec" not in q.text and "from" not in q.text for q in engine.queries[before:])


# ---------------------------------------------------------------------------------------------
# `McpTrader.ci` itself: the module's real test suite and builds, through the engine double


def module() -> McpTrader:
    return McpTrader(source=dag.directory())  # type: ignore[call-arg]


async def ci(monkeypatch: pytest.MonkeyPatch, ref: str, **kw: object) -> str:
    args: dict[str, Any] = {
        "sha": SHA,
        "ref": ref,
        "repository": REPOSITORY,
        "username": "octo-bot",
        "password": token_secret(monkeypatch),
        "unsigned": True,
    }
    args.update(kw)
    return await module().ci(**args)


def exec_args(engine: EngineDouble) -> list[list[str]]:
    return [cargo_command(c.args["args"]) for c in engine.calls("withExec")]


async def test_ci_function_on_a_pull_request_tests_and_builds_without_publish(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    report = await ci(monkeypatch, "refs/pull/12/merge", username=None, password=None)
    text = queries_text(engine)
    assert "publish" not in text and "withRegistryAuth" not in text
    assert registry.pushed == []
    assert "publish: skipped: pull request #12" in report
    # The real suite ran: the Rust and Python checks are among the execs.
    commands = exec_args(engine)
    assert ["cargo", "clippy", "--locked", "--all-targets", "--", "-D", "warnings"] in commands
    assert ["uv", "run", "--locked", "pytest", "-m", "not node"] in commands


async def test_ci_function_issues_no_two_jobs_on_one_serialized_volume(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ci(monkeypatch, "refs/pull/12/merge", username=None, password=None)
    assert engine.serialized_conflicts() == []


async def test_ci_function_on_main_publishes_sha_branch_and_latest(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    report = await ci(monkeypatch, "refs/heads/main")
    assert registry.pushed == [
        f"{image}:{tag}"
        for tag in ("sha-1a2b3c4", "main", "latest")
        for image in (PROVIDER, GATEWAY)
    ]
    assert f"  {PROVIDER}:latest@{digest_for(PROVIDER + ':latest')}" in report.splitlines()
    assert TOKEN not in queries_text(engine)
    # The pushed containers carry the module's runtime images' entrypoints, not placeholders.
    entrypoints = {str(c.receiver.arg("withEntrypoint", "args")) for c in engine.calls("publish")}
    assert len(entrypoints) == 2


async def test_ci_function_on_a_release_tag_publishes_versions_and_no_latest(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    await ci(monkeypatch, "refs/tags/v1.2.3")
    tags = [address.rsplit(":", 1)[1] for address in registry.pushed]
    assert tags == ["sha-1a2b3c4", "sha-1a2b3c4", "1.2.3", "1.2.3", "1.2", "1.2", "1", "1"]


async def test_ci_function_names_a_failing_test_stage(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(engine)
    fail_cargo(engine, "clippy", stderr="error: unused variable: `spread`")
    with pytest.raises(CiError) as failure:
        await ci(monkeypatch, "refs/heads/main")
    message = str(failure.value)
    assert message.startswith("ci failed at stage 'test': ")
    assert "provider-lint" in message and "unused variable: `spread`" in message
    assert [stage for stage, _ in failure.value.failures] == ["test"]
    assert registry.pushed == []
    assert engine.calls("publish") == []


async def test_ci_function_names_a_failing_build(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    Registry(engine)
    engine.fail(
        "withExec",
        when=lambda step: (
            "uv sync" in " ".join(step.args["args"]) and "--no-dev" in " ".join(step.args["args"])
        ),
        exit_code=2,
        stderr="error: Failed to download `mcp==1.2.3`",
    )
    with pytest.raises(CiError) as failure:
        await ci(monkeypatch, "refs/heads/main")
    stages = [stage for stage, _ in failure.value.failures]
    assert "build gateway" in stages and "build provider" not in stages
    assert "Failed to download `mcp==1.2.3`" in str(failure.value)
    assert engine.calls("publish") == []


# ---------------------------------------------------------------------------------------------
# Registration: the SDK's own code must accept `ci`'s signature


def test_ci_registers_uncached_with_optional_credentials(
    registered_functions: dict[str, Function],
) -> None:
    ci = registered_functions["ci"]
    assert ci.cache_policy == "Never"
    args = [
        {"name": n, "optional": is_optional(a), "default": a.get("defaultValue")}
        for n, a in ci.args.items()
    ]
    assert args == [
        {"name": "sha", "optional": False, "default": None},
        {"name": "ref", "optional": False, "default": None},
        {"name": "repository", "optional": False, "default": None},
        {"name": "username", "optional": True, "default": "null"},
        {"name": "password", "optional": True, "default": "null"},
        {"name": "default_branch", "optional": False, "default": '"main"'},
        *SIGNING_ARGS,
    ]
