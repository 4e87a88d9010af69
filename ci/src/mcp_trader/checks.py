"""The test suite in containers: Rust format, lints and tests; Python lint, types and tests.

Each check is one command in its toolchain's check container (same caches as the builds) and
fails with the tool's own output. `run_all` starts every check before awaiting any, so the Rust
and Python suites run in the engine at the same time, and reports every failure together.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import dagger
from dagger import dag

from . import gateway, provider
from .errors import run_all


@dataclass(frozen=True)
class Check:
    """A named command run in a check container."""

    name: str
    description: str
    container: Callable[[dagger.Directory], Awaitable[dagger.Container]]
    commands: tuple[tuple[str, ...], ...]


async def gateway_tests_container(source: dagger.Directory) -> dagger.Container:
    """The gateway's check container plus the provider's release binary for the engine's own
    platform: the end-to-end test runs the real provider, and this image has no Rust toolchain."""
    provider_bin = await provider.binary(source, await dag.default_platform())
    return (
        (await gateway.checker(source))
        .with_file(provider.BINARY_PATH, provider_bin, permissions=0o755)
        .with_env_variable("BINANCE_PROVIDER_BIN", provider.BINARY_PATH)
    )


def _provider_checker(
    job: str | None,
) -> Callable[[dagger.Directory], Awaitable[dagger.Container]]:
    return functools.partial(provider.checker, job=job)


CHECKS: Final = (
    # cargo fmt reads only the sources: no target/ volume.
    Check(
        "provider-format",
        "cargo fmt --check",
        _provider_checker(None),
        (("cargo", "fmt", "--check"),),
    ),
    # Each cargo job has its own target/ volume, so clippy, the tests and the release build run
    # at the same time; `fresh` keeps the crate's freshness independent of mtimes (provider.py).
    Check(
        "provider-lint",
        "cargo clippy, warnings as errors",
        _provider_checker("lint"),
        (
            tuple(
                provider.fresh(
                    ["cargo", "clippy", "--locked", "--all-targets", "--", "-D", "warnings"]
                )
            ),
        ),
    ),
    Check(
        "provider-tests",
        "cargo test --locked",
        _provider_checker("tests"),
        (tuple(provider.fresh(["cargo", "test", "--locked"])),),
    ),
    Check(
        "gateway-lint",
        "ruff check and ruff format --check",
        gateway.checker,
        (
            ("uv", "run", "--locked", "ruff", "check", "."),
            ("uv", "run", "--locked", "ruff", "format", "--check", "."),
        ),
    ),
    Check(
        "gateway-types",
        "mypy (strict, per mcp-gateway/pyproject.toml)",
        gateway.checker,
        (("uv", "run", "--locked", "mypy"),),
    ),
    Check(
        "gateway-tests",
        "pytest, the end-to-end test against the real provider binary included",
        gateway_tests_container,
        # The Node 22 clients (conformance suite, TypeScript SDK) run in `make test-gateway`.
        (("uv", "run", "--locked", "pytest", "-m", "not node"),),
    ),
)
BY_NAME: Final = {c.name: c for c in CHECKS}


async def run(source: dagger.Directory, name: str) -> None:
    """Run one check by name; raises (dagger.ExecError, with the tool's output) when it fails."""
    try:
        check = BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown check {name!r}: expected one of {', '.join(BY_NAME)}") from None
    ctr = await check.container(source)
    for command in check.commands:
        ctr = ctr.with_exec(list(command))
    await ctr.sync()


async def run_every(source: dagger.Directory) -> None:
    """Run every check concurrently; one error naming each failed check if any fails."""
    await run_all({c.name: functools.partial(run, source, c.name) for c in CHECKS})
