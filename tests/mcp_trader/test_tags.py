"""The tag rules of `publish` (ci/src/mcp_trader/tags.py): pure, no engine."""

from __future__ import annotations

import pytest
from mcp_trader.tags import (
    ImageTag,
    github_source_url,
    image_repository,
    image_tags,
    parse_ref,
    short_sha_tag,
    tag_plan,
    validate_branch,
    validate_registry_username,
    version_label,
)

SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


def tags(ref: str, *, sha: str = SHA, default_branch: str = "main") -> list[str]:
    return image_tags(sha=sha, ref=ref, default_branch=default_branch)


# --- sha -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sha", "expected"),
    [
        (SHA, "sha-1a2b3c4"),
        (SHA.upper(), "sha-1a2b3c4"),
        ("ABCDEF0", "sha-abcdef0"),  # exactly 7: the shortest accepted
        ("abcdef0123", "sha-abcdef0"),
    ],
)
def test_sha_tag_is_first_seven_hex_lowercase(sha: str, expected: str) -> None:
    assert short_sha_tag(sha) == expected
    assert tags("refs/heads/dev", sha=sha)[0] == expected


@pytest.mark.parametrize(
    "sha",
    [
        "",
        "abcdef",  # 6 digits
        SHA + "a",  # 41 digits
        "1a2b3c4g",  # not hex
        " 1a2b3c4",  # whitespace is not trimmed
        "1a2b3c4\n",
        "0x1a2b3c4",
        "１２３４５６７",  # noqa: RUF001 - fullwidth digits are not hex digits
    ],
)
def test_bad_sha_is_refused_and_named(sha: str) -> None:
    with pytest.raises(ValueError, match="7 to 40 hexadecimal") as err:
        tags("refs/heads/main", sha=sha)
    assert repr(sha) in str(err.value)


# --- branches --------------------------------------------------------------------------------


def test_default_branch_gets_branch_then_latest() -> None:
    assert tags("refs/heads/main") == ["sha-1a2b3c4", "main", "latest"]


def test_other_branch_does_not_move_latest() -> None:
    assert tags("refs/heads/dev") == ["sha-1a2b3c4", "dev"]


def test_default_branch_is_configurable() -> None:
    assert tags("refs/heads/trunk", default_branch="trunk") == ["sha-1a2b3c4", "trunk", "latest"]
    assert tags("refs/heads/main", default_branch="trunk") == ["sha-1a2b3c4", "main"]


def test_default_branch_comparison_is_on_the_real_name_not_the_sanitized_one() -> None:
    # `release/1.x` and `release-1.x` sanitize alike; only the real default branch moves latest.
    assert tags("refs/heads/release/1.x", default_branch="release/1.x")[-1] == "latest"
    assert tags("refs/heads/release-1.x", default_branch="release/1.x") == [
        "sha-1a2b3c4",
        "release-1.x",
    ]


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        ("feature/Login#12", "feature-Login-12"),  # the example: case is kept
        ("a/b/c", "a-b-c"),
        ("fix/über-straße", "fix-ber-stra-e"),  # non-ASCII letters are outside the tag charset
        ("a##b", "a-b"),  # a run of bad characters becomes one '-'
        ("dependabot/npm_and_yarn/x-1.2", "dependabot-npm_and_yarn-x-1.2"),
        ("-x-", "x-"),  # leading '-' removed, trailing kept (a tag may end with '-')
        ("_keep", "_keep"),  # '_' may start a tag
        ("#1-hotfix", "1-hotfix"),  # '#' -> '-' then the leading '-' is removed
        ("-x", "x"),
        ("--.x", "x"),
    ],
)
def test_branch_is_sanitized(branch: str, expected: str) -> None:
    assert tags(f"refs/heads/{branch}") == ["sha-1a2b3c4", expected]


def test_leading_dots_and_dashes_are_removed_after_replacement() -> None:
    # git forbids a leading '.', so a leading dot reaches us only after a replaced character.
    assert tags("refs/heads/#.-.x") == ["sha-1a2b3c4", "x"]


def test_branch_tag_is_cut_to_128_characters() -> None:
    branch = "b" * 100 + "/" + "c" * 100
    result = tags(f"refs/heads/{branch}")
    assert result[1] == ("b" * 100 + "-" + "c" * 100)[:128]
    assert len(result[1]) == 128


