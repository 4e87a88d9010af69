"""The host tools are the versions of the images the module runs (one pin, checked both ways)."""

from __future__ import annotations

import re
import subprocess

from mcp_trader import cosign, provider

from tests.supply import tools

SETUP = tools.REPO / ".ci" / "setup.d" / "50-supply-chain.sh"


def pinned(name: str) -> str:
    match = re.search(rf'^readonly {name}="([^"]+)"$', SETUP.read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned in {SETUP}"
    return match[1]


def test_setup_script_pins_the_module_image_versions() -> None:
    assert pinned("COSIGN_VERSION") == cosign.COSIGN_VERSION
    assert pinned("SYFT_VERSION") == cosign.SYFT_VERSION
    # The host's cargo-auditable (tests/supply's binaries) is the image build's.
    assert pinned("CARGO_AUDITABLE_VERSION") == provider.CARGO_AUDITABLE_VERSION


def test_installed_tools_are_the_pinned_versions(supply_ready: None) -> None:
    for argv, version in (
        (["cosign", "version"], f"v{cosign.COSIGN_VERSION}"),
        (["syft", "version"], cosign.SYFT_VERSION),
        (["crane", "version"], pinned("CRANE_VERSION")),
    ):
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        assert version in out.stdout + out.stderr, (argv, out.stdout, out.stderr)
