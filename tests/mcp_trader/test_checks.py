"""test and the @check functions: every check, concurrently, in containers (engine double)."""

import threading

import dagger
import pytest
from dagger import dag
from mcp_trader import checks, provider
from mcp_trader.errors import JobFailedError
from mcp_trader.main import McpTrader

from tests.enginedouble import Call, EngineDouble, Obj, called
from tests.mcp_trader.test_provider import cargo_command, execs, fail_cargo, source_path

EXPECTED = {
    "provider-format": [["cargo", "fmt", "--check"]],
    # The cargo jobs that compile run with the crate's fingerprints removed (provider.fresh).
    "provider-lint": [
        provider.fresh(["cargo", "clippy", "--locked", "--all-targets", "--", "-D", "warnings"])
    ],
    "provider-tests": [provider.fresh(["cargo", "test", "--locked"])],
    "gateway-lint": [
        ["uv", "run", "--locked", "ruff", "check", "."],
        ["uv", "run", "--locked", "ruff", "format", "--check", "."],
    ],
    "gateway-types": [["uv", "run", "--locked", "mypy"]],
    "gateway-tests": [["uv", "run", "--locked", "pytest", "-m", "not node"]],
}


def synced(engine: EngineDouble) -> list[Obj]:
    return [obj for obj, leaf in engine.evaluated if leaf == "sync"]


async def test_test_runs_every_check_concurrently(engine: EngineDouble, module: McpTrader) -> None:
    everyone = threading.Barrier(len(EXPECTED), timeout=10)

    def sync(call: Call) -> str:
        everyone.wait()  # all six must be in flight at once
        return call.receiver.id

    engine.answer("Container.sync", sync)
    await called(module.test())
    finals = sorted(execs(obj)[-1] for obj in synced(engine))
    assert finals == sorted(commands[-1] for commands in EXPECTED.values())


@pytest.mark.parametrize("name", list(EXPECTED))
async def test_each_check_runs_its_commands_last(
    engine: EngineDouble, module: McpTrader, name: str
) -> None:
    await getattr(module, name.replace("-", "_"))()
    (obj,) = synced(engine)
    commands = execs(obj)
    assert commands[-len(EXPECTED[name]) :] == EXPECTED[name]


async def test_provider_checks_share_the_build_caches_and_add_tests(
    engine: EngineDouble, module: McpTrader
) -> None:
    await called(module.provider_tests())
    (obj,) = synced(engine)
    assert ["rustup", "component", "add", "rustfmt", "clippy"] in execs(obj)
    keys = {s.args["cache"].arg("cacheVolume", "key") for s in obj.find_all("withMountedCache")}
    assert keys == {
        "mcp-trader-cargo-registry",
        "mcp-trader-cargo-git",
        "mcp-trader-provider-target-tests",
    }
    includes = [s.args["include"] for s in obj.find_all("withDirectory") if s.args["include"]]
    assert includes[-1] == ["Cargo.toml", "Cargo.lock", "build.rs", "src", "tests"]


async def test_gateway_checks_see_the_proto_where_the_stub_test_looks(
    engine: EngineDouble, module: McpTrader
) -> None:
    await called(module.gateway_tests())
    (obj,) = synced(engine)
    copies = {s.args["path"]: source_path(s) for s in obj.find_all("withDirectory")}
    assert copies == {"/src/mcp-gateway": "mcp-gateway", "/src/providers/proto": "providers/proto"}
    assert obj.find_all("withWorkdir")[-1].args["path"] == "/src/mcp-gateway"
    (mount,) = obj.find_all("withMountedCache")
    assert mount.args["cache"].arg("cacheVolume", "key") == "mcp-trader-uv"
    assert ["uv", "sync", "--locked", "--no-install-project"] in execs(obj)


