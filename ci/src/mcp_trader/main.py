"""The main object: every function `dagger call` exposes.

Each function is a thin entry point; the work lives in one module per job
(provider.py, gateway.py, checks.py, tags.py, publish.py, pipeline.py, deploy.py).
"""

from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, Ignore, function, object_type

from mcp_trader import deploy as _deploy


@object_type
class McpTrader:
    """mcp-trader's pipeline: build both images, test them, publish them to GHCR, deploy them over SSH."""

    source: Annotated[
        dagger.Directory,
        Doc("The repository root. Defaults to the directory holding dagger.json."),
        DefaultPath("/"),
        Ignore([".git", "**/target", "**/.venv", "**/__pycache__", "ci/sdk"]),
    ]

    # --- Deploy (issue 6): ship compose.yml + deploy/ over SSH, run deploy/mcp-trader-deploy.sh ---
    # dagger-io 0.21.11's typing overloads of `function` omit its `cache` parameter (the runtime
    # accepts it), hence the ignore on each decorator below.
    @function(cache="never")  # type: ignore[call-overload,untyped-decorator]
    async def deploy(
        self,
        host: Annotated[str, Doc("The server's host name or IP address.")],
        user: Annotated[str, Doc("The SSH user on the server (a member of the docker group).")],
        ssh_key: Annotated[
            dagger.Secret, Doc("The private SSH key of that user (e.g. file://~/.ssh/id_ed25519).")
        ],
        known_hosts: Annotated[
            dagger.Secret,
            Doc("known_hosts line(s) for the server; an unknown or changed host key is refused."),
        ],
        tag: Annotated[
            str | None, Doc("Image tag to deploy for both services (e.g. sha-1a2b3c4).")
        ] = None,
        provider_tag: Annotated[str | None, Doc("binance-provider tag, overriding --tag.")] = None,
        gateway_tag: Annotated[str | None, Doc("mcp-gateway tag, overriding --tag.")] = None,
        path: Annotated[str, Doc("The deploy directory on the server.")] = _deploy.DEFAULT_PATH,
        port: Annotated[int, Doc("The server's SSH port.")] = 22,
        registry_username: Annotated[
            str, Doc("User name for the registry login (used only with --registry-password).")
        ] = _deploy.DEFAULT_REGISTRY_USERNAME,
        registry_password: Annotated[
            dagger.Secret | None,
            Doc("Registry token; the server logs in with it (sent on ssh's stdin) before pulling."),
        ] = None,
        wait_timeout: Annotated[int, Doc("Seconds the new version has to become healthy.")] = 120,
        keep: Annotated[
            int, Doc("Keep the images of this many recent deployments; prune older ones.")
        ] = 5,
        run_id: Annotated[
            str, Doc("Id of this run (its staging directory on the server); default: a fresh one.")
        ] = "",
    ) -> str:
        """Deploy a version: pull, start, wait for health, pin the tags; undo it if unhealthy.

        Fails (non-zero) when the server refuses (another deploy holds the lock, bad tag), the pull
        fails (nothing changed), or the new version is unhealthy (the previous one is restored).
        """
        args = _deploy.deploy_args(
            tag=tag,
            provider_tag=provider_tag,
            gateway_tag=gateway_tag,
            wait_timeout=wait_timeout,
            keep=keep,
            registry_username=registry_username,
            registry_password=registry_password,
        )
        return await _deploy.run_on_server(
            self.source,
            script_args=args,
            host=host,
            user=user,
            port=port,
            path=path,
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            registry_password=registry_password,
            run_id=run_id or _deploy.new_run_id(),
        )

    @function(cache="never")  # type: ignore[call-overload,untyped-decorator]
    async def rollback(
        self,
        host: Annotated[str, Doc("The server's host name or IP address.")],
        user: Annotated[str, Doc("The SSH user on the server (a member of the docker group).")],
        ssh_key: Annotated[dagger.Secret, Doc("The private SSH key of that user.")],
        known_hosts: Annotated[
            dagger.Secret,
            Doc("known_hosts line(s) for the server; an unknown or changed host key is refused."),
        ],
        to: Annotated[
            str | None,
            Doc("Tag to return to (e.g. sha-1a2b3c4, pulled first); default: the previous one."),
        ] = None,
        path: Annotated[str, Doc("The deploy directory on the server.")] = _deploy.DEFAULT_PATH,
        port: Annotated[int, Doc("The server's SSH port.")] = 22,
        registry_username: Annotated[
            str, Doc("User name for the registry login (used only with --registry-password).")
        ] = _deploy.DEFAULT_REGISTRY_USERNAME,
        registry_password: Annotated[
            dagger.Secret | None,
            Doc("Registry token; the server logs in with it (sent on ssh's stdin) before pulling."),
        ] = None,
        wait_timeout: Annotated[int, Doc("Seconds the version has to become healthy.")] = 120,
        keep: Annotated[
            int, Doc("Keep the images of this many recent deployments; prune older ones.")
        ] = 5,
        run_id: Annotated[
            str, Doc("Id of this run (its staging directory on the server); default: a fresh one.")
        ] = "",
    ) -> str:
        """Roll back to the previous deployment (from the server's deployments.log) or to --to TAG.

        Health-gated like deploy: an unhealthy target is undone and the call fails.
        """
        args = _deploy.rollback_args(
            to=to,
            wait_timeout=wait_timeout,
            keep=keep,
            registry_username=registry_username,
            registry_password=registry_password,
        )
        return await _deploy.run_on_server(
            self.source,
            script_args=args,
            host=host,
            user=user,
            port=port,
            path=path,
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            registry_password=registry_password,
            run_id=run_id or _deploy.new_run_id(),
        )

    @function(cache="never")  # type: ignore[call-overload,untyped-decorator]
    async def status(
        self,
        host: Annotated[str, Doc("The server's host name or IP address.")],
        user: Annotated[str, Doc("The SSH user on the server.")],
        ssh_key: Annotated[dagger.Secret, Doc("The private SSH key of that user.")],
        known_hosts: Annotated[
            dagger.Secret,
            Doc("known_hosts line(s) for the server; an unknown or changed host key is refused."),
        ],
        path: Annotated[str, Doc("The deploy directory on the server.")] = _deploy.DEFAULT_PATH,
        port: Annotated[int, Doc("The server's SSH port.")] = 22,
        run_id: Annotated[
            str, Doc("Id of this run (its staging directory on the server); default: a fresh one.")
        ] = "",
    ) -> str:
        """Show the pinned tags, each service's container and health, and the last deployments.

        Fails when a service is not running and healthy.
        """
        return await _deploy.run_on_server(
            self.source,
            script_args=_deploy.status_args(),
            host=host,
            user=user,
            port=port,
            path=path,
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            registry_password=None,
            run_id=run_id or _deploy.new_run_id(),
        )
