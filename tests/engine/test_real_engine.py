"""The same functions against a real Dagger engine, through the CLI a user runs.

Skipped with the reason when no engine is reachable (the development and CI machines of this
repository have none). Run them where one is: `dagger run uv run pytest -m engine` or, with the
dagger CLI v0.21.11 and a container runtime, `uv run pytest -m engine`.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _unreachable() -> str | None:
    """Why no engine can be used here, or None when one can."""
    cli = shutil.which("dagger")
    if cli is None:
        return "no `dagger` CLI on PATH (install v0.21.11 to run the real-engine tests)"
    if os.environ.get("DAGGER_SESSION_PORT"):
        return None  # inside `dagger run`: the CLI joins that session
    for runtime in ("docker", "podman", "nerdctl"):
        if shutil.which(runtime):
            probe = subprocess.run([runtime, "info"], capture_output=True, timeout=30)
            if probe.returncode == 0:
                return None
    return "no DAGGER_SESSION_PORT and no running container runtime for the dagger CLI"


REASON = _unreachable()
pytestmark = [pytest.mark.engine, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def dagger_call(*args: str, timeout: int = 3600) -> str:
    """`dagger call ARGS` in the repository root; fails the test with its output on error."""
    proc = subprocess.run(
        ["dagger", "call", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"dagger call {' '.join(args)} failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_build_all_builds_both_images_and_summarizes_them() -> None:
    out = dagger_call("build-all")
    assert "binance-provider" in out and "mcp-gateway" in out
    assert out.count("linux/amd64") == 2


def test_test_suite_passes_in_containers() -> None:
    dagger_call("test")


def test_provider_image_runs_as_non_root_and_its_healthcheck_can_fail() -> None:
    assert dagger_call("build-provider", "user").strip() == "65532:65532"
    # Nothing serves in this exec, so the healthcheck must report unhealthy (exit != 0).
    proc = subprocess.run(
        [
            "dagger",
            "call",
            "build-provider",
            "with-exec",
            "--args=/usr/local/bin/binance-provider,healthcheck",
            "--expect=FAILURE",
            "exit-code",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert proc.returncode == 0 and proc.stdout.strip() != "0", proc.stderr[-4000:]


def test_gateway_image_serves_health_as_non_root() -> None:
    assert dagger_call("build-gateway", "with-exec", "--args=id,-u", "stdout").strip() == "65532"
    script = (
        "mcp-gateway & for i in $(seq 50); do "
        "python -m mcp_gateway.healthcheck && exit 0; sleep 0.2; done; exit 1"
    )
    dagger_call("build-gateway", "with-exec", f"--args=sh,-c,{script}", "sync")


def test_the_allowlist_uploads_the_contract_the_build_compiles() -> None:
    # The engine applies `source`'s Ignore (sources.SOURCE_IGNORE) with .dockerignore rules, not
    # the .gitignore ones the docs name: the .proto build.rs compiles must arrive all the same.
    proto = dagger_call(
        "provider-builder",
        "file",
        "--path=/src/providers/proto/provider/v1/provider.proto",
        "contents",
    )
    assert "package provider.v1;" in proto
    assert proto == (REPO / "providers/proto/provider/v1/provider.proto").read_text()


def test_an_arm64_build_is_an_arm64_image() -> None:
    for function in ("build-provider", "build-gateway"):
        out = dagger_call(function, "--platform=linux/arm64", "platform")
        assert out.strip() == "linux/arm64", (function, out)
