"""Image tag rules: which tags `publish` pushes for a commit and a git ref, and the image names.

Pure functions (no Dagger, no I/O), so the rules can be unit-tested and shown as a dry run
(`dagger call tags --sha ... --ref ...`). Every bad input raises `ValueError` naming the bad
value and what is accepted, before anything is built or pushed.

This module is also the one place that reads git refs (`parse_ref`: branch, tag or pull request)
and branch names (`validate_branch`); `ci`'s decision (pipeline.py) uses the same two. Naming:
`validate_<thing>(value)` returns the value, normalized, or raises `ValueError`; `parse_<thing>`
returns a structured value; `_<thing>_problem` returns what is wrong, or None.

The rules (README, section "publish"):

* `sha-<first 7 hex digits, lowercase>` always, first: the immutable name of this commit's build.
* `refs/tags/vX.Y.Z` (semver, `v` optional) -> `X.Y.Z`, `X.Y`, `X` (no bare `0` major);
  a pre-release gives only its full version; build metadata (`+...`) is refused (OCI tags
  cannot hold `+`). Any other tag -> its sanitized name. Tags never move `latest`.
* `refs/heads/B` -> the sanitized branch name, then `latest` only when B is the default branch.
* `refs/pull/N/merge` or `refs/pull/N/head` -> `pr-N`.

A branch or non-semver tag whose sanitized name would overwrite a tag that means something else
(`latest`, `sha-...`, `pr-N`, a version like `1.2`) is refused rather than pushed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

#: OCI distribution spec: a tag is `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
MAX_TAG_LENGTH: Final = 128
#: Docker's reference grammar caps the whole name (registry + path) at 255 characters.
MAX_NAME_LENGTH: Final = 255
#: Short sha length: what GitHub and `git rev-parse --short` show by default.
SHORT_SHA_LENGTH: Final = 7

_SHA = re.compile(r"[0-9A-Fa-f]{7,40}")
#: A manifest digest as registries return it (and as `@` pins an image reference to it).
DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
# Characters allowed in a tag; every run of anything else becomes one "-".
_TAG_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")
# semver.org 2.0.0 grammar with an optional leading "v" (ASCII digits only, no leading zeros).
_NUM = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER = re.compile(
    rf"v?(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_PRE_ID}(?:\.{_PRE_ID})*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_PULL = re.compile(r"refs/pull/(?P<number>[^/]*)/(?P<kind>[^/]*)")
# Names that already mean something in our tag scheme; a branch or a git tag may not take them.
_RESERVED = re.compile(
    r"latest|sha-[0-9a-f]{7}|pr-[0-9]+|[0-9]+(?:\.[0-9]+){0,2}|[0-9]+\.[0-9]+\.[0-9]+-.+"
)
# OCI distribution spec path component: lowercase alphanumerics joined by ".", "_", "__" or "-"s.
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_REGISTRY = re.compile(rf"(?P<host>{_HOST_LABEL}(?:\.{_HOST_LABEL})*)(?::(?P<port>[0-9]{{1,5}}))?")
# git check-ref-format: characters a ref name may never contain.
_GIT_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")

_ACCEPTED_REFS: Final = (
    "a full git ref as GitHub gives it in github.ref: refs/heads/<branch>, refs/tags/<tag>, "
    "refs/pull/<number>/merge or refs/pull/<number>/head"
)


RefKind = Literal["branch", "tag", "pull"]


@dataclass(frozen=True)
class Ref:
    """A full git ref as GitHub gives it in github.ref, parsed and checked."""

    ref: str
    kind: RefKind
    #: The branch or tag name; for a pull request, its number in decimal.
    name: str

    @property
    def number(self) -> int:
        """The pull request's number (only for `kind == "pull"`)."""
        if self.kind != "pull":
            raise ValueError(f"{self.ref!r} is not a pull request ref")
        return int(self.name)


@dataclass(frozen=True)
class ImageTag:
    """One tag to push, and whether a later run may point it at other content."""

    name: str
    #: False for names that identify one build (`sha-...`, `X.Y.Z`, a git tag's name);
    #: True for names that follow a line of development (`X.Y`, `X`, a branch, `pr-N`, `latest`).
    moving: bool


def tag_plan(*, sha: str, ref: str, default_branch: str = "main") -> list[ImageTag]:
    """The tags for `sha` built from `ref`, in push order: immutable ones first, `latest` last."""
    validate_branch(default_branch, what="default branch")
    plan = [ImageTag(short_sha_tag(sha), moving=False)]
    parsed = parse_ref(ref)
    if parsed.kind == "branch":
        name = _sanitized(parsed.name, source=f"branch {parsed.name!r} (ref {ref!r})")
        plan.append(ImageTag(name, moving=True))
        if parsed.name == default_branch:
            plan.append(ImageTag("latest", moving=True))
    elif parsed.kind == "tag":
        plan.extend(_git_tag_tags(parsed.name, ref))
    else:
        plan.append(ImageTag(f"pr-{parsed.number}", moving=True))
    return plan


