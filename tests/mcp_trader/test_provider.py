"""build-provider and provider-builder: what they ask the engine for (engine double)."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import dagger
import pytest
from mcp_trader import provider, services
from mcp_trader.main import McpTrader
from mcp_trader.reproducible import FILE_EPOCH

from tests.enginedouble import EngineDouble, Obj, Step, built, called


def index(obj: Obj, predicate: str | None = None, **args: object) -> int:
    """Position of the first step named `predicate` whose args include `args` (fails if none)."""
    for i, step in enumerate(obj.steps):
        if step.field == predicate and all(step.args.get(k) == v for k, v in args.items()):
            return i
    raise AssertionError(f"no {predicate}({args}) in {obj}")


def execs(obj: Obj) -> list[list[str]]:
    return [list(s.args["args"]) for s in obj.find_all("withExec")]


def fail_cargo(engine: EngineDouble, *words: str, stderr: str) -> None:
    """Make the `cargo <words...>` exec fail as cargo does (exit 101, its stderr)."""
    prefix = ["cargo", *words]
    engine.fail(
        "withExec",
        when=lambda step: cargo_command(step.args["args"])[: len(prefix)] == prefix,
        exit_code=101,
        stderr=stderr,
    )


def cargo_command(argv: list[str]) -> list[str]:
    """The command an exec runs, with provider.fresh's wrapper (fingerprint removal) taken off."""
    argv = list(argv)
    if argv[:3] == ["sh", "-c", provider.FRESH_SCRIPT]:
        return argv[6:]
    return argv


def source_path(step: Step) -> str:
    """The repository path a `withDirectory(source: <source>.directory(path))` step copies."""
    src = step.args["source"]
    assert isinstance(src, Obj)
    return str(src.arg("directory", "path"))


async def runtime_and_builder(
    engine: EngineDouble, module: McpTrader, platform: str | None = None
) -> tuple[Obj, Obj]:
    ctr = await called(module.build_provider(dagger.Platform(platform) if platform else None))
    runtime = await built(engine, ctr)
    stamped = runtime.arg("withFile", "source")
    assert isinstance(stamped, Obj) and stamped.type == "File"
    # The binary as built, with the one mtime every build of a commit gets (reproducible.py).
    assert stamped.steps[-1].field == "withTimestamps"
    assert stamped.steps[-1].args["timestamp"] == FILE_EPOCH
    binary = Obj("File", stamped.steps[:-1], stamped.id)
    assert binary.steps[-1].args["path"] == provider.OUT
    return runtime, binary


async def test_runtime_image_is_pinned_distroless_non_root_with_healthcheck(
    engine: EngineDouble, module: McpTrader
) -> None:
    runtime, _ = await runtime_and_builder(engine, module)
    assert runtime.steps[0].args["platform"] == "linux/amd64"
    address = runtime.arg("from", "address")
    assert address.startswith("gcr.io/distroless/cc-debian12:nonroot@sha256:")
    assert re.fullmatch(r".*@sha256:[0-9a-f]{64}", address)
    assert runtime.arg("withFile", "path") == "/usr/local/bin/binance-provider"
    assert runtime.arg("withFile", "permissions") == 0o755
    assert runtime.arg("withUser", "name") == "65532:65532"
    assert runtime.arg("withExposedPort", "port") == 50053
    assert runtime.arg("withEntrypoint", "args") == ["/usr/local/bin/binance-provider"]
    health = runtime.find("withDockerHealthcheck")
    assert health is not None
    assert health.args["args"] == ["/usr/local/bin/binance-provider", "healthcheck"]
    assert not health.args.get("shell")  # exec form: distroless has no shell
    labels = {s.args["name"]: s.args["value"] for s in runtime.find_all("withLabel")}
    assert labels == {
        "org.opencontainers.image.title": "binance-provider",
        "org.opencontainers.image.description": services.PROVIDER.description,
        "org.opencontainers.image.licenses": "MIT",
    }
    # The runtime image runs nothing at build time (no shell, no emulation for other platforms).
    assert runtime.find("withExec") is None


async def test_builder_uses_pinned_rust_the_shared_cargo_caches_and_its_own_target(
    engine: EngineDouble, module: McpTrader
) -> None:
    _, binary = await runtime_and_builder(engine, module)
    assert binary.steps[0].args.get("platform") is None, (
        "the builder runs on the engine's own platform"
    )
    assert re.fullmatch(r"rust:\d+\.\d+\.\d+-slim-bookworm", binary.arg("from", "address"))
    mounts = {
        s.args["path"]: (s.args["cache"].arg("cacheVolume", "key"), s.args.get("sharing"))
        for s in binary.find_all("withMountedCache")
    }
    assert mounts == {
        "/usr/local/cargo/registry": ("mcp-trader-cargo-registry", "SHARED"),
        "/usr/local/cargo/git": ("mcp-trader-cargo-git", "SHARED"),
        # Its own volume per job and triple, LOCKED (what 0.21 does for PRIVATE anyway): the
        # release build of another platform or a check never waits for this one.
        "/src/providers/binance-rs/target": (
            "mcp-trader-provider-target-release-x86_64",
            "LOCKED",
        ),
    }