async def test_gateway_tests_run_the_end_to_end_test_against_the_built_provider(
    engine: EngineDouble, module: McpTrader
) -> None:
    await called(module.gateway_tests())
    (obj,) = synced(engine)
    (copy,) = [s for s in obj.find_all("withFile") if s.args["path"] == provider.BINARY_PATH]
    # The file is the release binary copied out of the provider's build, in its install exec.
    producer = copy.args["source"]
    assert producer.arg("file", "path") == "/out/bin/binance-provider"
    assert any(cargo_command(a)[:3] == ["cargo", "auditable", "install"] for a in execs(producer))
    env = {s.args["name"]: s.args["value"] for s in obj.find_all("withEnvVariable")}
    assert env["BINANCE_PROVIDER_BIN"] == provider.BINARY_PATH


async def test_failed_checks_are_named_with_the_tools_output(
    engine: EngineDouble, module: McpTrader
) -> None:
    fail_cargo(
        engine, "clippy", stderr="error: unused variable: `spread`\n  --> src/analytics.rs:42:9"
    )
    engine.fail(
        "withExec",
        when=lambda s: s.args["args"][-1] == "mypy",
        exit_code=1,
        stdout="src/mcp_gateway/server.py:10: error: Missing return statement",
    )
    with pytest.raises(JobFailedError) as info:
        await called(module.test())
    assert list(info.value.failures) == ["provider-lint", "gateway-types"]
    text = str(info.value)
    assert "unused variable: `spread`" in text
    assert "Missing return statement" in text  # stdout when the tool writes there


async def test_unknown_check_name_is_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown check 'lint'.*provider-format"):
        await checks.run(dag.directory(), "lint")


async def test_no_two_checks_wait_for_one_serialized_cache_volume(
    engine: EngineDouble, module: McpTrader
) -> None:
    # Dagger 0.21 runs the execs that mount one PRIVATE or LOCKED volume one at a time: clippy,
    # the tests and the release build (for the gateway's end-to-end test) each have their own.
    await called(module.test())
    assert engine.serialized_conflicts() == []
    assert engine.serialized_volumes() == {
        "mcp-trader-provider-target-lint",
        "mcp-trader-provider-target-tests",
        "mcp-trader-provider-target-release-x86_64",
    }


async def test_cargo_fmt_mounts_no_target_volume(engine: EngineDouble, module: McpTrader) -> None:
    await called(module.provider_format())
    (obj,) = synced(engine)
    keys = {s.args["cache"].arg("cacheVolume", "key") for s in obj.find_all("withMountedCache")}
    assert keys == {"mcp-trader-cargo-registry", "mcp-trader-cargo-git"}


async def test_every_uv_step_trusts_the_system_ca_store_and_every_cargo_build_is_fresh(
    engine: EngineDouble, module: McpTrader
) -> None:
    await called(module.test())
    await called(module.build_all(dagger.Platform("linux/arm64")))
    uv_steps = cargo_steps = 0
    for call in engine.calls("withExec"):
        argv = list(call.args["args"])
        env = {s.args["name"]: s.args["value"] for s in call.receiver.find_all("withEnvVariable")}
        if argv[0] == "uv":
            uv_steps += 1
            # The engine puts its custom CAs (a proxy's) in the system store; uv's own roots
            # would refuse them.
            assert env.get("UV_SYSTEM_CERTS") == "true", argv
        command = cargo_command(argv)
        # (`cargo install ... cargo-auditable` installs a tool, outside any target/ volume.)
        builds = command[:3] == ["cargo", "auditable", "install"]
        if builds or command[:2] in (["cargo", "clippy"], ["cargo", "test"]):
            cargo_steps += 1
            # The crate's fingerprints go in the same exec, from the target/ actually mounted.
            target = [
                s.args["path"]
                for s in call.receiver.find_all("withMountedCache")
                if str(s.args["cache"].arg("cacheVolume", "key")).startswith(
                    provider.CACHE_TARGET_PREFIX
                )
            ]
            assert argv[:6] == provider.fresh([])[:6], argv
            assert target and argv[4] == target[-1]
    assert uv_steps >= 5 and cargo_steps == 4  # clippy, test, the two release builds
