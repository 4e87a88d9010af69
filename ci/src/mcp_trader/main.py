"""The main object: every function `dagger call` exposes.

Each function is a thin entry point; the work lives in one module per job (services.py and the
builders provider.py and gateway.py, checks.py, tags.py, publish.py, pipeline.py, supply.py, and
server.py, the `server` object that deploys).
"""

import functools
from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, Ignore, check, function, object_type

from mcp_trader import checks as _checks
from mcp_trader import cosign as _cosign
from mcp_trader import deploy as _deploy
from mcp_trader import gateway as _gateway
from mcp_trader import pipeline as _pipeline
from mcp_trader import platforms as _platforms
from mcp_trader import provider as _provider
from mcp_trader import server as _server
from mcp_trader import services as _services
from mcp_trader import supply as _supply
from mcp_trader.errors import run_all as _run_all
from mcp_trader.functions import uncached
from mcp_trader.publish import DEFAULT_PLATFORMS as _DEFAULT_PLATFORMS
from mcp_trader.publish import publish_images as _publish_images
from mcp_trader.sources import SOURCE_IGNORE
from mcp_trader.tags import image_tags as _image_tags

PLATFORM_DOC = "Target platform: linux/amd64 (default) or linux/arm64."
# The signing flags of publish and ci (supply.py), written once.
SigningKey = Annotated[
    dagger.Secret | None,
    Doc("cosign private key to sign with (e.g. file://cosign.key); nothing goes to a public log."),
]
SigningKeyPassword = Annotated[dagger.Secret | None, Doc("The password of --signing-key.")]
OidcRequestUrl = Annotated[
    dagger.Secret | None,
    Doc("Keyless signing in GitHub Actions: env://ACTIONS_ID_TOKEN_REQUEST_URL (id-token: write)."),
]
OidcRequestToken = Annotated[
    dagger.Secret | None,
    Doc("Keyless signing in GitHub Actions: env://ACTIONS_ID_TOKEN_REQUEST_TOKEN."),
]
Unsigned = Annotated[
    bool, Doc("Publish without signatures or attestations (deploys then need --allow-unsigned).")
]
BuilderId = Annotated[
    str,
    Doc("Provenance builder: local, or $GITHUB_SERVER_URL/$GITHUB_WORKFLOW_REF in Actions."),
]
Invocation = Annotated[
    str,
    Doc("Provenance run id: the Actions run URL; default for local builds: local:<username>."),
]
Created = Annotated[
    str | None,
    Doc("The `created` label, RFC 3339 UTC: the commit's committer time; default: now."),
]


