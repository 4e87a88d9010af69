"""The ssh and scp command lines of a deploy, built by pure code.

`deploy.py` runs these argv lists inside the module's OpenSSH container; the deploy tests
(tests/deploy) run the very same lists from the host against a real sshd, so what is tested is
what ships. Everything a user passes in is validated here first, with an error naming the bad
value and what is valid, before any container, connection or file exists.

Security choices, all on every command line:
- `-F /dev/null`: no ssh_config of the machine running the command changes its behaviour;
- `StrictHostKeyChecking=yes` with `UserKnownHostsFile=<the given known_hosts>` and no global
  file: an unknown host or a changed host key fails the connection before anything is copied or
  run (no key scanning, no trust on first use);
- `IdentitiesOnly=yes` with the one given key (`-i`), `BatchMode=yes`: no agent, no password
  prompt, no hang waiting for input.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .tags import validate_registry, validate_registry_username

SCRIPT_NAME: Final = "mcp-trader-deploy.sh"
# What a deploy ships, as (path in the repository, path under the deploy directory): the
# server keeps the repository's layout so compose.yml's `./deploy/providers.yaml` resolves.
BUNDLE_FILES: Final = (
    ("compose.yml", "compose.yml"),
    ("deploy/providers.yaml", "deploy/providers.yaml"),
    (f"deploy/{SCRIPT_NAME}", f"deploy/{SCRIPT_NAME}"),
    ("deploy/rollout.sh", "deploy/rollout.sh"),
    ("deploy/proxy/haproxy.cfg", "deploy/proxy/haproxy.cfg"),
    # The override a server's .env may choose to run without the proxy (README "The proxy").
    ("deploy/compose.no-proxy.yml", "deploy/compose.no-proxy.yml"),
)
# Fresh bundles land here (under the deploy directory), one directory per run, so a deploy
# never overwrites the files of another deploy that is still running; the server script moves
# them into place once it holds the lock.
INCOMING_DIR: Final = ".incoming"

_HOSTNAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_USER_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")
_PATH_RE: Final = re.compile(r"^/[A-Za-z0-9._/-]*$")
# Docker's tag grammar, optionally pinned to a manifest digest (TAG@sha256:<64 lowercase hex>):
# the server pins the value as given and Compose pulls by digest.
_TAG_RE: Final = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?$")
_RUN_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_COMMIT_RE: Final = re.compile(r"^[0-9a-f]{7,64}$")
_NONCE_RE: Final = re.compile(r"^[0-9a-f]{8,32}$")
SIGNATURES: Final = ("verified", "unsigned")


def validate_host(host: str) -> str:
    """A DNS name or an IPv4/IPv6 address (IPv6 without brackets)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME_RE.fullmatch(host):
        raise ValueError(
            f"host {host!r} is not a valid host name or IP address "
            "(letters, digits, '-' and '.' like deploy.example.com, or an address like 203.0.113.7)"
        )
    return host


def validate_user(user: str) -> str:
    """A POSIX-style login name."""
    if not _USER_RE.fullmatch(user):
        raise ValueError(
            f"user {user!r} is not a valid login name (a letter or '_', then letters, digits, "
            "'.', '_' or '-'; at most 32 characters, e.g. 'deploy')"
        )
    return user


def validate_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port {port!r} is not a TCP port (a whole number from 1 to 65535)")
    return port


def validate_path(path: str) -> str:
    """An absolute directory path on the server, without '..' or shell-special characters."""
    if not _PATH_RE.fullmatch(path) or path.rstrip("/") == "":
        raise ValueError(
            f"path {path!r} is not a valid deploy directory (an absolute path other than '/', "
            "made of letters, digits, '.', '_', '-' and '/', e.g. /opt/mcp-trader)"
        )
    if any(part in {".", ".."} for part in path.split("/")):
        raise ValueError(f"path {path!r} must not contain '.' or '..' components")
    return path.rstrip("/")


