"""main.py: the main object as the SDK registers it (tests/registration.py: every function, its
arguments and docs, as `dagger functions` would list them), and build-all: both builds at once,
one readable error when a build fails (engine double)."""

import json
import threading
from typing import Any

import dagger
import pytest
from mcp_trader.errors import JobFailedError
from mcp_trader.main import McpTrader
from mcp_trader.platforms import PlatformMismatchError
from mcp_trader.sources import SOURCE_IGNORE

from tests.enginedouble import Call, EngineDouble, called
from tests.mcp_trader.test_provider import fail_cargo
from tests.registration import REPO, Function, typedef_name


def is_runtime(call: Call) -> bool:
    """A sync of one of the two runtime images (they are built from a platform-pinned container)."""
    return call.receiver.steps[0].args.get("platform") is not None


async def test_both_builds_are_issued_before_either_is_awaited(
    engine: EngineDouble, module: McpTrader
) -> None:
    # Each image's evaluation blocks until the other one's has arrived too: a build-all that
    # awaited the provider before asking for the gateway would time out here.
    both = threading.Barrier(2, timeout=10)
    arrived: list[str] = []

    def sync(call: Call) -> str:
        if is_runtime(call):
            arrived.append(call.receiver.arg("from", "address"))
            both.wait()
        return call.receiver.id

    engine.answer("Container.sync", sync)
    await called(module.build_all())
    assert len(arrived) == 2
    assert {a.split(":")[0] for a in arrived} == {"gcr.io/distroless/cc-debian12", "python"}


async def test_summary_names_each_image_with_platform_and_port(
    engine: EngineDouble, module: McpTrader
) -> None:
    summary = await called(module.build_all(dagger.Platform("linux/arm64")))
    lines = summary.splitlines()
    assert len(lines) == 2
    assert lines[0].split() == ["binance-provider", "linux/arm64", "port", "50053"]
    assert lines[1].split() == ["mcp-gateway", "linux/arm64", "port", "3001"]
    # Behaviour changed on purpose (issue 15.4): no image is exported as an OCI tarball just to
    # print its size; the warm path asks the engine for nothing but the two builds.
    assert engine.calls("asTarball") == []
    assert engine.calls("export") == []
    assert [leaf for _, leaf in engine.evaluated].count("sync") == 2


async def test_an_image_that_is_not_for_the_asked_platform_fails_the_build(
    engine: EngineDouble, module: McpTrader
) -> None:
    # What the engine answers when a base image is one platform's manifest, not an index.
    engine.answer("Container.platform", "linux/amd64")
    with pytest.raises(JobFailedError) as info:
        await called(module.build_all(dagger.Platform("linux/arm64")))
    assert list(info.value.failures) == ["build-provider", "build-gateway"]
    assert all(isinstance(e, PlatformMismatchError) for e in info.value.failures.values())
    assert "binance-provider image built for linux/arm64 says it is for linux/amd64" in str(
        info.value
    )
    with pytest.raises(PlatformMismatchError, match="mcp-gateway image built for linux/arm64"):
        await called(module.build_gateway(dagger.Platform("linux/arm64")))


async def test_an_unsupported_platform_is_refused_before_any_query(
    engine: EngineDouble, module: McpTrader
) -> None:
    before = len(engine.queries)
    with pytest.raises(ValueError, match="unsupported platform 'linux/s390x'"):
        await called(module.build_all(dagger.Platform("linux/s390x")))
    assert len(engine.queries) == before


async def test_a_failed_build_is_named_with_its_compiler_output(
    engine: EngineDouble, module: McpTrader
) -> None:
    fail_cargo(
        engine,
        "auditable",
        "install",
        stderr="   Compiling binance-provider v0.1.0\nerror[E0425]: cannot find value `x`",
    )
    with pytest.raises(JobFailedError) as info:
        await called(module.build_all())
    message = str(info.value)
    assert message.startswith('build-provider failed: process "sh -c ')
    assert "cargo auditable install --locked" in message.splitlines()[0]
    assert "error[E0425]: cannot find value `x`" in message
    assert "build-gateway" not in message
    assert not isinstance(info.value, BaseExceptionGroup)
    # The other build was not cancelled: its image was still evaluated.
    assert any(
        obj.arg("from", "address").startswith("python:") and leaf == "sync"
        for obj, leaf in engine.evaluated
        if obj.find("from") is not None
    )


async def test_both_failures_are_reported_together(engine: EngineDouble, module: McpTrader) -> None:
    fail_cargo(engine, "auditable", "install", stderr="rust broke")
    engine.fail(
        "withExec",
        when=lambda s: "--no-editable" in s.args["args"],
        exit_code=2,
        stderr="error: The lockfile at `uv.lock` needs to be updated",
    )
    with pytest.raises(JobFailedError) as info:
        await called(module.build_all())
    assert list(info.value.failures) == ["build-provider", "build-gateway"]
    assert "rust broke" in str(info.value)
    assert "needs to be updated" in str(info.value)
    assert all(isinstance(e, dagger.ExecError) for e in info.value.failures.values())


