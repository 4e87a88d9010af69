"""The `binance-provider` image: a Rust build container and a distroless runtime image.

Caching, from the outside in (each layer survives the changes below it):
- the cargo registry and git checkouts live in two cache volumes shared with every Rust job of
  this module (`cargo fetch` only adds to them);
- dependencies are fetched with only `Cargo.toml` + `Cargo.lock` in place, so the fetch step is
  reused until the lock file changes;
- `target/` is a cache volume private to this crate, so a one-line change recompiles this crate
  only; the binary is copied out of that mount in the same exec (`cargo install --path .` builds
  there and copies to /out; a cache mount is not part of the container's filesystem, so reading
  it in a later step would see nothing or someone else's build);
- the inputs are only what the build reads (the crate's manifests, `build.rs`, `src/`, and the
  `.proto` contract), so an edit under `mcp-gateway/` or the docs leaves this build cached.

Other platforms are cross-compiled on the engine's own platform (a cross gcc as linker and C
compiler for `ring`), never emulated; only the runtime image is assembled for the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import dagger
from dagger import dag

from . import platforms
from .reproducible import FILE_EPOCH

#: Official Rust image, pinned to the toolchain `make test` uses (edition 2024, rust-version 1.88).
RUST_IMAGE: Final = "rust:1.95.0-slim-bookworm"
#: cargo-auditable embeds the dependency tree in the binary (a `.dep-v0` section), so the SBOM
#: and scanners see every crate of a stripped binary; the host's is the same (50-supply-chain.sh).
CARGO_AUDITABLE_VERSION: Final = "0.7.7"
#: Distroless glibc base (libgcc, libc, CA certificates, no shell), uid 65532 "nonroot". Pinned by
#: the digest of its multi-platform index (amd64, arm64 and more), so `--platform` picks the
#: matching variant; a single platform's manifest digest would give every platform the same base.
#: The tag moves with Debian security updates; bump the digest deliberately.
RUNTIME_IMAGE: Final = (
    "gcr.io/distroless/cc-debian12:nonroot"
    "@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f"
)

CRATE: Final = "providers/binance-rs"
PROTO: Final = "providers/proto"
#: The package name in Cargo.toml: its fingerprints in target/ are named after it.
PACKAGE: Final = "binance-provider"
#: What `cargo build` reads from the crate (build.rs compiles ../proto).
MANIFESTS: Final = ("Cargo.toml", "Cargo.lock")
BUILD_INPUTS: Final = (*MANIFESTS, "build.rs", "src")
#: The checks also read the integration tests.
CHECK_INPUTS: Final = (*BUILD_INPUTS, "tests")

WORKDIR: Final = f"/src/{CRATE}"
TARGET_DIR: Final = f"{WORKDIR}/target"
CARGO_HOME: Final = "/usr/local/cargo"  # the official image's CARGO_HOME

BINARY: Final = "binance-provider"
BINARY_PATH: Final = f"/usr/local/bin/{BINARY}"
#: distroless's "nonroot" user, set explicitly so the image never depends on the base's default.
USER: Final = "65532:65532"

CACHE_REGISTRY: Final = "mcp-trader-cargo-registry"
CACHE_GIT: Final = "mcp-trader-cargo-git"
#: `target/` volumes are named by job: mcp-trader-provider-target-<job>.
CACHE_TARGET_PREFIX: Final = "mcp-trader-provider-target-"

#: Where `cargo install` puts the binary: outside the target cache mount, in the container's
#: own filesystem, so the file can be read after the exec.
INSTALL_ROOT: Final = "/out"
OUT: Final = f"{INSTALL_ROOT}/bin/{BINARY}"

#: Deletes the crate's own fingerprints from a target directory, then runs the command it is
#: given: argv-safe (the paths and the command arrive as arguments, never in the script), one
#: exec, so no other build can write fingerprints in between. Cargo names each unit's fingerprint
#: directory `<package>-<16 hex digits>`, under target/<profile>/ or target/<triple>/<profile>/.
FRESH_SCRIPT: Final = (
    "target=$1 package=$2; shift 2; "
    'rm -rf -- "$target"/*/.fingerprint/"$package"-???????????????? '
    '"$target"/*/*/.fingerprint/"$package"-????????????????; '
    'exec "$@"'
)


@dataclass(frozen=True)
class RustTarget:
    """How to compile for one platform from another: the triple and Debian's cross toolchain."""

    triple: str
    gcc_package: str
    libc_package: str
    gcc: str

    @property
    def env_suffix(self) -> str:
        """The triple as cargo's and the cc crate's environment variables spell it."""
        return self.triple.replace("-", "_")

    @property
    def arch(self) -> str:
        """The CPU part of the triple (`x86_64`, `aarch64`)."""
        return self.triple.split("-", 1)[0]


TARGETS: Final = {
    "linux/amd64": RustTarget(
        "x86_64-unknown-linux-gnu",
        "gcc-x86-64-linux-gnu",
        "libc6-dev-amd64-cross",
        "x86_64-linux-gnu-gcc",
    ),
    "linux/arm64": RustTarget(
        "aarch64-unknown-linux-gnu",
        "gcc-aarch64-linux-gnu",
        "libc6-dev-arm64-cross",
        "aarch64-linux-gnu-gcc",
    ),
}


def fresh(command: list[str], *, target_dir: str = TARGET_DIR, package: str = PACKAGE) -> list[str]:
    """`command` run after deleting `package`'s own fingerprints from `target_dir`, in one exec:
    cargo then rebuilds the crate (and reruns its build script) whatever the mtimes say, and
    reuses every dependency."""
    return ["sh", "-c", FRESH_SCRIPT, "fresh", target_dir, package, *command]