def validate_tag(tag: str, what: str = "tag") -> str:
    """Docker's tag grammar (what a registry accepts), optionally with `@sha256:<digest>`."""
    if not _TAG_RE.fullmatch(tag):
        raise ValueError(
            f"{what} {tag!r} is not a valid image tag (letters, digits, '_', '.' and '-', "
            "at most 128, not starting with '.' or '-', optionally @sha256:<64 lowercase hex>; "
            "e.g. sha-1a2b3c4 or 1.2.3)"
        )
    return tag


def validate_run_id(run_id: str) -> str:
    if not _RUN_ID_RE.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} is not valid (1 to 64 letters, digits, '_' or '-', "
            "starting with a letter or digit)"
        )
    return run_id


@dataclass(frozen=True)
class Target:
    """Where to connect and with which credentials (paths on the machine running ssh)."""

    host: str
    user: str
    port: int
    key_file: str
    known_hosts_file: str

    def __post_init__(self) -> None:
        validate_host(self.host)
        validate_user(self.user)
        validate_port(self.port)

    def _options(self) -> list[str]:
        return [
            "-F", "/dev/null",
            "-i", self.key_file,
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts_file}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "UpdateHostKeys=no",
            "-o", "ConnectTimeout=20",
            "-o", "ServerAliveInterval=15",
            "-o", "ServerAliveCountMax=4",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def ssh(self, remote_argv: Sequence[str]) -> list[str]:
        """`ssh ... -- host 'quoted remote command'`: the remote shell sees exactly remote_argv."""
        if not remote_argv:
            raise ValueError("remote command must not be empty")
        return [
            "ssh",
            *self._options(),
            "-p", str(self.port),
            "-l", self.user,
            "--",
            self.host,
            shlex.join(remote_argv),
        ]  # fmt: skip

    def scp(self, local_files: Sequence[str], remote_dir: str) -> list[str]:
        """`scp ... -- FILES user@host:DIR/`, copying into an existing remote directory."""
        if not local_files:
            raise ValueError("nothing to copy")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [
            "scp",
            *self._options(),
            "-P", str(self.port),
            "--",
            *local_files,
            f"{self.user}@{host}:{validate_path(remote_dir)}/",
        ]  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """The commands of one deploy/rollback/status/attach run, in order.

    `prepare` creates the run's staging directory (and is the first connection: a host key
    mismatch fails here, before anything is copied); `copies` ship the bundle into it; `run`
    starts the shipped script, which runs the deploy detached from the connection, installs the
    bundle under its lock and removes the staging directory when it ends. Its stdin carries the
    registry token when one is given.
    """

    prepare: list[str]
    copies: list[list[str]]
    run: list[str]

    def all(self) -> list[list[str]]:
        return [self.prepare, *self.copies, self.run]