def image_tags(*, sha: str, ref: str, default_branch: str = "main") -> list[str]:
    """The tags `publish` pushes for commit `sha` built from git ref `ref`, in push order.

    Examples: (`refs/heads/main`) -> `sha-1a2b3c4`, `main`, `latest`;
    (`refs/tags/v1.2.3`) -> `sha-1a2b3c4`, `1.2.3`, `1.2`, `1`;
    (`refs/pull/7/merge`) -> `sha-1a2b3c4`, `pr-7`.
    """
    return [tag.name for tag in tag_plan(sha=sha, ref=ref, default_branch=default_branch)]


def short_sha_tag(sha: str) -> str:
    """`sha-` + the first 7 hex digits of `sha`, lowercase; `sha` must be 7 to 40 hex digits."""
    if not _SHA.fullmatch(sha):
        raise ValueError(
            f"invalid commit sha {sha!r}: expected 7 to 40 hexadecimal digits "
            "(github.sha or `git rev-parse HEAD`)"
        )
    return "sha-" + sha[:SHORT_SHA_LENGTH].lower()


def parse_ref(ref: str) -> Ref:
    """`refs/heads/B`, `refs/tags/T`, or `refs/pull/N/merge` / `refs/pull/N/head`, checked.

    Branch and tag names must be names git accepts (`git check-ref-format`): such a ref cannot
    come from GitHub. A pull request number is a positive decimal without leading zeros.
    """
    for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
        if ref.startswith(prefix):
            name = ref.removeprefix(prefix)
            problem = _git_ref_problem(name)
            if problem is not None:
                raise ValueError(f"invalid ref {ref!r}: {problem}; expected {_ACCEPTED_REFS}")
            return Ref(ref, "branch" if kind == "branch" else "tag", name)
    if ref.startswith("refs/pull/"):
        match = _PULL.fullmatch(ref)
        if match is None or match["kind"] not in ("merge", "head"):
            raise ValueError(
                f"unsupported pull request ref {ref!r}: expected refs/pull/<number>/merge "
                "or refs/pull/<number>/head"
            )
        number = match["number"]
        if not re.fullmatch(r"[1-9][0-9]*", number):
            raise ValueError(
                f"invalid pull request number {number!r} in ref {ref!r}: expected a positive "
                "decimal number without leading zeros"
            )
        return Ref(ref, "pull", number)
    raise ValueError(f"unsupported ref {ref!r}: expected {_ACCEPTED_REFS}")


def validate_branch(branch: str, *, what: str = "branch") -> str:
    """A bare branch name such as `main` (not `refs/heads/main`), as `git branch` accepts it."""
    if branch.startswith("refs/"):
        raise ValueError(
            f"invalid {what} {branch!r}: expected a bare branch name such as 'main', not a ref"
        )
    # `git branch` refuses a leading '-' (it would read as an option); refs pushed by other
    # means may have one, which is why only a bare name given here is checked for it.
    problem = "branch names cannot start with '-'" if branch.startswith("-") else None
    problem = problem or _git_ref_problem(branch)
    if problem is not None:
        raise ValueError(
            f"invalid {what} {branch!r}: {problem}; expected a branch name such as 'main'"
        )
    return branch


def version_label(tags: list[str]) -> str:
    """The `org.opencontainers.image.version` value: the first tag that is not `sha-...`.

    That is the most specific human name of the build (`1.2.3`, the branch, `pr-7`);
    the `sha-` tag is the fallback when it is the only one.
    """
    if not tags:
        raise ValueError("no tags: expected the list image_tags() returns")
    for tag in tags:
        if not tag.startswith("sha-"):
            return tag
    return tags[0]


def validate_repository(repository: str) -> str:
    """`owner/repo` as GitHub gives it (github.repository, any case), lowercased: registries
    reject capitals in image names."""
    if repository.count("/") != 1:
        raise ValueError(
            f"invalid repository {repository!r}: expected exactly one '/', as in owner/repo "
            "(github.repository)"
        )
    parts = repository.lower().split("/")
    for part in parts:
        if not _PATH_COMPONENT.fullmatch(part):
            raise ValueError(
                f"invalid repository {repository!r}: {part!r} is not a valid image name "
                "component (letters, digits, joined by single '.', '_', '__' or dashes; no "
                "leading or trailing separator)"
            )
    return "/".join(parts)


def image_repository(repository: str, service: str, registry: str = "ghcr.io") -> str:
    """`registry/owner/repo/service`, lowercased where GHCR needs it.

    `repository` is `owner/repo` (see `validate_repository`). `service` must already be a
    valid lowercase name component. `registry` is a host name with an optional `:port`.
    """
    host = validate_registry(registry)
    owner_repo = validate_repository(repository)
    if not _PATH_COMPONENT.fullmatch(service):
        raise ValueError(
            f"invalid service name {service!r}: expected lowercase letters and digits joined by "
            "'.', '_', '__' or dashes (e.g. binance-provider, mcp-gateway)"
        )
    name = f"{host}/{owner_repo}/{service}"
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(
            f"image name {name!r} is {len(name)} characters long: "
            f"at most {MAX_NAME_LENGTH} are accepted"
        )
    return name