def build_command(
    target: RustTarget,
    *,
    target_dir: str = TARGET_DIR,
    install_root: str = INSTALL_ROOT,
    package: str = PACKAGE,
) -> list[str]:
    """The release build's one exec: fresh fingerprints, then build (release profile, locked)
    and copy the binary out of `target/`.

    `cargo install --path .` builds in the crate's own `target/` (the cache mount) and then
    copies the binary to `--root`, so the copy happens while the mount is still there.
    """
    return fresh(
        [
            "cargo",
            "auditable",
            "install",
            "--locked",
            "--no-track",
            "--path",
            ".",
            "--root",
            install_root,
            "--target",
            target.triple,
        ],
        target_dir=target_dir,
        package=package,
    )


def target_cache(job: str) -> dagger.CacheVolume:
    """The `target/` volume of one cargo job (`release-x86_64`, `lint`, `tests`)."""
    return dag.cache_volume(CACHE_TARGET_PREFIX + job)


def cargo_caches(ctr: dagger.Container) -> dagger.Container:
    """Mount the shared cargo registry and git caches (every Rust job of the module uses them)."""
    return ctr.with_mounted_cache(
        f"{CARGO_HOME}/registry",
        dag.cache_volume(CACHE_REGISTRY),
        sharing=dagger.CacheSharingMode.SHARED,
    ).with_mounted_cache(
        f"{CARGO_HOME}/git",
        dag.cache_volume(CACHE_GIT),
        sharing=dagger.CacheSharingMode.SHARED,
    )


def with_cross_toolchain(ctr: dagger.Container, target: RustTarget) -> dagger.Container:
    """Add the Rust std for `target` and Debian's cross gcc as its linker and C compiler."""
    upper = target.env_suffix.upper()
    return (
        ctr.with_exec(["apt-get", "update"])
        .with_exec(
            [
                "apt-get",
                "install",
                "-y",
                "--no-install-recommends",
                target.gcc_package,
                target.libc_package,
            ]
        )
        .with_exec(["rustup", "target", "add", target.triple])
        .with_env_variable(f"CARGO_TARGET_{upper}_LINKER", target.gcc)
        .with_env_variable(f"CC_{target.env_suffix}", target.gcc)
    )


def with_sources(
    ctr: dagger.Container,
    source: dagger.Directory,
    inputs: tuple[str, ...],
    target_job: str | None,
) -> dagger.Container:
    """Fetch dependencies from the manifests alone, then add the sources and the .proto, and
    mount the `target/` volume of `target_job` (none for a job that compiles nothing).

    LOCKED: one exec at a time per volume, which is what 0.21 does for PRIVATE too; said
    explicitly, since each job has its own volume and only a second call of the same job waits.
    """
    crate = source.directory(CRATE)
    ctr = (
        ctr.with_workdir(WORKDIR)
        .with_directory(WORKDIR, crate, include=list(MANIFESTS))
        .with_exec(["cargo", "fetch", "--locked"])
        .with_directory(f"/src/{PROTO}", source.directory(PROTO))
        .with_directory(WORKDIR, crate, include=list(inputs))
    )
    if target_job is None:
        return ctr
    return ctr.with_mounted_cache(
        TARGET_DIR, target_cache(target_job), sharing=dagger.CacheSharingMode.LOCKED
    )


async def builder(
    source: dagger.Directory, platform: dagger.Platform | None = None
) -> tuple[dagger.Container, RustTarget]:
    """The build container for `platform` (on the engine's platform) and the target it builds."""
    target_platform = platforms.validate_platform(platform)
    target = TARGETS[str(target_platform)]
    ctr = cargo_caches(dag.container().from_(RUST_IMAGE)).with_exec(
        ["cargo", "install", "--locked", "--version", CARGO_AUDITABLE_VERSION, "cargo-auditable"]
    )
    build_platform = platforms.normalize(str(await dag.default_platform()))
    if build_platform != str(target_platform):
        ctr = with_cross_toolchain(ctr, target)
    return with_sources(ctr, source, BUILD_INPUTS, f"release-{target.arch}"), target


async def binary(source: dagger.Directory, platform: dagger.Platform | None = None) -> dagger.File:
    """The release binary of binance-provider for `platform` (linux/amd64 by default)."""
    build_ctr, target = await builder(source, platform)
    built = build_ctr.with_exec(build_command(target)).file(OUT)
    # The build exec's time is not part of the image: every build of a commit gets one mtime.
    return built.with_timestamps(FILE_EPOCH)


async def runtime(source: dagger.Directory, platform: dagger.Platform) -> dagger.Container:
    """The runtime image's payload for `platform`: distroless, the binary, non-root, its
    entrypoint and healthcheck (services.build adds the port and labels, and checks it)."""
    return (
        dag.container(platform=platform)
        .from_(RUNTIME_IMAGE)
        .with_file(BINARY_PATH, await binary(source, platform), permissions=0o755)
        .with_user(USER)
        .with_entrypoint([BINARY_PATH])
        # The compose healthcheck's command too: exits 0 only when the health service is SERVING.
        .with_docker_healthcheck(
            [BINARY_PATH, "healthcheck"],
            interval="10s",
            timeout="3s",
            start_period="5s",
            retries=3,
        )
    )


async def checker(source: dagger.Directory, job: str | None) -> dagger.Container:
    """The container a provider check runs in: the build container plus rustfmt, clippy and the
    integration tests, on the engine's platform, with the same caches and `job`'s own `target/`
    (None: no `target/` at all, for `cargo fmt`)."""
    ctr = cargo_caches(dag.container().from_(RUST_IMAGE)).with_exec(
        ["rustup", "component", "add", "rustfmt", "clippy"]
    )
    return with_sources(ctr, source, CHECK_INPUTS, job)