async def test_dependencies_are_fetched_from_manifests_before_sources_arrive(
    engine: EngineDouble, module: McpTrader
) -> None:
    _, binary = await runtime_and_builder(engine, module)
    copies = binary.find_all("withDirectory")
    assert [(source_path(s), s.args["path"], s.args.get("include")) for s in copies] == [
        ("providers/binance-rs", "/src/providers/binance-rs", ["Cargo.toml", "Cargo.lock"]),
        ("providers/proto", "/src/providers/proto", []),
        (
            "providers/binance-rs",
            "/src/providers/binance-rs",
            ["Cargo.toml", "Cargo.lock", "build.rs", "src"],
        ),
    ]
    manifests = index(binary, "withDirectory", include=["Cargo.toml", "Cargo.lock"])
    fetch = index(binary, "withExec", args=["cargo", "fetch", "--locked"])
    sources = index(binary, "withDirectory", include=list(provider.BUILD_INPUTS))
    build = index(
        binary,
        "withExec",
        args=provider.build_command(provider.TARGETS["linux/amd64"]),
    )
    target = index(binary, "withMountedCache", path=provider.TARGET_DIR)
    assert manifests < fetch < sources < build
    assert target < build, "target/ must be mounted when cargo builds"


async def test_binary_leaves_the_target_mount_in_the_build_exec(
    engine: EngineDouble, module: McpTrader
) -> None:
    _, binary = await runtime_and_builder(engine, module)
    last_exec = binary.find_all("withExec")[-1]
    # One exec: `cargo install --path .` builds in the crate's target/ (the cache mount, still
    # mounted) and copies the binary to --root, in the container's filesystem; before it, in the
    # same exec, a fixed script deletes the crate's own fingerprints (arguments, not a string).
    argv = last_exec.args["args"]
    assert argv[:6] == [
        "sh",
        "-c",
        provider.FRESH_SCRIPT,
        "fresh",
        "/src/providers/binance-rs/target",
        "binance-provider",
    ]
    assert cargo_command(argv) == [
        "cargo",
        "auditable",
        "install",
        "--locked",
        "--no-track",
        "--path",
        ".",
        "--root",
        "/out",
        "--target",
        "x86_64-unknown-linux-gnu",
    ]
    assert binary.steps[-1].args["path"] == "/out/bin/binance-provider"
    assert binary.arg("withWorkdir", "path") == "/src/providers/binance-rs"
    # The file is read from /out (the container's filesystem), never from the cache mount.
    assert not binary.steps[-1].args["path"].startswith(provider.TARGET_DIR)


async def test_native_build_needs_no_cross_toolchain(
    engine: EngineDouble, module: McpTrader
) -> None:
    _, binary = await runtime_and_builder(engine, module)
    assert all(argv[0] not in ("apt-get", "rustup") for argv in execs(binary))
    assert not [s for s in binary.find_all("withEnvVariable") if "LINKER" in s.args["name"]]


async def test_arm64_is_cross_compiled_on_the_engine_platform(
    engine: EngineDouble, module: McpTrader
) -> None:
    runtime, binary = await runtime_and_builder(engine, module, "linux/arm64")
    assert runtime.steps[0].args["platform"] == "linux/arm64"
    assert binary.steps[0].args.get("platform") is None, (
        "no emulation: the builder stays on the engine platform"
    )
    commands = execs(binary)
    assert [
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
        "gcc-aarch64-linux-gnu",
        "libc6-dev-arm64-cross",
    ] in commands
    assert ["rustup", "target", "add", "aarch64-unknown-linux-gnu"] in commands
    env = {s.args["name"]: s.args["value"] for s in binary.find_all("withEnvVariable")}
    assert env["CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"] == "aarch64-linux-gnu-gcc"
    assert env["CC_aarch64_unknown_linux_gnu"] == "aarch64-linux-gnu-gcc"
    assert commands[-1][-1] == "aarch64-unknown-linux-gnu"


async def test_arm64_engine_builds_arm64_natively_and_amd64_cross(
    engine: EngineDouble, module: McpTrader
) -> None:
    engine.answer("defaultPlatform", "linux/arm64/v8")
    _, native = await runtime_and_builder(engine, module, "linux/arm64")
    assert all(argv[0] != "apt-get" for argv in execs(native))
    _, cross = await runtime_and_builder(engine, module, "linux/amd64")
    assert ["rustup", "target", "add", "x86_64-unknown-linux-gnu"] in execs(cross)


async def test_unsupported_platform_is_refused_before_any_query(
    engine: EngineDouble, module: McpTrader
) -> None:
    before = len(engine.queries)
    with pytest.raises(ValueError, match=r"'windows/amd64'.*linux/amd64, linux/arm64"):
        await called(module.build_provider(dagger.Platform("windows/amd64")))
    assert len(engine.queries) == before