def test_branch_exactly_128_characters_is_kept() -> None:
    assert tags(f"refs/heads/{'a' * 128}")[1] == "a" * 128


@pytest.mark.parametrize("branch", ["###", "é", "#-#", "日本"])
def test_branch_that_sanitizes_to_empty_is_refused(branch: str) -> None:
    with pytest.raises(ValueError, match="empty image tag") as err:
        tags(f"refs/heads/{branch}")
    assert repr(branch) in str(err.value)


@pytest.mark.parametrize(
    "branch",
    ["latest", "sha-abcdef0", "pr-12", "1", "1.2", "1.2.3", "1.2.3-rc.1", "#latest"],
)
def test_branch_that_would_overwrite_a_reserved_tag_is_refused(branch: str) -> None:
    with pytest.raises(ValueError, match="reserves"):
        tags(f"refs/heads/{branch}")


@pytest.mark.parametrize("branch", ["latest-fixes", "sha-fix", "pr-review", "2024-q1", "v1.2"])
def test_branch_only_resembling_a_reserved_tag_is_fine(branch: str) -> None:
    assert tags(f"refs/heads/{branch}") == ["sha-1a2b3c4", branch]


@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/",
        "refs/heads/a..b",
        "refs/heads/a b",
        "refs/heads/a~1",
        "refs/heads/a:b",
        "refs/heads/a\\b",
        "refs/heads/a//b",
        "refs/heads/.hidden",
        "refs/heads/x.lock",
        "refs/heads/x.",
        "refs/heads/x/",
        "refs/heads/main\n",
        "refs/heads/a@{1}",
    ],
)
def test_branch_ref_that_git_would_refuse_is_refused(ref: str) -> None:
    with pytest.raises(ValueError, match="invalid ref") as err:
        tags(ref)
    assert repr(ref) in str(err.value)


@pytest.mark.parametrize("branch", ["main", "release/2.x", "trunk"])
def test_validate_branch_accepts_branch_names(branch: str) -> None:
    assert validate_branch(branch) == branch


@pytest.mark.parametrize("branch", ["", "refs/heads/main", "has space", "a:b"])
def test_validate_branch_refuses(branch: str) -> None:
    with pytest.raises(ValueError, match="invalid default branch"):
        validate_branch(branch, what="default branch")


@pytest.mark.parametrize(
    ("ref", "kind", "name"),
    [
        ("refs/heads/feature/x", "branch", "feature/x"),
        ("refs/tags/v1.2.3", "tag", "v1.2.3"),
        ("refs/pull/7/merge", "pull", "7"),
    ],
)
def test_parse_ref(ref: str, kind: str, name: str) -> None:
    parsed = parse_ref(ref)
    assert (parsed.ref, parsed.kind, parsed.name) == (ref, kind, name)


def test_only_a_pull_request_ref_has_a_number() -> None:
    with pytest.raises(ValueError, match="not a pull request ref"):
        _ = parse_ref("refs/heads/main").number


@pytest.mark.parametrize("default_branch", ["", "refs/heads/main", "a..b", "-x", "ma in", "x/"])
def test_bad_default_branch_is_refused(default_branch: str) -> None:
    with pytest.raises(ValueError, match="default branch") as err:
        tags("refs/heads/main", default_branch=default_branch)
    assert repr(default_branch) in str(err.value)


# --- git tags --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("v1.2.3", ["1.2.3", "1.2", "1"]),
        ("1.2.3", ["1.2.3", "1.2", "1"]),
        ("v10.20.30", ["10.20.30", "10.20", "10"]),
        ("v0.1.0", ["0.1.0", "0.1"]),  # no bare `0`
        ("v0.0.1", ["0.0.1", "0.0"]),
        ("v2.0.0-rc.1", ["2.0.0-rc.1"]),  # a pre-release never moves X.Y or X
        ("v1.0.0-alpha-beta.0.x", ["1.0.0-alpha-beta.0.x"]),
    ],
)
def test_semver_tags(tag: str, expected: list[str]) -> None:
    assert tags(f"refs/tags/{tag}") == ["sha-1a2b3c4", *expected]


