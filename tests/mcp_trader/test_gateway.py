"""build-gateway and gateway-builder: what they ask the engine for (engine double)."""

import os
import platform as host
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagger
import pytest
from mcp_trader import gateway, services
from mcp_trader.main import McpTrader
from mcp_trader.reproducible import FILE_EPOCH

from tests.enginedouble import EngineDouble, Obj, built, called
from tests.mcp_trader.test_provider import execs, index, source_path


async def runtime_and_builder(
    engine: EngineDouble, module: McpTrader, platform: str | None = None
) -> tuple[Obj, Obj]:
    ctr = await called(module.build_gateway(dagger.Platform(platform) if platform else None))
    runtime = await built(engine, ctr)
    stamped = runtime.arg("withDirectory", "source")
    assert isinstance(stamped, Obj) and stamped.type == "Directory"
    # The venv as built, with one mtime for every file (reproducible.py).
    assert stamped.steps[-1].field == "withTimestamps"
    assert stamped.steps[-1].args["timestamp"] == FILE_EPOCH
    venv = Obj("Directory", stamped.steps[:-1], stamped.id)
    assert venv.steps[-1].field == "directory"
    assert venv.steps[-1].args["path"] == "/app/.venv"
    return runtime, venv


async def test_runtime_copies_only_the_venv_runs_non_root_with_healthcheck(
    engine: EngineDouble, module: McpTrader
) -> None:
    runtime, _ = await runtime_and_builder(engine, module)
    assert runtime.steps[0].args["platform"] == "linux/amd64"
    assert re.fullmatch(r"python:3\.\d+-slim-bookworm", runtime.arg("from", "address"))
    copies = runtime.find_all("withDirectory") + runtime.find_all("withFile")
    assert [s.args["path"] for s in copies] == ["/app/.venv"], "only the virtualenv is copied"
    env = {s.args["name"]: s.args for s in runtime.find_all("withEnvVariable")}
    assert env["PATH"]["value"] == "/app/.venv/bin:$PATH" and env["PATH"]["expand"] is True
    assert env["VIRTUAL_ENV"]["value"] == "/app/.venv"
    assert runtime.arg("withUser", "name") == "65532:65532"
    assert runtime.arg("withExposedPort", "port") == 3001
    assert runtime.arg("withEntrypoint", "args") == ["/app/.venv/bin/mcp-gateway"]
    assert runtime.arg("withDockerHealthcheck", "args") == [
        "/app/.venv/bin/python",
        "-m",
        "mcp_gateway.healthcheck",
    ]
    labels = {s.args["name"]: s.args["value"] for s in runtime.find_all("withLabel")}
    assert labels == {
        "org.opencontainers.image.title": "mcp-gateway",
        "org.opencontainers.image.description": services.GATEWAY.description,
        "org.opencontainers.image.licenses": "MIT",
    }
    assert runtime.find("withExec") is None


async def test_builder_uses_pinned_uv_and_its_cache(
    engine: EngineDouble, module: McpTrader
) -> None:
    runtime, venv = await runtime_and_builder(engine, module)
    assert venv.arg("from", "address") == runtime.arg("from", "address"), "same Python image"
    uv = venv.arg("withFile", "source")
    assert uv.arg("from", "address") == gateway.UV_IMAGE
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", gateway.UV_IMAGE)
    assert uv.steps[-1].args["path"] == "/uv"
    assert venv.arg("withFile", "path") == "/usr/local/bin/uv"
    (mount,) = venv.find_all("withMountedCache")
    assert mount.args["path"] == "/root/.cache/uv"
    assert mount.args["cache"].arg("cacheVolume", "key") == "mcp-trader-uv"
    assert mount.args["sharing"] == "SHARED"
    env = {s.args["name"]: s.args["value"] for s in venv.find_all("withEnvVariable")}
    assert env["UV_CACHE_DIR"] == "/root/.cache/uv"
    assert env["UV_LINK_MODE"] == "copy"
    assert env["UV_COMPILE_BYTECODE"] == "1"
    assert env["UV_PROJECT_ENVIRONMENT"] == "/app/.venv"
    assert env["UV_PYTHON_DOWNLOADS"] == "never"
    # The engine's custom CAs are in the system store; uv 0.13 reads it with UV_SYSTEM_CERTS.
    assert env["UV_SYSTEM_CERTS"] == "true"


