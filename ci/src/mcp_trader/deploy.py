"""Deploy, roll back, inspect and follow (`server ...`, server.py): ship compose.yml + deploy/
over SSH, run the script.

The health gate, the lock, the transaction (intent, bundle switch, automatic rollback), the
pinned tags and the deployment log all live in the server script (deploy/mcp-trader-deploy.sh);
this side only gets the files there safely, runs it, and follows it. The command lines come
from `ssh.py` (pure, and run for real by the deploy tests); here they run in a small pinned
Alpine container with the OpenSSH client, with the key, known_hosts and registry token mounted
as secret files (never in an argv, an env var or a layer).

On the server, a deploy or rollback runs detached from the SSH connection. When the connection
drops (ssh exits 255), the run goes on there; this side reconnects and re-attaches to it by its
run id, so the call still ends with the run's own output and exit code.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypedDict

import dagger
from dagger import dag

from mcp_trader import services, ssh, tags
from mcp_trader.verify import Pin

# Alpine 3.22.2 by digest (the multi-arch index), so the client never changes under us.
SSH_IMAGE: Final = (
    "alpine:3.22.2@sha256:4b7ce07002c69e8f3d704a9c5d6fd3053be500b7f1c69fc0d80990c2ad8dd412"
)
SSH_PACKAGE: Final = "openssh-client-default"
SECRETS_DIR: Final = "/run/mcp-trader"
KEY_PATH: Final = f"{SECRETS_DIR}/ssh_key"
KNOWN_HOSTS_PATH: Final = f"{SECRETS_DIR}/known_hosts"
TOKEN_PATH: Final = f"{SECRETS_DIR}/registry_token"
BUNDLE_ROOT: Final = "/bundle"
DEFAULT_PATH: Final = "/opt/mcp-trader"
DEFAULT_REGISTRY: Final = "ghcr.io"
DEFAULT_REGISTRY_USERNAME: Final = "mcp-trader-deploy"
# ssh's own exit status when the connection fails or drops (the script never exits 255).
CONNECTION_LOST: Final = 255
# Pauses before each re-attach attempt after a dropped connection (seconds).
REATTACH_BACKOFF_S: tuple[float, ...] = (2, 4, 8, 16)


class ConnectionLost(Exception):
    """The connection to the server dropped during a run and re-attaching failed too."""


def new_run_id() -> str:
    """A fresh id per call: it names the run on the server (its output, for `attach`)."""
    return uuid.uuid4().hex


def new_nonce() -> str:
    """Fresh for every connection sequence, whatever the run id: it is part of the staging
    directory's name and so of every ssh/scp command, which keeps the engine from answering a
    deploy from its exec cache (`cache="never"` only covers the function's own result)."""
    return secrets.token_hex(8)


def ssh_client() -> dagger.Container:
    """The pinned Alpine image with the OpenSSH client (ssh, scp), nothing else."""
    return dag.container().from_(SSH_IMAGE).with_exec(["apk", "add", "--no-cache", SSH_PACKAGE])


def _shipped(
    source: dagger.Directory,
    commands: ssh.Plan,
    ssh_key: dagger.Secret,
    known_hosts: dagger.Secret,
) -> dagger.Container:
    """The client with the bundle and the credentials, after `prepare` and the copies."""
    ctr = ssh_client()
    for src, _ in ssh.BUNDLE_FILES:
        ctr = ctr.with_file(f"{BUNDLE_ROOT}/{src}", source.file(src))
    ctr = ctr.with_mounted_secret(KEY_PATH, ssh_key, owner="root:root", mode=0o600)
    ctr = ctr.with_mounted_secret(KNOWN_HOSTS_PATH, known_hosts, owner="root:root", mode=0o600)
    # First connection: creates the staging directory. An unknown host or a changed host key
    # fails right here (StrictHostKeyChecking=yes), before anything is copied or run.
    ctr = ctr.with_exec(commands.prepare)
    for copy in commands.copies:
        ctr = ctr.with_exec(copy)
    return ctr


async def run_on_server(
    source: dagger.Directory,
    *,
    script_args: list[str],
    host: str,
    user: str,
    port: int,
    path: str,
    ssh_key: dagger.Secret,
    known_hosts: dagger.Secret,
    registry_password: dagger.Secret | None,
    run_id: str,
    detached: bool,
) -> str:
    """Ship the bundle to `path` on the server and run the script with `script_args`.

    Returns the script's stdout; raises `dagger.ExecError` (exit code, stdout, stderr) when the
    connection, a copy or the script fails. A `detached` run (deploy, rollback) whose connection
    drops is re-attached by its run id. All input is validated before the first query.
    """
    target = ssh.Target(
        host=host,
        user=user,
        port=port,
        key_file=KEY_PATH,
        known_hosts_file=KNOWN_HOSTS_PATH,
    )

    def plan(args: list[str]) -> ssh.Plan:
        return ssh.plan(
            target,
            path=path,
            run_id=run_id,
            nonce=new_nonce(),
            bundle_root=BUNDLE_ROOT,
            args=args,
        )

    commands = plan(script_args)
    # Built (and so validated) before the first query, like every other command line.
    attach_args = ssh.script_args("attach", run=run_id)
    ctr = _shipped(source, commands, ssh_key, known_hosts)
    if registry_password is not None:
        # The token reaches the server on ssh's stdin (docker login --password-stdin there).
        ctr = ctr.with_mounted_secret(TOKEN_PATH, registry_password, owner="root:root", mode=0o600)
        ctr = ctr.with_exec(commands.run, redirect_stdin=TOKEN_PATH)
    else:
        ctr = ctr.with_exec(commands.run)
    try:
        return await ctr.stdout()
    except dagger.ExecError as exc:
        # Only the run's own connection can drop mid-run; a failed prepare or copy (an unknown
        # host key, a refused login) is final.
        if exc.exit_code != CONNECTION_LOST or not detached or list(exc.command) != commands.run:
            raise
        lost = exc
    # The connection dropped: the run goes on (or has ended) on the server. Follow it there.
    for pause in REATTACH_BACKOFF_S:
        await asyncio.sleep(pause)
        again = plan(attach_args)
        try:
            return await _shipped(source, again, ssh_key, known_hosts).with_exec(again.run).stdout()
        except dagger.ExecError as exc:
            if exc.exit_code != CONNECTION_LOST:
                raise
            # Still no connection (at any step of this attempt): try again after a pause.
            lost = exc
    raise ConnectionLost(
        f"the connection to {host} dropped during run {run_id} and re-attaching failed "
        f"{len(REATTACH_BACKOFF_S)} times ({lost.stderr.strip() or lost}); the run goes on on "
        f"the server: `server ... status` shows how it ended, "
        f"`server ... attach --run-id {run_id}` follows it"
    ) from lost


class Pinned(TypedDict, total=False):
    """What a deploy or rollback tells the script about its images (ssh.script_args keywords):
    the tags as given, or each pinned `TAG@sha256:...` with how it was checked."""

    tag: str | None
    provider_tag: str | None
    gateway_tag: str | None
    to: str | None
    signature: str
    provider_commit: str
    gateway_commit: str


def requested_images(
    *,
    registry: str,
    repository: str,
    tag: str | None = None,
    provider_tag: str | None = None,
    gateway_tag: str | None = None,
) -> dict[str, str]:
    """service -> `registry/owner/repo/service:tag` for each service asked for (publish's image
    names, tags.py), every part validated; a tag already pinned to a digest is refused, since
    the digest is what verification establishes."""
    asked = {
        services.PROVIDER.name: provider_tag or tag,
        services.GATEWAY.name: gateway_tag or tag,
    }
    images: dict[str, str] = {}
    for service, value in asked.items():
        if not value:
            continue
        if "@" in ssh.validate_tag(value, f"{service} tag"):
            raise ValueError(
                f"{service} tag {value!r} is pinned to a digest: give the tag alone; the "
                "deploy resolves it, verifies that digest and pins it"
            )
        images[service] = f"{tags.image_repository(repository, service, registry)}:{value}"
    if not images:
        raise ValueError("deploy needs a tag (--tag, or --provider-tag / --gateway-tag)")
    return images


def pinned(pins: Mapping[str, Pin]) -> Pinned:
    """The script's view of `pins_for_deploy`'s result: TAG@sha256:... per service, whether the
    images were verified or let through by --allow-unsigned, and the verified source commits."""
    kinds = {pin.signature for pin in pins.values()}
    if len(kinds) != 1:
        raise ValueError(f"the pins of one deploy must be checked one way, got {sorted(kinds)}")
    out: Pinned = {"signature": kinds.pop()}
    provider, gateway = pins.get(services.PROVIDER.name), pins.get(services.GATEWAY.name)
    if provider is not None:
        out["provider_tag"] = provider.value
        if provider.verified is not None:
            out["provider_commit"] = provider.verified.provenance.commit
    if gateway is not None:
        out["gateway_tag"] = gateway.value
        if gateway.verified is not None:
            out["gateway_commit"] = gateway.verified.provenance.commit
    return out


@dataclass(frozen=True)
class Options:
    """The flags deploy and rollback share besides their images."""

    wait_timeout: int
    keep: int
    registry: str
    registry_username: str
    registry_password: dagger.Secret | None


def script_args(action: str, images: Pinned, options: Options) -> list[str]:
    """The script's arguments for a deploy or a rollback (ssh.py validates each)."""
    tags.validate_registry(options.registry)
    login = options.registry_password is not None
    return ssh.script_args(
        action,
        **images,
        wait_timeout=options.wait_timeout,
        keep=options.keep,
        registry=options.registry,
        registry_user=options.registry_username if login else None,
    )


def status_args() -> list[str]:
    return ssh.script_args("status")


def attach_args(run_id: str) -> list[str]:
    """Follow run `run_id` (empty: the latest run on the server)."""
    return ssh.script_args("attach", run=run_id or None)
