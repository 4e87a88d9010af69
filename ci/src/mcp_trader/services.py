"""The two services, as data: every fact about them that the builds, `build-all`, `ci` and
`publish` share, and that compose.yml and the deploy script repeat (their names and tag variables;
tests/mcp_trader/test_services.py fails when those copies drift).

Adding a service is one more `Service` row plus its builder module; `build-all`, `ci` and
`publish` loop over `SERVICES`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import dagger

from . import gateway, platforms, provider
from .labels import oci_labels

Builder = Callable[[dagger.Directory, dagger.Platform], Awaitable[dagger.Container]]
"""Builds a service's runtime image (payload, user, entrypoint, healthcheck) for a platform."""

NamedBuilder = Callable[[str, dagger.Platform], Awaitable[dagger.Container]]
"""Builds the runtime image of the service with that name (`publish` and `ci` take one)."""


@dataclass(frozen=True)
class Service:
    """One service: its image, how it is built, and how the deploy files name it."""

    #: The image name under the repository (ghcr.io/owner/repo/<name>) and the compose service.
    name: str
    #: The word in its function names and stages: build-<short>, "build <short>", --<short>-tag.
    short: str
    #: The `org.opencontainers.image.description` label.
    description: str
    #: The port its image exposes, and what listens there.
    port: int
    port_description: str
    #: The variable pinning its image tag in compose.yml and the server's .env.
    tag_variable: str
    builder: Builder

    @property
    def function(self) -> str:
        """Its build function on the command line (`dagger call build-provider`)."""
        return f"build-{self.short}"

    @property
    def stage(self) -> str:
        """Its build stage in `ci`'s report and errors."""
        return f"build {self.short}"

    def labels(self) -> dict[str, str]:
        """The OCI labels known from the source alone (publish adds the commit's)."""
        return oci_labels(title=self.name, description=self.description)


PROVIDER: Final = Service(
    name="binance-provider",
    short="provider",
    description="provider.v1 gRPC server with read-only Binance spot market data tools",
    port=50053,
    port_description="provider.v1 gRPC and grpc.health.v1",
    tag_variable="BINANCE_IMAGE_TAG",
    builder=provider.runtime,
)
GATEWAY: Final = Service(
    name="mcp-gateway",
    short="gateway",
    description="MCP server exposing the tools of provider.v1 gRPC market-data providers",
    port=3001,
    port_description="MCP streamable HTTP (/mcp), /health, /ready",
    tag_variable="GATEWAY_IMAGE_TAG",
    builder=gateway.runtime,
)
#: Build, report and push order: the provider first, as the gateway depends on it at runtime.
SERVICES: Final = (PROVIDER, GATEWAY)


def named(name: str) -> Service:
    """The service called `name`; refused with the list of services otherwise."""
    for service in SERVICES:
        if service.name == name:
            return service
    raise ValueError(
        f"unknown service {name!r}: expected one of {', '.join(s.name for s in SERVICES)}"
    )


async def build(
    service: Service, source: dagger.Directory, platform: dagger.Platform | str | None = None
) -> dagger.Container:
    """The runtime image of `service` for `platform` (linux/amd64 by default): its builder's
    image plus the exposed port and the static labels, verified to be for that platform."""
    target = platforms.validate_platform(platform)
    image = (await service.builder(source, target)).with_exposed_port(
        service.port, description=service.port_description
    )
    for name, value in service.labels().items():
        image = image.with_label(name, value)
    return await platforms.verified(image, target, what=service.name)


def builder(source: dagger.Directory) -> NamedBuilder:
    """The module's own builds (`build-provider`, `build-gateway`) keyed by service name."""

    async def build_named(name: str, platform: dagger.Platform) -> dagger.Container:
        return await build(named(name), source, platform)

    return build_named