def validate_registry_username(username: str) -> str:
    """A registry user name: non-empty, no whitespace or control characters. Bots' names such
    as `github-actions[bot]` (github.actor) are valid; the name only ever travels as one
    argument (`with_registry_auth`, or quoted on the server's command line)."""
    if not username or re.search(r"[\s\x00-\x1f\x7f]", username):
        raise ValueError(
            f"invalid registry username {username!r}: expected a non-empty name without spaces "
            "(on GHCR, github.actor)"
        )
    return username


def github_source_url(repository: str) -> str:
    """`https://github.com/owner/repo`, lowercased: the `org.opencontainers.image.source` label.

    GHCR links a package to the repository named by this label.
    """
    return f"https://github.com/{validate_repository(repository)}"


def _git_tag_tags(tag: str, ref: str) -> list[ImageTag]:
    match = _SEMVER.fullmatch(tag)
    if match is None:
        name = _sanitized(tag, source=f"git tag {tag!r} (ref {ref!r})")
        return [ImageTag(name, moving=False)]
    if match["build"] is not None:
        raise ValueError(
            f"git tag {tag!r} has semver build metadata '+{match['build']}', which an image tag "
            "cannot hold ('+' is not allowed in OCI tags) and which semver ignores for precedence: "
            "tag the release without '+...' (e.g. "
            f"{tag.split('+', 1)[0]!r})"
        )
    major, minor, patch, pre = match["major"], match["minor"], match["patch"], match["pre"]
    version = f"{major}.{minor}.{patch}"
    if pre is not None:
        full = f"{version}-{pre}"
        if len(full) > MAX_TAG_LENGTH:
            raise ValueError(
                f"git tag {tag!r} gives version {full!r}, longer than the {MAX_TAG_LENGTH} "
                "characters an image tag accepts"
            )
        # A pre-release names one build; it never updates X.Y or X.
        return [ImageTag(full, moving=False)]
    tags = [ImageTag(version, moving=False), ImageTag(f"{major}.{minor}", moving=True)]
    if major != "0":
        # 0.y.z promises no compatibility between minors, so a bare `0` would mislead.
        tags.append(ImageTag(major, moving=True))
    return tags


def _sanitized(name: str, *, source: str) -> str:
    tag = _TAG_UNSAFE_RUN.sub("-", name).lstrip(".-")[:MAX_TAG_LENGTH]
    if not tag:
        raise ValueError(
            f"{source} gives an empty image tag once characters outside [A-Za-z0-9._-] become '-' "
            "and leading '.' and '-' are removed: use a name with at least one letter, digit or '_'"
        )
    if _RESERVED.fullmatch(tag):
        raise ValueError(
            f"{source} gives the image tag {tag!r}, which this scheme reserves ('latest', "
            "'sha-<7 hex>', 'pr-<number>', versions like '1.2' or '1.2.3'): pushing it would "
            "overwrite a tag that means something else; rename the branch or tag (a release tag "
            "is vX.Y.Z)"
        )
    return tag


def _git_ref_problem(name: str) -> str | None:
    if not name:
        return "the name is empty"
    forbidden = _GIT_FORBIDDEN.search(name)
    if forbidden is not None:
        return (
            f"it contains {forbidden.group()!r}, and git names cannot hold spaces, control "
            "characters or any of ~ ^ : ? * [ \\"
        )
    if ".." in name or "@{" in name or name == "@":
        return "git names cannot contain '..' or '@{' or be '@'"
    if name.endswith(".") or name.endswith("/"):
        return "git names cannot end with '.' or '/'"
    for component in name.split("/"):
        if not component:
            return "git names cannot have empty path components ('//' or a leading '/')"
        if component.startswith(".") or component.endswith(".lock"):
            return f"path component {component!r} starts with '.' or ends with '.lock'"
    return None


def validate_registry(registry: str) -> str:
    """A registry host with an optional port (`ghcr.io`, `localhost:5000`), lowercased."""
    match = _REGISTRY.fullmatch(registry)
    accepted = (
        "a registry host name with an optional port, such as ghcr.io or localhost:5000 "
        "(no scheme, no path)"
    )
    if match is None:
        raise ValueError(f"invalid registry {registry!r}: expected {accepted}")
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"invalid registry {registry!r}: port {port} is outside 1-65535")
    host = match["host"].lower()
    # Docker's reference parser reads a first component without '.' or ':' (other than
    # localhost) as part of a Docker Hub path, so `myregistry/o/r/s` would go to docker.io.
    if port is None and "." not in host and host != "localhost":
        raise ValueError(
            f"invalid registry {registry!r}: a host without '.' or ':port' (other than localhost) "
            f"would be read as a Docker Hub path; expected {accepted}"
        )
    return host if port is None else f"{host}:{port}"


def validate_digest(digest: str) -> str:
    """`sha256:` and 64 lowercase hex digits."""
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"invalid digest {digest!r}: expected sha256:<64 lowercase hex digits>")
    return digest
