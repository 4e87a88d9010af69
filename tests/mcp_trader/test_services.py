"""services.py: the table of the two services, and the copies of its facts outside the module
(compose.yml, the deploy script, .env.example, the provider's Cargo.toml), which must not drift."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dagger
import pytest
import yaml
from dagger import dag
from mcp_trader import gateway, provider, services
from mcp_trader.services import GATEWAY, PROVIDER, SERVICES

from tests.enginedouble import EngineDouble, built

REPO = Path(__file__).resolve().parents[2]
#: How compose.yml and the deploy script name the variable that pins a service's image tag.
TAG_VARIABLE = re.compile(r"\b[A-Z][A-Z0-9_]*_IMAGE_TAG\b")


def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_the_table() -> None:
    assert [s.name for s in SERVICES] == ["binance-provider", "mcp-gateway"]
    assert [s.function for s in SERVICES] == ["build-provider", "build-gateway"]
    assert [s.stage for s in SERVICES] == ["build provider", "build gateway"]
    assert len({s.tag_variable for s in SERVICES}) == len(SERVICES)
    assert services.named("mcp-gateway") is GATEWAY
    with pytest.raises(ValueError, match="unknown service 'x': expected one of binance-provider"):
        services.named("x")
    assert PROVIDER.labels() == {
        "org.opencontainers.image.title": "binance-provider",
        "org.opencontainers.image.description": PROVIDER.description,
        "org.opencontainers.image.licenses": "MIT",
    }


def test_compose_runs_each_service_of_the_table_from_its_image_and_tag_variable() -> None:
    stack = compose()["services"]
    for service in SERVICES:
        assert service.name in stack, f"compose.yml has no service {service.name}"
        image = stack[service.name]["image"]
        # .../<name>:${<TAG_VARIABLE>:-latest} (the value may carry @sha256:..., the tag stays)
        assert re.search(
            rf"/{re.escape(service.name)}:\$\{{{service.tag_variable}(:-[^}}]*)?\}}$", image
        ), image
    used = set(TAG_VARIABLE.findall((REPO / "compose.yml").read_text()))
    assert used == {s.tag_variable for s in SERVICES}


def test_compose_reaches_each_service_on_its_port() -> None:
    stack = compose()["services"]
    for service in SERVICES:
        spec = stack[service.name]
        # The container port appears as exposed, published (target side) or in its settings.
        ports = [str(p) for p in spec.get("expose", [])]
        ports += [str(p).rsplit(":", 1)[-1].split("/")[0] for p in spec.get("ports", [])]
        ports += re.findall(
            r"\d+", " ".join(str(v) for v in (spec.get("environment") or {}).values())
        )
        assert str(service.port) in ports, (service.name, ports)


def test_the_deploy_script_and_env_example_name_the_same_services_and_variables() -> None:
    for path in ("deploy/mcp-trader-deploy.sh", ".env.example"):
        text = (REPO / path).read_text()
        assert set(TAG_VARIABLE.findall(text)) == {s.tag_variable for s in SERVICES}, path
    script = (REPO / "deploy/mcp-trader-deploy.sh").read_text()
    for service in SERVICES:
        assert re.search(rf"(?<![\w-]){re.escape(service.name)}(?![\w-])", script), service.name


def test_the_package_names_are_the_manifests() -> None:
    cargo = (REPO / provider.CRATE / "Cargo.toml").read_text()
    assert re.search(rf'(?m)^name = "{provider.PACKAGE}"$', cargo)
    pyproject = (REPO / gateway.PROJECT / "pyproject.toml").read_text()
    assert re.search(rf'(?m)^name = "{gateway.PACKAGE}"$', pyproject)


async def test_build_adds_the_port_and_labels_to_the_builders_image(engine: EngineDouble) -> None:
    async def tiny(source: dagger.Directory, platform: dagger.Platform) -> dagger.Container:
        return dag.container(platform=platform).from_("registry.invalid/tiny:1")

    row = services.Service(
        name="tiny",
        short="tiny",
        description="a test row",
        port=8080,
        port_description="http",
        tag_variable="TINY_IMAGE_TAG",
        builder=tiny,
    )
    image = await built(engine, await services.build(row, dag.directory(), "linux/arm64"))
    assert image.steps[0].args["platform"] == "linux/arm64"
    assert image.arg("withExposedPort", "port") == 8080
    labels = {s.args["name"]: s.args["value"] for s in image.find_all("withLabel")}
    assert labels["org.opencontainers.image.title"] == "tiny"
    # Checked to be for the asked platform (platforms.verified).
    assert ("platform", "Container") in {(c.field, c.type) for c in engine.calls("platform")}