async def test_locked_dependencies_install_before_the_sources(
    engine: EngineDouble, module: McpTrader
) -> None:
    _, venv = await runtime_and_builder(engine, module)
    copies = [
        (source_path(s), s.args["path"], s.args["include"]) for s in venv.find_all("withDirectory")
    ]
    assert copies == [
        ("mcp-gateway", "/app", ["pyproject.toml", "uv.lock"]),
        ("mcp-gateway", "/app", ["pyproject.toml", "uv.lock", "README.md", "src"]),
    ]
    sync = ["uv", "sync", "--locked", "--no-dev", "--python-platform", "x86_64-manylinux_2_36"]
    # The project is rebuilt from its sources every time (uv's cache keys it on pyproject.toml's
    # mtime alone): --reinstall-package added on purpose (a src/ change used to be missed).
    install = [*sync, "--no-editable", "--reinstall-package", "mcp-gateway"]
    assert execs(venv) == [[*sync, "--no-install-project"], install]
    manifests = index(venv, "withDirectory", include=["pyproject.toml", "uv.lock"])
    deps = index(venv, "withExec", args=[*sync, "--no-install-project"])
    sources = index(venv, "withDirectory", include=list(gateway.BUILD_INPUTS))
    project = index(venv, "withExec", args=install)
    assert manifests < deps < sources < project


async def test_arm64_venv_is_resolved_for_arm64_without_emulation(
    engine: EngineDouble, module: McpTrader
) -> None:
    runtime, venv = await runtime_and_builder(engine, module, "linux/arm64")
    assert runtime.steps[0].args["platform"] == "linux/arm64"
    assert venv.steps[0].args.get("platform") is None
    commands = execs(venv)
    assert len(commands) == 2
    for argv in commands:
        assert argv[argv.index("--python-platform") + 1] == "aarch64-manylinux_2_36"


async def test_unsupported_platform_is_refused_before_any_query(
    engine: EngineDouble, module: McpTrader
) -> None:
    before = len(engine.queries)
    with pytest.raises(ValueError, match=r"'linux/riscv64'.*linux/amd64, linux/arm64"):
        await called(module.build_gateway(dagger.Platform("linux/riscv64")))
    assert len(engine.queries) == before


async def test_reads_only_mcp_gateway(engine: EngineDouble, module: McpTrader) -> None:
    await built(engine, await called(module.build_gateway()))
    source = await built(engine, module.source)
    read = {c.args["path"] for c in engine.calls("directory") if c.receiver == source}
    read |= {c.args["path"] for c in engine.calls("file") if c.receiver == source}
    assert read == {"mcp-gateway"}


async def test_gateway_builder_holds_the_production_venv(
    engine: EngineDouble, module: McpTrader
) -> None:
    builder = await built(engine, await called(module.gateway_builder()))
    assert builder.steps[-1].field == "withExec"
    assert "--no-editable" in builder.steps[-1].args["args"]


# --------------------------------------------------------------------------------------------
# Freshness, with real uv on the host: the build's install command on a throwaway project

#: The host's manylinux tag (these machines are Debian 12, glibc 2.36, like the images).
PLATFORM = f"{host.machine()}-manylinux_2_36"


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv on PATH")
def test_the_install_exec_rebuilds_the_project_from_its_sources(tmp_path: Path) -> None:
    """uv caches the wheel it builds from a project directory by pyproject.toml's mtime: with a
    persistent cache (the engine's uv volume) a change under src/ alone would install the
    previous wheel. The build's install command reinstalls the project itself."""
    project = tmp_path / "demo"
    (project / "src" / "demo").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "demo"\nversion = "0.1.0"\nrequires-python = ">=3.11"\n'
        '[build-system]\nrequires = ["hatchling"]\nbuild-backend = "hatchling.build"\n'
    )
    env = {**os.environ, "UV_CACHE_DIR": str(tmp_path / "cache"), "UV_PYTHON": sys.executable}
    for name in ("UV_PROJECT_ENVIRONMENT", "VIRTUAL_ENV", "UV_NO_CACHE", "UV_OFFLINE"):
        env.pop(name, None)

    def install(version: str, *, reinstall: bool) -> str:
        (project / "src" / "demo" / "__init__.py").write_text(f'VERSION = "{version}"\n')
        venv = tmp_path / f"venv-{version}"
        # The build exec's own argv (only the package name differs), or without the reinstall.
        argv = gateway.sync_command(PLATFORM, project=True, package="demo")
        if not reinstall:
            argv = argv[: argv.index("--reinstall-package")]
        run([*argv], {**env, "UV_PROJECT_ENVIRONMENT": str(venv)})
        return run([str(venv / "bin" / "python"), "-c", "import demo; print(demo.VERSION)"], env)

    def run(argv: list[str], environment: dict[str, str]) -> str:
        proc = subprocess.run(
            argv, cwd=project, env=environment, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    run(["uv", "lock"], env)
    assert install("one", reinstall=True) == "one"
    assert install("two", reinstall=False) == "one"  # the cached wheel: the bug
    assert install("three", reinstall=True) == "three"