# --------------------------------------------------------------------------------------------
# Registration

#: The build and test functions, by Python name.
BUILD_AND_TEST = {
    "build_provider",
    "build_gateway",
    "build_all",
    "test",
    "provider_builder",
    "gateway_builder",
}
CHECKS = {
    "provider_format",
    "provider_lint",
    "provider_tests",
    "gateway_lint",
    "gateway_types",
    "gateway_tests",
}
#: Functions with side effects (a push, an SSH session, a deploy) or that read a registry's
#: state must never be answered from the engine's cache (`@function(cache="never")`), whoever
#: adds them. The `server` object's functions are checked in test_deploy.py.
SIDE_EFFECTS = {"publish", "ci", "verify"}


def test_main_object_registers_with_every_build_and_test_function(
    registered: dict[str, Any],
) -> None:
    main = registered["objects"]["McpTrader"]
    assert main["description"]
    names = set(main["functions"])
    assert names >= BUILD_AND_TEST | CHECKS, sorted(BUILD_AND_TEST | CHECKS - names)


def test_every_function_and_argument_is_documented(registered: dict[str, Any]) -> None:
    for obj_name, obj in registered["objects"].items():
        fns: list[Function] = list(obj["functions"].values())
        if obj["constructor"] is not None:
            fns.append(obj["constructor"])
        for fn in fns:
            assert fn.description.strip() or fn.name == "", f"{obj_name}.{fn.name} has no Doc"
            for arg, spec in fn.args.items():
                assert str(spec.get("description") or "").strip(), f"{obj_name}.{fn.name}({arg})"


def test_checks_are_flagged_for_dagger_check(registered: dict[str, Any]) -> None:
    functions = registered["objects"]["McpTrader"]["functions"]
    assert {n for n, f in functions.items() if f.check} == CHECKS


def test_builds_return_containers_and_take_an_optional_platform(
    registered: dict[str, Any],
) -> None:
    functions = registered["objects"]["McpTrader"]["functions"]
    for name in ("build_provider", "build_gateway", "provider_builder", "gateway_builder"):
        fn = functions[name]
        assert fn.return_type == "withObject:Container", (name, fn.return_type)
        platform = fn.args["platform"]
        assert platform["typeDef"].find("withOptional") is not None
        assert typedef_name(platform["typeDef"]) == "withScalar:Platform"
    assert functions["build_all"].return_type == "withKind:STRING_KIND"


def test_side_effect_functions_are_never_cached(registered: dict[str, Any]) -> None:
    functions = registered["objects"]["McpTrader"]["functions"]
    for name in SIDE_EFFECTS:
        assert functions[name].cache_policy == "Never", name
    for name in BUILD_AND_TEST:
        assert functions[name].cache_policy is None, f"{name} is pure: let the engine cache it"


def test_source_defaults_to_the_repo_root_with_the_allowlist(registered: dict[str, Any]) -> None:
    ctor = registered["objects"]["McpTrader"]["constructor"]
    source = ctor.args["source"]
    assert source["defaultPath"] == "/"
    assert source["ignore"] == SOURCE_IGNORE
    assert typedef_name(source["typeDef"]) == "withObject:Directory"


def test_dagger_json_pins_the_engine_the_sdk_was_tested_with() -> None:
    from importlib.metadata import version

    config = json.loads((REPO / "dagger.json").read_text())
    assert config["name"] == "mcp-trader"  # -> package mcp_trader, main object McpTrader
    assert config["sdk"] == {"source": "python"}
    assert config["source"] == "ci"
    assert config["engineVersion"] == f"v{version('dagger-io')}"
    assert (REPO / "ci" / "src" / "mcp_trader" / "__init__.py").exists()


def test_the_module_lock_pins_the_versions_the_tests_run_on() -> None:
    # The runtime rewrites dagger-io's entry (its vendored SDK) and keeps these pins
    # (ci/pyproject.toml says how): they must be the ones tested here, from the root uv.lock.
    import tomllib

    module_lock = tomllib.loads((REPO / "ci" / "uv.lock").read_text())
    root_lock = tomllib.loads((REPO / "uv.lock").read_text())
    tested = {p["name"]: p["version"] for p in root_lock["package"]}
    pinned = {p["name"]: p["version"] for p in module_lock["package"] if p["name"] != "mcp-trader"}
    assert pinned["dagger-io"] == tested["dagger-io"] == "0.21.11"
    assert {name: tested.get(name) for name in pinned} == pinned
