"""Test images for the deploy scenarios, built from the real service binaries.

No image can be pulled where these tests run (no registry is reachable but the local one), so the
base is a Debian bookworm minbase made with debootstrap (with `python3`: the gateway's venv needs
Debian's interpreter and the provider binary is glibc-linked), imported once and reused across
runs. On top of it:

- binance-provider: the crate's own binary (built with `cargo build --locked`);
- mcp-gateway: the package and its locked dependencies in a relocatable venv made with the
  host's Debian `/usr/bin/python3` (bookworm's 3.11, the same as in the base image);
- proxy: Debian's HAProxy 2.6 package (compose.yml pins the official image, which cannot be
  pulled here; the tests set PROXY_IMAGE to this one).

Each version is pushed to the local registry under the production names
(`<prefix>/binance-provider:<tag>`, `<prefix>/mcp-gateway:<tag>`) and then removed from the
local image store, so a deploy really pulls it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REGISTRY = "127.0.0.1:5000"
# Several checkouts on one machine share the registry: each can push its own builds under its own
# namespace (MCP_TRADER_TEST_NAMESPACE), so one session never deploys another's binaries.
NAMESPACE = os.environ.get("MCP_TRADER_TEST_NAMESPACE", "mcp-trader/mcp-trader")
PREFIX = f"{REGISTRY}/{NAMESPACE}"
# Bump the suffix when the base's contents change; an existing image is reused as is.
BASE_IMAGE = "mcp-trader-test/bookworm-python3:1"
# Built once per machine from BASE_IMAGE (apt-get inside the build: containers reach Debian's
# mirror); pushed under PREFIX as PROXY_IMAGE for every session.
PROXY_BASE_IMAGE = "mcp-trader-test/haproxy:2"
PROXY_IMAGE = f"{PREFIX}/haproxy:2.6-bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_PYTHON = "/usr/bin/python3"
LOCK_FILE = "/tmp/mcp-trader-deploy-test-images.lock"


@dataclass(frozen=True)
class Version:
    """One release of the stack as the tests publish it."""

    tag: str
    revision: str
    gateway_broken: bool = False


V1 = Version("sha-1000001", "1000001" + "0" * 33)
V2 = Version("sha-2000002", "2000002" + "0" * 33)
# The bad release: the provider is fine, the gateway never serves its health endpoint.
BAD = Version("sha-3bad003", "3bad003" + "0" * 33, gateway_broken=True)
V4 = Version("sha-4000004", "4000004" + "0" * 33)
ALL_VERSIONS = (V1, V2, BAD, V4)
MISSING_TAG = "sha-dead404"


def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, failing with its output when it fails."""
    proc = subprocess.run(args, text=True, capture_output=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc  # type: ignore[no-any-return]


def image_exists(ref: str) -> bool:
    return (
        subprocess.run(
            ["docker", "image", "inspect", ref], capture_output=True, check=False
        ).returncode
        == 0
    )


def ensure_base_image() -> str:
    """The bookworm+python3 minbase, debootstrapped once per machine (about a minute)."""
    if image_exists(BASE_IMAGE):
        return BASE_IMAGE
    with tempfile.TemporaryDirectory(prefix="mcp-trader-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=python3",
                "bookworm",
                str(root),
                DEBIAN_MIRROR,
            ]
        )
        # Nothing in the image needs apt's downloaded lists or archives.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        imported = subprocess.run(
            ["docker", "import", "-", BASE_IMAGE],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise RuntimeError(f"docker import of the rootfs failed: {imported.stderr}")
    return BASE_IMAGE


def push_proxy_image(base: str) -> str:
    """The proxy test image, built once per machine, pushed to the registry as PROXY_IMAGE."""
    if not image_exists(PROXY_BASE_IMAGE):
        run(
            [
                "docker", "build", "--quiet",
                "--file", str(HERE / "images" / "proxy.Dockerfile"),
                "--build-arg", f"BASE={base}",
                "--tag", PROXY_BASE_IMAGE,
                str(HERE / "images"),
            ],
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )  # fmt: skip
    run(["docker", "tag", PROXY_BASE_IMAGE, PROXY_IMAGE])
    run(["docker", "push", "--quiet", PROXY_IMAGE])
    run(["docker", "image", "rm", "--no-prune", PROXY_IMAGE])
    return PROXY_IMAGE


