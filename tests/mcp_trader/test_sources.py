"""The `source` allowlist (sources.SOURCE_IGNORE) keeps every path a function reads, and only those.

The engine applies the Ignore patterns when it uploads the repository (dockerignore semantics: a
pattern that matches a directory covers its contents, `!` re-includes, the last match wins). This
test applies the same rules to what every function reads from `source` under the engine double,
so adding a read without extending the allowlist fails here rather than as a "no such file" in
the engine.
"""

import re
from pathlib import Path

import pytest
from mcp_trader import ssh
from mcp_trader.main import McpTrader
from mcp_trader.sources import SOURCE_IGNORE

from tests.enginedouble import EngineDouble, Obj, built, called

REPO = Path(__file__).resolve().parents[2]


def _regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def uploaded(path: str, patterns: list[str] = SOURCE_IGNORE) -> bool:
    """Whether the engine uploads `path` (relative to the repo root) under these patterns."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    keep = True
    for raw in patterns:
        negated = raw.startswith("!")
        rx = _regex(raw[1:] if negated else raw)
        if any(rx.fullmatch(p) for p in prefixes):
            keep = negated
    return keep


def test_the_matcher_follows_dockerignore_rules() -> None:
    patterns = ["*", "!a/b/**", "**/target"]
    assert not uploaded("README.md", patterns)
    assert not uploaded("a/c.txt", patterns)
    assert uploaded("a/b/c/d.txt", patterns)
    assert not uploaded("a/b/target/x", patterns)


@pytest.mark.parametrize(
    "path",
    [
        "README.md",
        "docs/benchmarks.md",
        ".github/workflows/ci.yml",
        "ci/src/mcp_trader/main.py",
        "tests/mcp_trader/test_sources.py",
        ".git/HEAD",
        "providers/binance-rs/target/release/binance-provider",
        "mcp-gateway/.venv/bin/python",
        "mcp-gateway/src/mcp_gateway/__pycache__/server.cpython-312.pyc",
    ],
)
def test_what_no_function_reads_is_not_uploaded(path: str) -> None:
    assert not uploaded(path)


def reads(engine: EngineDouble, source: Obj) -> set[str]:
    """Every repository path (file, or a representative file under a directory) read from
    `source`: its `directory(path)`/`file(path)` calls, narrowed by `include` where copied."""
    paths: set[str] = set()
    subdirs = {}
    for call in engine.calls("file"):
        if call.receiver == source:
            paths.add(call.args["path"])
    for call in engine.calls("directory"):
        if call.receiver == source and call.result is not None:
            subdirs[call.result] = call.args["path"]
    for call in engine.calls("withDirectory"):
        src = call.args["directory"] if "directory" in call.args else call.args.get("source")
        if src not in subdirs:
            continue
        base = subdirs[src]
        for entry in call.args.get("include") or ["*"]:
            if entry == "*":
                paths.add(f"{base}/any/file")
            elif "." in entry.rsplit("/", 1)[-1]:  # a file name
                paths.add(f"{base}/{entry}")
            else:  # a directory: what is uploaded is its contents
                paths.add(f"{base}/{entry}/any/file")
    return paths


async def test_every_path_a_function_reads_is_uploaded(
    engine: EngineDouble, module: McpTrader
) -> None:
    await built(engine, await called(module.build_provider()))
    await built(engine, await called(module.build_gateway()))
    await built(engine, await called(module.provider_builder()))
    await called(module.test())
    source = await built(engine, module.source)
    read = reads(engine, source)
    read |= {src for src, _ in ssh.BUNDLE_FILES}  # deploy copies these (deploy.py)
    assert "providers/binance-rs/src/any/file" in read  # the walk found the real reads
    assert "mcp-gateway/uv.lock" in read
    missing = sorted(p for p in read if not uploaded(p))
    assert not missing, f"read but left out of SOURCE_IGNORE's allowlist: {missing}"


def test_the_real_build_inputs_in_the_tree_are_uploaded() -> None:
    wanted = [
        "providers/proto/provider/v1/provider.proto",
        "providers/binance-rs/Cargo.toml",
        "providers/binance-rs/Cargo.lock",
        "providers/binance-rs/build.rs",
        "providers/binance-rs/src/main.rs",
        "mcp-gateway/pyproject.toml",
        "mcp-gateway/uv.lock",
        "mcp-gateway/README.md",
        "mcp-gateway/src/mcp_gateway/server.py",
    ]
    for path in wanted:
        assert (REPO / path).exists(), f"{path} moved: update the builds and SOURCE_IGNORE"
        assert uploaded(path), path
