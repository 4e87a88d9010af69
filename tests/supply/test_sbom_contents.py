"""Real syft on the test images: the SBOM lists the Debian packages of the base, every Python
distribution of the gateway's venv and every Rust crate of the provider binary (embedded by
`cargo auditable`; a plain binary shows none, which is why the build uses it)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from mcp_trader import sbom

from tests.deploy import images
from tests.supply import tools
from tests.supply.conftest import Signed

pytestmark = pytest.mark.docker


def locked(path: Path) -> dict[str, str]:
    return {p["name"]: p["version"] for p in tomllib.loads(path.read_text())["package"]}


def test_provider_sbom_lists_the_binary_crates_and_the_debian_packages(
    runner: tools.HostRunner, signed: Signed, home: Path
) -> None:
    doc = json.loads(tools.sbom_file(runner, signed.provider, home / "p.json").read_text())
    assert doc["spdxVersion"] == "SPDX-2.3"
    assert doc["name"] == signed.provider.repository
    crates = sbom.versions(doc, "cargo")
    lock = locked(tools.REPO / "providers" / "binance-rs" / "Cargo.lock")
    for crate in ("tonic", "tokio", "prost", "reqwest", "binance-provider"):
        assert crates.get(crate) == lock[crate], (crate, crates.get(crate))
    # Every crate the SBOM names is in the lock file, at its locked version.
    assert all(lock.get(name) == version for name, version in crates.items()), crates
    debs = sbom.versions(doc, "deb")
    assert {"libc6", "python3", "base-files"} <= set(debs)


def test_gateway_sbom_lists_every_locked_distribution(
    runner: tools.HostRunner, signed: Signed, home: Path
) -> None:
    doc = json.loads(tools.sbom_file(runner, signed.gateway, home / "g.json").read_text())
    dists = {name.lower().replace("_", "-"): v for name, v in sbom.versions(doc, "pypi").items()}
    lock = locked(tools.REPO / "mcp-gateway" / "uv.lock")
    for name in ("mcp", "grpcio", "protobuf", "pydantic", "uvicorn", "mcp-gateway"):
        assert dists.get(name) == lock[name], (name, dists.get(name))
    assert "libc6" in sbom.versions(doc, "deb")


def test_a_plain_binary_hides_its_crates(runner: tools.HostRunner, home: Path) -> None:
    """Why the provider is built with cargo auditable: syft finds no crate in a plain build."""
    plain = home / "plain"
    plain.mkdir()
    binary = tools.REPO / "providers" / "binance-rs" / "target" / "debug" / "binance-provider"
    target = plain / "binance-provider"
    target.write_bytes(binary.read_bytes())
    images.run(["objcopy", "--remove-section=.dep-v0", str(target)])
    out = home / "plain.json"
    runner.ok(["syft", "scan", f"file:{target}", "--quiet", "--output", f"spdx-json@2.3={out}"])
    assert sbom.versions(json.loads(out.read_text()), "cargo") == {}
    audit = home / "audit.json"
    runner.ok(["syft", "scan", f"file:{binary}", "--quiet", "--output", f"spdx-json@2.3={audit}"])
    assert "tonic" in sbom.versions(json.loads(audit.read_text()), "cargo")