def provider_binary(*, auditable: bool = False) -> Path:
    """The crate's `binance-provider` binary (debug profile: `make test-provider` already built
    it, so this is a no-op in CI; the contract is the same as the release build's).

    `auditable`: built with `cargo auditable build`, which embeds the dependency tree (what
    scanners and SBOMs read). Same target directory: only the crate itself recompiles (the
    wrapper applies to workspace crates), the dependencies stay built.
    """
    manifest = REPO / "providers" / "binance-rs" / "Cargo.toml"
    cargo = ["cargo", "auditable", "build"] if auditable else ["cargo", "build"]
    run([*cargo, "--locked", "--manifest-path", str(manifest), "--bin", "binance-provider"])
    binary = REPO / "providers" / "binance-rs" / "target" / "debug" / "binance-provider"
    if not binary.is_file():
        raise RuntimeError(f"{' '.join(cargo)} did not produce {binary}")
    return binary


def gateway_venv(dest: Path) -> Path:
    """A relocatable venv holding mcp-gateway and its locked runtime dependencies."""
    if not Path(HOST_PYTHON).is_file():
        raise RuntimeError(
            f"{HOST_PYTHON} (Debian's python3, the interpreter of the test image) is missing: "
            "apt-get install python3"
        )
    venv = dest / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_LINK_MODE": "copy"}
    env.pop("VIRTUAL_ENV", None)
    run(["uv", "venv", "--relocatable", "--python", HOST_PYTHON, str(venv)], env=env)
    run(
        [
            "uv",
            "sync",
            "--project",
            str(REPO / "mcp-gateway"),
            "--locked",
            "--no-dev",
            "--no-editable",
            # uv keys the wheel it builds of mcp-gateway on pyproject.toml alone: without this a
            # cached wheel of older sources would go into the image (as in gateway.py's build).
            "--reinstall-package",
            "mcp-gateway",
            # As the real image does (gateway.py): a non-root container cannot write .pyc files
            # into the venv, so without this every start compiles every module again.
            "--compile-bytecode",
            "--python",
            HOST_PYTHON,
        ],
        env=env,
    )
    return venv


def image_ref(service: str, tag: str) -> str:
    return f"{PREFIX}/{service}:{tag}"


def build_and_push(versions: tuple[Version, ...] = ALL_VERSIONS) -> None:
    """Build every version of both images, push them, and drop the local copies.

    Holds a machine-wide lock: two test sessions at once (two developers' `pytest` on one
    machine) would otherwise tag, push and remove the same references under each other.
    """
    with open(LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _build_and_push(versions)


def _build_and_push(versions: tuple[Version, ...]) -> None:
    base = ensure_base_image()
    push_proxy_image(base)
    binary = provider_binary()
    with tempfile.TemporaryDirectory(prefix="mcp-trader-images-") as tmp:
        ctx_p = Path(tmp) / "provider"
        ctx_g = Path(tmp) / "gateway"
        ctx_p.mkdir()
        ctx_g.mkdir()
        shutil.copy2(binary, ctx_p / "binance-provider")
        if shutil.which("strip"):
            # Debug info is ~90% of a debug build: dropping it makes every push/pull much cheaper.
            run(["strip", "--strip-debug", str(ctx_p / "binance-provider")])
        gateway_venv(ctx_g)
        for version in versions:
            for service, ctx, dockerfile, extra in (
                ("binance-provider", ctx_p, "provider.Dockerfile", []),
                (
                    "mcp-gateway",
                    ctx_g,
                    "gateway.Dockerfile",
                    ["--build-arg", f"BROKEN={int(version.gateway_broken)}"],
                ),
            ):
                ref = image_ref(service, version.tag)
                run(
                    [
                        "docker",
                        "build",
                        "--quiet",
                        "--file",
                        str(HERE / "images" / dockerfile),
                        "--build-arg",
                        f"BASE={base}",
                        "--build-arg",
                        f"VERSION={version.tag}",
                        "--build-arg",
                        f"REVISION={version.revision}",
                        *extra,
                        "--tag",
                        ref,
                        str(ctx),
                    ],
                    env={**os.environ, "DOCKER_BUILDKIT": "0"},
                )
                run(["docker", "push", "--quiet", ref])
                # Untag only (--force: a container of another session may still use it): the
                # layers stay cached, and the next pull of this tag really asks the registry.
                run(["docker", "image", "rm", "--force", "--no-prune", ref])


if __name__ == "__main__":
    build_and_push()
    print("pushed:", ", ".join(v.tag for v in ALL_VERSIONS), "under", PREFIX, file=sys.stderr)
