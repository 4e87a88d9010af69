"""The `mcp-gateway` image: a uv build container and a slim Python runtime image.

Caching: uv's cache is a volume shared by every Python job of this module (`UV_LINK_MODE=copy`,
since a cache mount and the virtualenv are different filesystems); the locked dependencies are
installed with only `pyproject.toml` + `uv.lock` in place (`--no-install-project`), so a source
edit reuses that layer; the inputs are only `mcp-gateway/`'s manifests, README (the package
metadata reads it) and `src/`, so a change under `providers/` or the docs leaves this build cached.
The gateway ships committed gRPC stubs, so neither build nor runtime needs `providers/proto`.

The runtime image copies only the virtualenv (the project is installed into it as a wheel,
`--no-editable`), at the same path as in the build container: console scripts hard-code it.
For another platform the virtualenv is resolved for that platform (`--python-platform`) by the
same Python version, so no emulation is needed; bytecode is platform-independent.

uv trusts the system CA store (`UV_SYSTEM_CERTS`): the engine installs its custom CAs (a
corporate proxy's, say) into every container's system store, and uv's bundled roots would refuse
a TLS-intercepting proxy with "invalid peer certificate: UnknownIssuer".

The project itself is reinstalled from its sources on every build (`--reinstall-package`): uv
caches the wheel it builds from a directory by the mtime of `pyproject.toml` only, so with a
persistent uv cache a change under `src/` alone would install the previous wheel.
"""

from __future__ import annotations

from typing import Final

import dagger
from dagger import dag

from . import platforms
from .reproducible import FILE_EPOCH, SOURCE_DATE_EPOCH

#: Official Python image (Debian 12, glibc 2.36), pinned to the minor version the gateway targets.
PYTHON_IMAGE: Final = "python:3.12-slim-bookworm"
#: Official uv image, pinned to the uv that wrote mcp-gateway/uv.lock; only its /uv binary is used.
UV_IMAGE: Final = "ghcr.io/astral-sh/uv:0.13.9"

PROJECT: Final = "mcp-gateway"
PROTO: Final = "providers/proto"
MANIFESTS: Final = ("pyproject.toml", "uv.lock")
BUILD_INPUTS: Final = (*MANIFESTS, "README.md", "src")
#: The checks also read the tests and the stub generator (its test compares against the .proto).
CHECK_INPUTS: Final = (*BUILD_INPUTS, "tests", "scripts")

APP: Final = "/app"
VENV: Final = f"{APP}/.venv"
#: Checks keep the repository layout: the stub test reads ../providers/proto.
CHECK_WORKDIR: Final = f"/src/{PROJECT}"
UV_CACHE: Final = "/root/.cache/uv"
CACHE_UV: Final = "mcp-trader-uv"

#: The package name in pyproject.toml (what `--reinstall-package` names).
PACKAGE: Final = "mcp-gateway"
#: A fixed non-root uid/gid (the slim image has no unprivileged user; nothing needs a name).
USER: Final = "65532:65532"

#: uv's name for "this CPU, glibc 2.36" (bookworm), so wheels match the runtime image.
PYTHON_PLATFORMS: Final = {
    "linux/amd64": "x86_64-manylinux_2_36",
    "linux/arm64": "aarch64-manylinux_2_36",
}


def uv_base() -> dagger.Container:
    """Python plus a pinned uv and the shared uv cache, on the engine's platform."""
    return (
        dag.container()
        .from_(PYTHON_IMAGE)
        .with_file("/usr/local/bin/uv", dag.container().from_(UV_IMAGE).file("/uv"))
        .with_mounted_cache(
            UV_CACHE, dag.cache_volume(CACHE_UV), sharing=dagger.CacheSharingMode.SHARED
        )
        .with_env_variable("UV_CACHE_DIR", UV_CACHE)
        .with_env_variable("UV_LINK_MODE", "copy")
        # uv 0.13 reads UV_SYSTEM_CERTS (UV_NATIVE_TLS is its deprecated older name).
        .with_env_variable("UV_SYSTEM_CERTS", "true")
        .with_env_variable("UV_COMPILE_BYTECODE", "1")
        # Set, py_compile writes hash-checked .pyc files: the same bytes on every install.
        .with_env_variable("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        # The image's interpreter, never a downloaded one: the runtime image has the same.
        .with_env_variable("UV_PYTHON_DOWNLOADS", "never")
        .with_env_variable("UV_PYTHON", "/usr/local/bin/python3")
    )


async def builder(
    source: dagger.Directory, platform: dagger.Platform | None = None
) -> dagger.Container:
    """The build container: the locked production virtualenv of mcp-gateway at /app/.venv."""
    target = platforms.validate_platform(platform)
    python_platform = PYTHON_PLATFORMS[str(target)]
    project = source.directory(PROJECT)
    return (
        uv_base()
        .with_env_variable("UV_PROJECT_ENVIRONMENT", VENV)
        .with_workdir(APP)
        .with_directory(APP, project, include=list(MANIFESTS))
        .with_exec(sync_command(python_platform, project=False))
        .with_directory(APP, project, include=list(BUILD_INPUTS))
        .with_exec(sync_command(python_platform, project=True))
    )


def sync_command(python_platform: str, *, project: bool, package: str = PACKAGE) -> list[str]:
    """`uv sync` of the production virtualenv: the locked dependencies alone (before the
    sources arrive), or the project itself, as a wheel rebuilt from its sources every time."""
    sync = ["uv", "sync", "--locked", "--no-dev", "--python-platform", python_platform]
    if not project:
        return [*sync, "--no-install-project"]
    return [*sync, "--no-editable", "--reinstall-package", package]


async def runtime(source: dagger.Directory, platform: dagger.Platform) -> dagger.Container:
    """The runtime image's payload for `platform`: slim Python, the virtualenv, non-root, its
    entrypoint and healthcheck (services.build adds the port and labels, and checks it)."""
    venv = (await builder(source, platform)).directory(VENV).with_timestamps(FILE_EPOCH)
    return (
        dag.container(platform=platform)
        .from_(PYTHON_IMAGE)
        .with_directory(VENV, venv)
        .with_env_variable("VIRTUAL_ENV", VENV)
        .with_env_variable("PATH", f"{VENV}/bin:$PATH", expand=True)
        .with_env_variable("PYTHONUNBUFFERED", "1")
        .with_env_variable("PYTHONDONTWRITEBYTECODE", "1")
        .with_workdir(APP)
        .with_user(USER)
        .with_entrypoint([f"{VENV}/bin/mcp-gateway"])
        # Standard library only: exits 0 only when /health answers 200.
        .with_docker_healthcheck(
            [f"{VENV}/bin/python", "-m", "mcp_gateway.healthcheck"],
            interval="10s",
            timeout="5s",
            start_period="5s",
            retries=3,
        )
    )


async def checker(source: dagger.Directory) -> dagger.Container:
    """The container the gateway's checks run in: all locked dependencies (dev included), the
    sources, tests and the .proto contract, laid out as in the repository."""
    project = source.directory(PROJECT)
    return (
        uv_base()
        .with_workdir(CHECK_WORKDIR)
        .with_directory(CHECK_WORKDIR, project, include=list(MANIFESTS))
        .with_exec(["uv", "sync", "--locked", "--no-install-project"])
        .with_directory(f"/src/{PROTO}", source.directory(PROTO))
        .with_directory(CHECK_WORKDIR, project, include=list(CHECK_INPUTS))
        .with_exec(["uv", "sync", "--locked"])
    )