async def test_reads_only_the_crate_and_the_proto(engine: EngineDouble, module: McpTrader) -> None:
    await built(engine, await called(module.build_provider()))
    source = await built(engine, module.source)
    read = {c.args["path"] for c in engine.calls("directory") if c.receiver == source}
    read |= {c.args["path"] for c in engine.calls("file") if c.receiver == source}
    assert read == {"providers/binance-rs", "providers/proto"}


async def test_provider_builder_is_the_build_container_before_the_build(
    engine: EngineDouble, module: McpTrader
) -> None:
    builder = await built(engine, await called(module.provider_builder()))
    assert builder.type == "Container"
    assert builder.steps[-1].field == "withMountedCache"
    assert ["cargo", "fetch", "--locked"] in execs(builder)
    assert all(
        cargo_command(argv)[:3] != ["cargo", "auditable", "install"] for argv in execs(builder)
    )


async def test_build_failure_surfaces_as_exec_error_with_compiler_output(
    engine: EngineDouble, module: McpTrader
) -> None:
    fail_cargo(
        engine,
        "auditable",
        "install",
        stderr="error[E0308]: mismatched types\n --> src/server.rs:10:5",
    )
    ctr = await called(module.build_provider())
    await ctr.id()  # lazy: nothing runs yet
    with pytest.raises(dagger.ExecError) as info:
        await ctr.sync()
    assert "E0308" in info.value.stderr


# --------------------------------------------------------------------------------------------
# Freshness, with real cargo on the host: the build exec's own command on a throwaway crate

DEMO_BUILD_RS = """
fn main() {
    println!("cargo:rerun-if-changed=message.txt");
    let message = std::fs::read_to_string("message.txt").unwrap();
    let out = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("message.rs");
    std::fs::write(out, format!("const MESSAGE: &str = {:?};", message.trim())).unwrap();
}
"""
DEMO_MAIN_RS = """
include!(concat!(env!("OUT_DIR"), "/message.rs"));
const SOURCE: &str = "{source}";
fn main() {{
    println!("{{MESSAGE}} {{SOURCE}}");
}}
"""


def write_demo(crate: Path, version: str, mtime: float | None = None) -> None:
    """The throwaway crate at `version`: a build script input and a source file that say it."""
    (crate / "src").mkdir(parents=True, exist_ok=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "fresh-demo"\nversion = "0.1.0"\nedition = "2021"\n'
    )
    (crate / "build.rs").write_text(DEMO_BUILD_RS)
    (crate / "message.txt").write_text(f"message-{version}\n")
    (crate / "src" / "main.rs").write_text(DEMO_MAIN_RS.format(source=f"source-{version}"))
    if mtime is not None:
        # The whole snapshot carries old mtimes, as an upload reused by the engine can.
        for name in ("Cargo.toml", "build.rs", "message.txt", "src/main.rs"):
            os.utime(crate / name, (mtime, mtime))


def cargo_run(argv: list[str], crate: Path) -> None:
    env = {**os.environ, "CARGO_NET_OFFLINE": "true", "CARGO_TERM_COLOR": "never"}
    env.pop("CARGO_TARGET_DIR", None)
    proc = subprocess.run(argv, cwd=crate, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stderr}"


def run_binary(root: Path) -> str:
    out = subprocess.run([str(root / "bin" / "fresh-demo")], capture_output=True, text=True)
    return out.stdout.strip()


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo on PATH")
def test_the_build_exec_rebuilds_the_crate_whatever_its_sources_mtimes(tmp_path: Path) -> None:
    """A reused source snapshot can be older than the fingerprints in the target/ volume: plain
    cargo then ships the previous binary; the module's build command (provider.build_command,
    the exact argv of the build exec, only the paths differ) does not."""
    crate = tmp_path / "crate"
    write_demo(crate, "one")
    cargo_run(["cargo", "generate-lockfile", "--offline"], crate)
    host = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    triple = re.search(r"^host: (\S+)$", host, re.MULTILINE)
    assert triple is not None
    target = provider.RustTarget(triple[1], "", "", "")
    target_dir = crate / "target"

    def build(root: Path, *, fresh: bool) -> str:
        argv = provider.build_command(
            target, target_dir=str(target_dir), install_root=str(root), package="fresh-demo"
        )
        cargo_run(argv if fresh else cargo_command(argv), crate)
        return run_binary(root)

    assert build(tmp_path / "out1", fresh=True) == "message-one source-one"
    # Other packages' fingerprints (the dependencies') must survive the fresh build.
    keep = [
        target_dir / triple[1] / "release" / ".fingerprint" / "serde-0123456789abcdef",
        target_dir / triple[1] / "release" / ".fingerprint" / "fresh-demo-extra-0123456789abcdef",
    ]
    for path in keep:
        path.mkdir()
    # New contents, with mtimes from long before the fingerprints cargo just wrote.
    write_demo(crate, "two", mtime=time.time() - 365 * 86400)
    assert build(tmp_path / "out2", fresh=False) == "message-one source-one"  # stale: the bug
    assert build(tmp_path / "out3", fresh=True) == "message-two source-two"
    assert all(path.is_dir() for path in keep)
