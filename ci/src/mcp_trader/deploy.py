"""Deploy, roll back and inspect the server: ship compose.yml + deploy/ over SSH, run the script.

The health gate, the lock, the automatic rollback, the pinned tags and the deployment log all
live in the server script (deploy/mcp-trader-deploy.sh); this side only gets the files there
safely and runs it. The command lines come from `ssh.py` (pure, and run for real by the deploy
tests); here they run in a small pinned Alpine container with the OpenSSH client, with the key,
known_hosts and registry token mounted as secret files (never in an argv, an env var or a layer).
"""

from __future__ import annotations

import uuid
from typing import Final

import dagger
from dagger import dag

from mcp_trader import ssh

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
DEFAULT_REGISTRY_USERNAME: Final = "mcp-trader-deploy"


def new_run_id() -> str:
    """A fresh id per call: it names the run's staging directory on the server and so makes
    every exec of the run unique, which is what keeps the engine from answering a second deploy
    of the same tag from its exec cache (`cache="never"` only covers the function's own result)."""
    return uuid.uuid4().hex


def ssh_client() -> dagger.Container:
    """The pinned Alpine image with the OpenSSH client (ssh, scp), nothing else."""
    return dag.container().from_(SSH_IMAGE).with_exec(["apk", "add", "--no-cache", SSH_PACKAGE])


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
) -> str:
    """Ship the bundle to `path` on the server and run the script with `script_args`.

    Returns the script's stdout; raises `dagger.ExecError` (exit code, stdout, stderr) when the
    connection, a copy or the script fails. All input is validated before the first query.
    """
    target = ssh.Target(
        host=host,
        user=user,
        port=port,
        key_file=KEY_PATH,
        known_hosts_file=KNOWN_HOSTS_PATH,
    )
    commands = ssh.plan(
        target,
        path=path,
        run_id=run_id,
        bundle_root=BUNDLE_ROOT,
        args=script_args,
    )

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
    if registry_password is not None:
        # The token reaches the server on ssh's stdin (docker login --password-stdin there).
        ctr = ctr.with_mounted_secret(TOKEN_PATH, registry_password, owner="root:root", mode=0o600)
        ctr = ctr.with_exec(commands.run, redirect_stdin=TOKEN_PATH)
    else:
        ctr = ctr.with_exec(commands.run)
    return await ctr.stdout()


def deploy_args(
    *,
    tag: str | None,
    provider_tag: str | None,
    gateway_tag: str | None,
    wait_timeout: int,
    keep: int,
    registry_username: str,
    registry_password: dagger.Secret | None,
) -> list[str]:
    return ssh.script_args(
        "deploy",
        tag=tag,
        provider_tag=provider_tag,
        gateway_tag=gateway_tag,
        wait_timeout=wait_timeout,
        keep=keep,
        registry_user=registry_username if registry_password is not None else None,
    )


def rollback_args(
    *,
    to: str | None,
    wait_timeout: int,
    keep: int,
    registry_username: str,
    registry_password: dagger.Secret | None,
) -> list[str]:
    return ssh.script_args(
        "rollback",
        to=to,
        wait_timeout=wait_timeout,
        keep=keep,
        registry_user=registry_username if registry_password is not None else None,
    )


def status_args() -> list[str]:
    return ssh.script_args("status")
