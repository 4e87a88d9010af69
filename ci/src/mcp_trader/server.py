"""The `server` object: one server, its connection given once, and what can be done there.

    dagger call server --host H --user U --ssh-key file://KEY --known-hosts file://KNOWN \\
        [--path /opt/mcp-trader] [--port 22] deploy --tag sha-1a2b3c4
    dagger call server ... rollback [--to TAG]
    dagger call server ... status
    dagger call server ... attach --run-id RUN

`McpTrader.server` (main.py) validates the connection and returns a `Server` holding it (the
key and known_hosts stay `dagger.Secret`, passed by reference); each function here then adds
only its own arguments. The connection's arguments and their docs are written once, here.
The work itself is in deploy.py (the SSH container, re-attaching) and ssh.py (command lines).
"""

from __future__ import annotations

from typing import Annotated

import dagger
from dagger import Doc, object_type

from mcp_trader import deploy as _deploy
from mcp_trader import ssh as _ssh
from mcp_trader import supply as _supply
from mcp_trader.cosign import GITHUB_ISSUER, Policy
from mcp_trader.functions import uncached
from mcp_trader.verify import pins_for_deploy

# --- The connection: the arguments of `server` --------------------------------------------------
Host = Annotated[str, Doc("The server's host name or IP address.")]
User = Annotated[str, Doc("The SSH user on the server (a member of the docker group).")]
SshKey = Annotated[
    dagger.Secret, Doc("The private SSH key of that user (e.g. file://~/.ssh/id_ed25519).")
]
KnownHosts = Annotated[
    dagger.Secret,
    Doc("known_hosts line(s) for the server; an unknown or changed host key is refused."),
]
DeployPath = Annotated[str, Doc("The deploy directory on the server.")]
Port = Annotated[int, Doc("The server's SSH port.")]

# --- What deploy and rollback share ---------------------------------------------------------------
Registry = Annotated[
    str, Doc("The registry the token is for; sent only there, and only if the images are there.")
]
RegistryUsername = Annotated[
    str, Doc("User name for the registry login (used only with --registry-password).")
]
RegistryPassword = Annotated[
    dagger.Secret | None,
    Doc("Registry token; the server logs in with it (sent on ssh's stdin) before pulling."),
]
WaitTimeout = Annotated[int, Doc("Seconds the new version has to become healthy.")]
Keep = Annotated[int, Doc("Keep the images of this many recent deployments; prune older ones.")]
Repository = Annotated[
    str,
    Doc("owner/repo the images were published for: --registry/owner/repo/<service> (publish's)."),
]
RunId = Annotated[
    str, Doc("Id of this run (its staging directory on the server); default: a fresh one.")
]


def _auth(
    registry: str, username: str, password: dagger.Secret | None
) -> _supply.RegistryAuth | None:
    """The registry login verification uses: the deploy's token, for the images' registry."""
    return None if password is None else _supply.RegistryAuth(registry, username, password)