def script_args(
    action: str,
    *,
    tag: str | None = None,
    provider_tag: str | None = None,
    gateway_tag: str | None = None,
    to: str | None = None,
    wait_timeout: int | None = None,
    keep: int | None = None,
    registry: str | None = None,
    registry_user: str | None = None,
    signature: str | None = None,
    provider_commit: str | None = None,
    gateway_commit: str | None = None,
    run: str | None = None,
) -> list[str]:
    """The subcommand and its flags for the server script, validated.

    deploy: --tag and/or --provider-tag/--gateway-tag; rollback: `to` (both services), or
    provider_tag and gateway_tag (each its own pinned digest), or, when none, --previous;
    status: nothing else; attach: `run` (default: the latest run). A registry user needs the
    registry the token is for: the server sends it there only, and only if the images are there.
    `signature` and the commits are what the module verified, for the server's log.
    """
    opts: list[str] = []
    if wait_timeout is not None:
        if isinstance(wait_timeout, bool) or not 1 <= wait_timeout <= 3600:
            raise ValueError(f"wait timeout {wait_timeout!r} must be 1 to 3600 seconds")
        opts += ["--wait-timeout", str(wait_timeout)]
    if keep is not None:
        if isinstance(keep, bool) or not 1 <= keep <= 100:
            raise ValueError(f"keep {keep!r} must be 1 to 100 deployments")
        opts += ["--keep", str(keep)]
    if registry_user is not None:
        if registry is None:
            raise ValueError("a registry user needs the registry the token is for (registry)")
        opts += ["--registry", validate_registry(registry)]
        opts += ["--registry-user", validate_registry_username(registry_user)]
    if signature is not None:
        if signature not in SIGNATURES:
            raise ValueError(f"signature {signature!r} is not one of {', '.join(SIGNATURES)}")
        opts += ["--signature", signature]
    for flag, commit in (
        ("--provider-commit", provider_commit),
        ("--gateway-commit", gateway_commit),
    ):
        if commit is not None:
            if not _COMMIT_RE.fullmatch(commit):
                raise ValueError(f"{flag[2:]} {commit!r} is not a commit (7 to 64 lowercase hex)")
            opts += [flag, commit]
    if action == "deploy":
        if not (tag or provider_tag or gateway_tag):
            raise ValueError("deploy needs a tag (--tag, or --provider-tag / --gateway-tag)")
        args = []
        if tag:
            args += ["--tag", validate_tag(tag)]
        if provider_tag:
            args += ["--provider-tag", validate_tag(provider_tag, "provider tag")]
        if gateway_tag:
            args += ["--gateway-tag", validate_tag(gateway_tag, "gateway tag")]
        return [*opts, "deploy", *args]
    if action == "rollback":
        if provider_tag or gateway_tag:
            if to is not None or not (provider_tag and gateway_tag):
                raise ValueError("rollback takes `to`, or provider_tag and gateway_tag together")
            return [
                *opts,
                "rollback",
                "--to-provider",
                validate_tag(provider_tag, "rollback target"),
                "--to-gateway",
                validate_tag(gateway_tag, "rollback target"),
            ]
        if to is None:
            return [*opts, "rollback", "--previous"]
        return [*opts, "rollback", "--to", validate_tag(to, "rollback target")]
    if action == "status":
        return [*opts, "status"]
    if action == "attach":
        return [*opts, "attach", *(["--run", validate_run_id(run)] if run else [])]
    raise ValueError(f"action {action!r} is not one of deploy, rollback, status, attach")


def plan(
    target: Target,
    *,
    path: str,
    run_id: str,
    nonce: str,
    bundle_root: str,
    args: Sequence[str],
) -> Plan:
    """Every command of one run. `bundle_root` is the local directory holding BUNDLE_FILES.

    The staging directory is `<run id>-<nonce>`: the nonce is fresh for every call, so every
    ssh/scp command differs from any earlier one, even when a run id is given twice, and the
    engine can never answer a deploy from its exec cache without connecting.
    """
    path = validate_path(path)
    if not _NONCE_RE.fullmatch(nonce):
        raise ValueError(f"nonce {nonce!r} is not 8 to 32 lowercase hex digits")
    stage = f"{path}/{INCOMING_DIR}/{validate_run_id(run_id)}-{nonce}"
    root = bundle_root.rstrip("/")
    # One scp per destination directory (scp copies files into an existing directory).
    dirs = sorted({posixpath.dirname(dst) for _, dst in BUNDLE_FILES})
    copies = [
        target.scp(
            [f"{root}/{src}" for src, dst in BUNDLE_FILES if posixpath.dirname(dst) == d],
            f"{stage}/{d}" if d else stage,
        )
        for d in dirs
    ]
    return Plan(
        prepare=target.ssh(["mkdir", "-p", "--", *(f"{stage}/{d}" for d in dirs if d)]),
        copies=copies,
        run=target.ssh(
            [
                "bash",
                f"{stage}/deploy/{SCRIPT_NAME}",
                "--dir",
                path,
                "--staged",
                stage,
                "--run-id",
                run_id,
                *args,
            ]
        ),
    )