def test_tags_never_move_latest_even_on_the_default_branch_commit() -> None:
    for tag in ("v1.2.3", "release-2024"):
        assert "latest" not in tags(f"refs/tags/{tag}")


@pytest.mark.parametrize("tag", ["v1.2.3+build.5", "1.2.3+meta", "v2.0.0-rc.1+sha.abc"])
def test_semver_build_metadata_is_refused(tag: str) -> None:
    with pytest.raises(ValueError, match=r"build metadata") as err:
        tags(f"refs/tags/{tag}")
    assert repr(tag) in str(err.value)
    assert "'+' is not allowed" in str(err.value)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("release-2024", "release-2024"),
        ("v1.2", "v1.2"),  # two parts: not semver
        ("V1.2.3", "V1.2.3"),  # only a lowercase 'v' prefix is semver here
        ("v01.2.3", "v01.2.3"),  # leading zeros: not semver
        ("1.2.3.4", "1.2.3.4"),
        ("nightly/2024#1", "nightly-2024-1"),
        ("v1.2.3-", "v1.2.3-"),  # empty pre-release: not semver
    ],
)
def test_non_semver_tag_is_its_sanitized_name(tag: str, expected: str) -> None:
    assert tags(f"refs/tags/{tag}") == ["sha-1a2b3c4", expected]


@pytest.mark.parametrize("tag", ["latest", "1.2", "7", "pr-3"])
def test_non_semver_tag_that_would_overwrite_a_reserved_tag_is_refused(tag: str) -> None:
    with pytest.raises(ValueError, match="reserves"):
        tags(f"refs/tags/{tag}")


def test_over_long_pre_release_is_refused_not_cut() -> None:
    tag = "v1.2.3-" + "a" * 130
    with pytest.raises(ValueError, match="longer than the 128"):
        tags(f"refs/tags/{tag}")


def test_empty_tag_ref_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid ref 'refs/tags/'"):
        tags("refs/tags/")


# --- pull requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["merge", "head"])
def test_pull_request_refs(kind: str) -> None:
    assert tags(f"refs/pull/42/{kind}") == ["sha-1a2b3c4", "pr-42"]
    assert parse_ref(f"refs/pull/42/{kind}").kind == "pull"
    assert parse_ref(f"refs/pull/42/{kind}").number == 42


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("refs/pull/0/merge", "invalid pull request number '0'"),
        ("refs/pull/007/merge", "invalid pull request number '007'"),
        ("refs/pull/-1/merge", "invalid pull request number '-1'"),
        ("refs/pull/abc/merge", "invalid pull request number 'abc'"),
        ("refs/pull//merge", "invalid pull request number ''"),
        ("refs/pull/12", "unsupported pull request ref"),
        ("refs/pull/12/", "unsupported pull request ref"),
        ("refs/pull/12/rebase", "unsupported pull request ref"),
        ("refs/pull/12/merge/x", "unsupported pull request ref"),
        ("refs/pull/١٢/merge", "invalid pull request number"),  # Arabic-Indic digits
    ],
)
def test_bad_pull_request_refs_are_refused(ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tags(ref)


# --- everything else -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "main",
        "heads/main",
        "refs/remotes/origin/main",
        "refs/notes/commits",
        "refs/heads",
        "refs/tags",
        "REFS/HEADS/main",
        " refs/heads/main",
    ],
)
def test_other_refs_are_refused_with_the_accepted_forms(ref: str) -> None:
    with pytest.raises(ValueError, match="unsupported ref") as err:
        tags(ref)
    message = str(err.value)
    assert repr(ref) in message
    assert "refs/heads/<branch>" in message
    assert "refs/pull/<number>/merge" in message


def test_plan_marks_what_moves() -> None:
    assert tag_plan(sha=SHA, ref="refs/tags/v1.2.3") == [
        ImageTag("sha-1a2b3c4", moving=False),
        ImageTag("1.2.3", moving=False),
        ImageTag("1.2", moving=True),
        ImageTag("1", moving=True),
    ]
    assert [t.moving for t in tag_plan(sha=SHA, ref="refs/heads/main")] == [False, True, True]
    assert [t.moving for t in tag_plan(sha=SHA, ref="refs/pull/3/merge")] == [False, True]
    assert [t.moving for t in tag_plan(sha=SHA, ref="refs/tags/rel-1")] == [False, False]