@object_type
class Server:
    """A server running the stack with Docker Compose, reached over SSH (strict host key check).

    Every function ships compose.yml and deploy/ to the deploy directory and runs
    deploy/mcp-trader-deploy.sh there.
    """

    source: dagger.Directory
    host: str
    user: str
    ssh_key: dagger.Secret
    known_hosts: dagger.Secret
    path: str = _deploy.DEFAULT_PATH
    port: int = 22

    @classmethod
    def connect(
        cls,
        source: dagger.Directory,
        *,
        host: str,
        user: str,
        ssh_key: dagger.Secret,
        known_hosts: dagger.Secret,
        path: str,
        port: int,
    ) -> Server:
        """The server, every connection fact validated (pure: no query reaches the engine)."""
        # @object_type makes Server a dataclass at run time, which mypy cannot see.
        return cls(  # type: ignore[call-arg]
            source=source,
            host=_ssh.validate_host(host),
            user=_ssh.validate_user(user),
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            path=_ssh.validate_path(path),
            port=_ssh.validate_port(port),
        )

    async def _run(
        self,
        script_args: list[str],
        *,
        run_id: str,
        detached: bool,
        registry_password: dagger.Secret | None = None,
    ) -> str:
        return await _deploy.run_on_server(
            self.source,
            script_args=script_args,
            host=self.host,
            user=self.user,
            port=self.port,
            path=self.path,
            ssh_key=self.ssh_key,
            known_hosts=self.known_hosts,
            registry_password=registry_password,
            run_id=run_id or _deploy.new_run_id(),
            detached=detached,
        )

    async def _pins(
        self,
        images: dict[str, str],
        policy: Policy | None,
        public_key: dagger.File | None,
        auth: _supply.RegistryAuth | None,
        expected_repository: str | None,
    ) -> _deploy.Pinned:
        """Resolve and verify every image (tools containers, before any SSH connection)."""
        run = _supply.verifier(policy, public_key, auth)
        return _deploy.pinned(
            await pins_for_deploy(run, images, policy, expected_repository=expected_repository)
        )

    @uncached
    async def deploy(
        self,
        repository: Repository,
        tag: Annotated[
            str | None, Doc("Image tag to deploy for both services (e.g. sha-1a2b3c4).")
        ] = None,
        provider_tag: Annotated[str | None, Doc("binance-provider tag, overriding --tag.")] = None,
        gateway_tag: Annotated[str | None, Doc("mcp-gateway tag, overriding --tag.")] = None,
        public_key: _supply.PublicKey = None,
        certificate_identity: _supply.CertificateIdentity = None,
        certificate_identity_regexp: _supply.CertificateIdentityRegexp = None,
        certificate_oidc_issuer: _supply.CertificateOidcIssuer = GITHUB_ISSUER,
        expected_repository: _supply.ExpectedRepository = None,
        allow_unsigned: _supply.AllowUnsigned = False,
        registry: Registry = _deploy.DEFAULT_REGISTRY,
        registry_username: RegistryUsername = _deploy.DEFAULT_REGISTRY_USERNAME,
        registry_password: RegistryPassword = None,
        wait_timeout: WaitTimeout = 120,
        keep: Keep = 5,
        run_id: RunId = "",
    ) -> str:
        """Deploy a version: verify, pull by digest, start, wait for health, pin; undo it if
        unhealthy.

        Before any SSH connection, each tag is resolved to its digest and verified (signature,
        provenance, SBOM) under the policy given (--public-key, or --certificate-identity(-regexp)
        and --certificate-oidc-issuer); the server then pins and pulls TAG@sha256:..., so a tag
        moved after verification changes nothing. An unsigned or mismatching image is refused
        before anything changes; --allow-unsigned skips the verification (recorded in the log).
        Fails (non-zero) when the server refuses (another deploy holds the lock), the pull fails
        (nothing changed), or the new version is unhealthy (the previous one is restored).
        """
        images = _deploy.requested_images(
            registry=registry,
            repository=repository,
            tag=tag,
            provider_tag=provider_tag,
            gateway_tag=gateway_tag,
        )
        policy = _supply.deploy_policy(
            allow_unsigned=allow_unsigned,
            public_key=public_key,
            certificate_identity=certificate_identity,
            certificate_identity_regexp=certificate_identity_regexp,
            certificate_oidc_issuer=certificate_oidc_issuer,
        )
        options = _deploy.Options(
            wait_timeout, keep, registry, registry_username, registry_password
        )
        if run_id:
            _ssh.validate_run_id(run_id)
        # Every flag checked before the first query: the same arguments, with the tags as given.
        _deploy.script_args(
            "deploy",
            {"tag": tag, "provider_tag": provider_tag, "gateway_tag": gateway_tag},
            options,
        )
        auth = _auth(registry, registry_username, registry_password)
        pins = await self._pins(images, policy, public_key, auth, expected_repository)
        return await self._run(
            _deploy.script_args("deploy", pins, options),
            run_id=run_id,
            detached=True,
            registry_password=registry_password,
        )

    @uncached
    async def rollback(
        self,
        to: Annotated[
            str | None,
            Doc(
                "Tag to return to (e.g. sha-1a2b3c4), verified and pinned like deploy's; "
                "default: the previous deployment, as recorded (its digests)."
            ),
        ] = None,
        repository: Annotated[
            str | None, Doc("With --to: owner/repo of the images, as for deploy.")
        ] = None,
        public_key: _supply.PublicKey = None,
        certificate_identity: _supply.CertificateIdentity = None,
        certificate_identity_regexp: _supply.CertificateIdentityRegexp = None,
        certificate_oidc_issuer: _supply.CertificateOidcIssuer = GITHUB_ISSUER,
        expected_repository: _supply.ExpectedRepository = None,
        allow_unsigned: _supply.AllowUnsigned = False,
        registry: Registry = _deploy.DEFAULT_REGISTRY,
        registry_username: RegistryUsername = _deploy.DEFAULT_REGISTRY_USERNAME,
        registry_password: RegistryPassword = None,
        wait_timeout: WaitTimeout = 120,
        keep: Keep = 5,
        run_id: RunId = "",
    ) -> str:
        """Roll back to the previous deployment (from the server's deployments.log) or to --to TAG.

        The previous deployment returns to the digests its log record pinned (verified when it
        was deployed); --to TAG is verified first under the policy given, like deploy. Health-gated
        like deploy: an unhealthy target is undone and the call fails.
        """
        options = _deploy.Options(
            wait_timeout, keep, registry, registry_username, registry_password
        )
        if run_id:
            _ssh.validate_run_id(run_id)
        pins: _deploy.Pinned = {"to": to}
        _deploy.script_args("rollback", pins, options)
        if to is not None:
            if repository is None:
                raise ValueError(
                    "rollback --to verifies the images first: give --repository owner/repo"
                )
            images = _deploy.requested_images(registry=registry, repository=repository, tag=to)
            policy = _supply.deploy_policy(
                allow_unsigned=allow_unsigned,
                public_key=public_key,
                certificate_identity=certificate_identity,
                certificate_identity_regexp=certificate_identity_regexp,
                certificate_oidc_issuer=certificate_oidc_issuer,
            )
            auth = _auth(registry, registry_username, registry_password)
            pins = await self._pins(images, policy, public_key, auth, expected_repository)
        return await self._run(
            _deploy.script_args("rollback", pins, options),
            run_id=run_id,
            detached=True,
            registry_password=registry_password,
        )

    @uncached
    async def status(self, run_id: RunId = "") -> str:
        """Show the pinned tags, each service's container, health and digest, and the last
        deployments. Fails when a service is not running and healthy."""
        return await self._run(_deploy.status_args(), run_id=run_id, detached=False)

    @uncached
    async def attach(
        self,
        run_id: Annotated[
            str,
            Doc("The deploy or rollback run to follow (its id, printed when it started)."),
        ] = "",
    ) -> str:
        """Follow a deploy or rollback on the server (default: the latest run) until it ends,
        e.g. after the connection of `deploy` dropped; ends with that run's output and exit code.
        """
        # Following a named run survives a dropped connection like the run itself (re-attach by
        # its id); "the latest run" could name another run by the time we reconnect.
        return await self._run(_deploy.attach_args(run_id), run_id=run_id, detached=bool(run_id))