@object_type
class McpTrader:
    """mcp-trader's pipeline: build both images, test them, publish to GHCR, deploy over SSH."""

    source: Annotated[
        dagger.Directory,
        Doc("The repository root. Defaults to the directory holding dagger.json."),
        DefaultPath("/"),
        Ignore(SOURCE_IGNORE),
    ]

    # --- Build and test: the images (services.py), their builders, the checks (checks.py) ------
    @function
    async def build_provider(
        self, platform: Annotated[dagger.Platform | None, Doc(PLATFORM_DOC)] = None
    ) -> dagger.Container:
        """Build the binance-provider runtime image: distroless, non-root, port 50053.

        Chain it: `terminal`, `export --path ./provider.tar`, `as-service up --ports 50053:50053`.
        """
        return await _services.build(_services.PROVIDER, self.source, platform)

    @function
    async def build_gateway(
        self, platform: Annotated[dagger.Platform | None, Doc(PLATFORM_DOC)] = None
    ) -> dagger.Container:
        """Build the mcp-gateway runtime image: slim Python, non-root, port 3001.

        Chain it: `terminal`, `export --path ./gateway.tar`, `as-service up --ports 3001:3001`.
        """
        return await _services.build(_services.GATEWAY, self.source, platform)

    @function
    async def build_all(
        self, platform: Annotated[dagger.Platform | None, Doc(PLATFORM_DOC)] = None
    ) -> str:
        """Build both images concurrently; print each one's name, platform and port.

        Fails if either build fails, naming it and showing the compiler's output. For an
        image's size, export it: `dagger call build-provider export --path ./provider.tar`.
        """
        target = _platforms.validate_platform(platform)

        async def built(service: _services.Service) -> str:
            await (await _services.build(service, self.source, target)).sync()
            return f"{service.name:<18} {target!s:<13} port {service.port}"

        lines = await _run_all(
            {s.function: functools.partial(built, s) for s in _services.SERVICES}
        )
        return "\n".join(lines.values()) + "\n"

    @function
    async def provider_builder(
        self, platform: Annotated[dagger.Platform | None, Doc(PLATFORM_DOC)] = None
    ) -> dagger.Container:
        """The Rust build container (sources, fetched dependencies, caches), for debugging:
        `dagger call provider-builder terminal`."""
        ctr, _ = await _provider.builder(self.source, platform)
        return ctr

    @function
    async def gateway_builder(
        self, platform: Annotated[dagger.Platform | None, Doc(PLATFORM_DOC)] = None
    ) -> dagger.Container:
        """The Python build container (the production virtualenv at /app/.venv), for debugging:
        `dagger call gateway-builder terminal`."""
        return await _gateway.builder(self.source, platform)

    @function
    async def test(self) -> None:
        """Run the whole test suite in containers, Rust and Python concurrently.

        cargo fmt --check, clippy -D warnings, cargo test; ruff, ruff format --check, mypy,
        pytest. Fails naming every failed check, with its output.
        """
        await _checks.run_every(self.source)

    @function
    @check
    async def provider_format(self) -> None:
        """Check the provider's formatting (cargo fmt --check)."""
        await _checks.run(self.source, "provider-format")

    @function
    @check
    async def provider_lint(self) -> None:
        """Lint the provider with clippy, warnings as errors."""
        await _checks.run(self.source, "provider-lint")

    @function
    @check
    async def provider_tests(self) -> None:
        """Run the provider's unit and integration tests (cargo test --locked)."""
        await _checks.run(self.source, "provider-tests")

    @function
    @check
    async def gateway_lint(self) -> None:
        """Lint the gateway (ruff check, ruff format --check)."""
        await _checks.run(self.source, "gateway-lint")

    @function
    @check
    async def gateway_types(self) -> None:
        """Type-check the gateway (mypy, strict)."""
        await _checks.run(self.source, "gateway-types")

    @function
    @check
    async def gateway_tests(self) -> None:
        """Run the gateway's tests (pytest)."""
        await _checks.run(self.source, "gateway-tests")

    # --- Publish: the tag rules (tags.py) and pushing both images (publish.py) ----------------
    @function
    def tags(
        self,
        sha: Annotated[str, Doc("The commit: 7 to 40 hex digits (github.sha).")],
        ref: Annotated[
            str,
            Doc("The full git ref (github.ref): refs/heads/B, refs/tags/T or refs/pull/N/merge."),
        ],
        default_branch: Annotated[str, Doc("The branch whose builds also get `latest`.")] = "main",
    ) -> list[str]:
        """The tags `publish` would push for this commit and ref, in push order (a dry run).

        Example: --sha 1a2b3c4 --ref refs/heads/main -> sha-1a2b3c4, main, latest.
        A ref these rules cannot tag is refused with the reason.
        """
        return _image_tags(sha=sha, ref=ref, default_branch=default_branch)

    @uncached
    async def publish(
        self,
        repository: Annotated[
            str, Doc("owner/repo (github.repository); lowercased in the image names.")
        ],
        username: Annotated[str, Doc("Registry user name (on GHCR: github.actor).")],
        password: Annotated[
            dagger.Secret,
            Doc("Registry token with write access to packages, e.g. env://GITHUB_TOKEN."),
        ],
        sha: Annotated[str, Doc("The commit being published: 7 to 40 hex digits (github.sha).")],
        ref: Annotated[
            str,
            Doc("The full git ref (github.ref): refs/heads/B, refs/tags/T or refs/pull/N/merge."),
        ],
        registry: Annotated[str, Doc("Registry host[:port].")] = "ghcr.io",
        platforms: Annotated[
            list[str] | None,
            Doc("Platforms of the images: linux/amd64 (default), linux/arm64, or both."),
        ] = None,
        default_branch: Annotated[str, Doc("The branch whose builds also get `latest`.")] = "main",
        allow_pr: Annotated[
            bool, Doc("Publish a pull request ref (refs/pull/N/...) as pr-N; refused otherwise.")
        ] = False,
        created: Created = None,
        signing_key: SigningKey = None,
        signing_key_password: SigningKeyPassword = None,
        oidc_request_url: OidcRequestUrl = None,
        oidc_request_token: OidcRequestToken = None,
        unsigned: Unsigned = False,
        builder_id: BuilderId = "local",
        invocation: Invocation = "",
    ) -> list[str]:
        """Build both images, then push them under every tag of this commit and ref, signed.

        Everything is checked before anything runs; every platform of both images is built
        before the first push; an existing immutable tag (sha-, X.Y.Z) is never overwritten;
        `sha-` tags go first, then every digest is signed with its SLSA provenance and SBOM
        attached, then the moving tags, `latest` last; transient registry errors are retried.
        Returns each pushed reference with its digest (image:tag@sha256:...).
        """
        signing = _supply.signing_config(
            unsigned=unsigned,
            key=signing_key,
            key_password=signing_key_password,
            oidc_request_url=oidc_request_url,
            oidc_request_token=oidc_request_token,
        )
        chosen = _DEFAULT_PLATFORMS if platforms is None else platforms
        chain = _supply.supply_chain(
            signing=signing,
            registry=registry,
            username=username,
            password=password,
            repository=repository,
            sha=sha,
            ref=ref,
            builder_id=builder_id,
            invocation=invocation,
            parameters={"function": "publish", "registry": registry, "created": created},
        )
        return await _publish_images(
            # The same builds as build-provider / build-gateway.
            _services.builder(self.source),
            repository=repository,
            username=username,
            password=password,
            sha=sha,
            ref=ref,
            registry=registry,
            platforms=chosen,
            default_branch=default_branch,
            allow_pr=allow_pr,
            created=created,
            supply_chain=chain,
        )

    # --- Supply chain: SBOM, verification (supply.py, verify.py) -------------------------------
    @function
    async def sbom(
        self,
        service: Annotated[str, Doc("binance-provider or mcp-gateway.")] = "binance-provider",
        platform: Annotated[dagger.Platform | None, Doc(PLATFORM_DOC)] = None,
    ) -> dagger.File:
        """The SPDX 2.3 JSON SBOM of a service's runtime image, made by syft from the image:
        Debian packages, Python distributions, Rust crates. Chain it: `export --path sbom.json`.
        """
        named = _services.named(service)
        image = await _services.build(named, self.source, platform)
        return _supply.sbom(image, name=named.name)

    @uncached
    async def verify(
        self,
        image: Annotated[
            str,
            Doc("Image to check: registry/path:tag or @sha256:digest (the tag is resolved)."),
        ],
        public_key: _supply.PublicKey = None,
        certificate_identity: _supply.CertificateIdentity = None,
        certificate_identity_regexp: _supply.CertificateIdentityRegexp = None,
        certificate_oidc_issuer: _supply.CertificateOidcIssuer = _cosign.GITHUB_ISSUER,
        expected_repository: _supply.ExpectedRepository = None,
        registry_username: Annotated[str | None, Doc("Registry user, for private images.")] = None,
        registry_password: Annotated[
            dagger.Secret | None, Doc("Registry token, for private images.")
        ] = None,
    ) -> str:
        """Verify an image: its signature, its SLSA provenance and its SBOM attestation, under
        one policy (a public key, or a keyless identity and issuer). A multi-platform index:
        its own signature, and all three for every platform manifest it lists.

        Prints what was verified (digest, signer, source commit, builder, SBOM contents; per
        platform for an index); a refusal names the check that failed, and the platform.
        """
        policy = _supply.policy_for(
            public_key=public_key,
            certificate_identity=certificate_identity,
            certificate_identity_regexp=certificate_identity_regexp,
            certificate_oidc_issuer=certificate_oidc_issuer,
        )
        auth = _supply.registry_auth(image, registry_username, registry_password)
        verified = await _supply.verify(
            image, policy, public_key, auth, expected_repository=expected_repository
        )
        return verified.report() + "\n"

    # --- Deploy: one server, its connection given once (server.py), then deploy/rollback/... ---
    @function
    def server(
        self,
        host: _server.Host,
        user: _server.User,
        ssh_key: _server.SshKey,
        known_hosts: _server.KnownHosts,
        path: _server.DeployPath = _deploy.DEFAULT_PATH,
        port: _server.Port = 22,
    ) -> _server.Server:
        """The server to deploy to, reached over SSH; chain what to do there: `deploy --tag T`,
        `rollback [--to T]`, `status`, `attach --run-id R`.

        The connection is checked here (host, user, path, port), before anything runs.
        """
        return _server.Server.connect(
            self.source,
            host=host,
            user=user,
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            path=path,
            port=port,
        )

    # --- CI: what .github/workflows/ci.yml calls; the decisions live in pipeline.py -------------
    @uncached
    async def ci(
        self,
        sha: Annotated[str, Doc("The commit being built: 7 to 40 hex digits (github.sha).")],
        ref: Annotated[
            str,
            Doc("The full git ref (github.ref): refs/heads/B, refs/tags/T or refs/pull/N/merge."),
        ],
        repository: Annotated[
            str, Doc("owner/repo (github.repository); images go to ghcr.io/owner/repo/<service>.")
        ],
        username: Annotated[
            str | None, Doc("Registry user (github.actor); needed only when the ref publishes.")
        ] = None,
        password: Annotated[
            dagger.Secret | None,
            Doc("Registry token, e.g. env://GITHUB_TOKEN; needed only when the ref publishes."),
        ] = None,
        default_branch: Annotated[str, Doc("The branch whose pushes publish `latest`.")] = "main",
        created: Created = None,
        signing_key: SigningKey = None,
        signing_key_password: SigningKeyPassword = None,
        oidc_request_url: OidcRequestUrl = None,
        oidc_request_token: OidcRequestToken = None,
        unsigned: Unsigned = False,
        builder_id: BuilderId = "local",
        invocation: Invocation = "",
    ) -> str:
        """Test and build both images concurrently; publish them for the default branch or a v* tag.

        Pull requests, other branches and other tags are tested and built only, and the output
        says so. A failure names its stage (test, build provider, build gateway, publish).
        """
        return await _pipeline.run_ci(
            test=self.test,
            build=_services.builder(self.source),
            sha=sha,
            ref=ref,
            repository=repository,
            username=username,
            password=password,
            default_branch=default_branch,
            created=created,
            signing=_supply.SigningFlags(
                unsigned=unsigned,
                key=signing_key,
                key_password=signing_key_password,
                oidc_request_url=oidc_request_url,
                oidc_request_token=oidc_request_token,
                builder_id=builder_id,
                invocation=invocation,
            ),
        )
