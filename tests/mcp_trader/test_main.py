"""build-all: both builds at once, one readable error when a build fails (engine double)."""

import threading

import dagger
import pytest
from mcp_trader.errors import JobFailedError
from mcp_trader.main import McpTrader

from tests.enginedouble import Call, EngineDouble, called


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


async def test_summary_names_each_image_with_platform_and_size(
    engine: EngineDouble, module: McpTrader
) -> None:
    engine.answer("Container.platform", "linux/arm64")
    engine.answer(
        "File.size", lambda call: 12_300_000 if "distroless" in str(call.receiver) else 98_700_000
    )
    summary = await called(module.build_all(dagger.Platform("linux/arm64")))
    lines = summary.splitlines()
    assert len(lines) == 2
    assert lines[0].split() == ["binance-provider", "linux/arm64", "12.3", "MB", "(OCI", "tarball)"]
    assert lines[1].split()[:4] == ["mcp-gateway", "linux/arm64", "98.7", "MB"]
    # The size is that of the image as an OCI tarball (what a registry stores), per image.
    tarballs = engine.calls("asTarball")
    assert len(tarballs) == 2


async def test_a_failed_build_is_named_with_its_compiler_output(
    engine: EngineDouble, module: McpTrader
) -> None:
    engine.fail(
        "withExec",
        when=lambda step: step.args["args"][:2] == ["cargo", "install"],
        exit_code=101,
        stderr="   Compiling binance-provider v0.1.0\nerror[E0425]: cannot find value `x`",
    )
    with pytest.raises(JobFailedError) as info:
        await called(module.build_all())
    message = str(info.value)
    assert message.startswith('build-provider failed: process "cargo install --locked')
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
    engine.fail(
        "withExec",
        when=lambda s: s.args["args"][:2] == ["cargo", "install"],
        exit_code=101,
        stderr="rust broke",
    )
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