@pytest.mark.parametrize(
    ("ref", "version"),
    [
        ("refs/tags/v1.2.3", "1.2.3"),
        ("refs/tags/v2.0.0-rc.1", "2.0.0-rc.1"),
        ("refs/heads/main", "main"),
        ("refs/heads/feature/x", "feature-x"),
        ("refs/pull/9/merge", "pr-9"),
    ],
)
def test_version_label_is_the_first_non_sha_tag(ref: str, version: str) -> None:
    assert version_label(tags(ref)) == version


def test_version_label_falls_back_to_sha_and_refuses_nothing() -> None:
    assert version_label(["sha-1a2b3c4"]) == "sha-1a2b3c4"
    with pytest.raises(ValueError, match="no tags"):
        version_label([])


# --- image names -----------------------------------------------------------------------------


def test_image_repository_lowercases_owner_and_repo() -> None:
    assert (
        image_repository("Acme-Corp/MCP-Trader", "binance-provider")
        == "ghcr.io/acme-corp/mcp-trader/binance-provider"
    )


def test_image_repository_registry_override() -> None:
    assert (
        image_repository("o/r", "mcp-gateway", "localhost:5000") == "localhost:5000/o/r/mcp-gateway"
    )
    assert image_repository("o/r", "s", registry="Registry.Example.com") == (
        "registry.example.com/o/r/s"
    )
    assert image_repository("o/r", "s", registry="127.0.0.1:5000") == "127.0.0.1:5000/o/r/s"


@pytest.mark.parametrize("repository", ["", "owner", "a/b/c", "/repo", "owner/", "/"])
def test_repository_needs_exactly_one_slash_and_two_parts(repository: str) -> None:
    with pytest.raises(ValueError, match="invalid repository") as err:
        image_repository(repository, "mcp-gateway")
    assert repr(repository) in str(err.value)


@pytest.mark.parametrize(
    "repository", ["o/my repo", "o/re:po", "o/.repo", "o/repo.", "o/a..b", "o/a_-b", "ö/r", "o/r@x"]
)
def test_repository_outside_the_oci_grammar_is_refused(repository: str) -> None:
    with pytest.raises(ValueError, match="not a valid image name component"):
        image_repository(repository, "mcp-gateway")


@pytest.mark.parametrize("repository", ["o/a.b", "o/a_b", "o/a__b", "o/a--b", "0/9"])
def test_repository_separators_the_grammar_allows(repository: str) -> None:
    assert image_repository(repository, "s") == f"ghcr.io/{repository}/s"


@pytest.mark.parametrize("service", ["", "Gateway", "a/b", "-x", "x-"])
def test_bad_service_is_refused(service: str) -> None:
    with pytest.raises(ValueError, match="invalid service name"):
        image_repository("o/r", service)


@pytest.mark.parametrize(
    "registry",
    [
        "",
        "https://ghcr.io",
        "ghcr.io/",
        "ghcr.io/org",
        "ghcr",
        "-x.io",
        "ghcr.io:0",
        "a.io:99999",
        "gh cr.io",
        "[::1]:5000",
    ],
)
def test_bad_registry_is_refused(registry: str) -> None:
    with pytest.raises(ValueError, match="invalid registry") as err:
        image_repository("o/r", "s", registry)
    assert repr(registry) in str(err.value)


def test_over_long_image_name_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 255"):
        image_repository("o/" + "r" * 250, "s")


def test_github_source_url() -> None:
    assert github_source_url("Acme/MCP-Trader") == "https://github.com/acme/mcp-trader"
    with pytest.raises(ValueError, match="invalid repository"):
        github_source_url("acme")


@pytest.mark.parametrize("username", ["", " ", "a b", "name\n"])
def test_bad_username_is_refused(username: str) -> None:
    with pytest.raises(ValueError, match="invalid registry username"):
        validate_registry_username(username)


def test_bot_accounts_are_valid_registry_usernames() -> None:
    assert validate_registry_username("github-actions[bot]") == "github-actions[bot]"
