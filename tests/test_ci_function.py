"""The `ci` function: when it publishes, what it publishes, and how a failure reads.

The decision (`decide`) and the error reporting are pure and tested directly. The function itself
runs against the engine double (tests/enginedouble): every query it sends is recorded, so the tests
assert that a pull request never reaches `publish`, and which addresses a push does publish.
"""

from __future__ import annotations

import pytest
from mcp_trader.pipeline import (
    CiError,
    Decision,
    check_credentials,
    check_default_branch,
    decide,
    describe,
    flatten,
)

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


@pytest.mark.parametrize("branch", ["main", "release/2.x", "trunk"])
def test_check_default_branch_accepts_branch_names(branch: str) -> None:
    assert check_default_branch(branch) == branch


@pytest.mark.parametrize("branch", ["", "refs/heads/main", "has space", "a:b"])
def test_check_default_branch_refuses(branch: str) -> None:
    with pytest.raises(ValueError, match="invalid default branch"):
        check_default_branch(branch)


def test_publishing_without_credentials_is_refused_up_front() -> None:
    decision = decide(sha=SHA, ref="refs/heads/main")
    with pytest.raises(ValueError, match="--username and --password is missing"):
        check_credentials(decision, None, None)
    with pytest.raises(ValueError, match="invalid registry username"):
        check_credentials(decision, "has space", object())  # type: ignore[arg-type]


def test_no_credentials_needed_when_not_publishing() -> None:
    assert check_credentials(decide(sha=SHA, ref="refs/pull/3/merge"), None, None) is None


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
