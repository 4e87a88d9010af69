"""What the module uploads from the repository: an allowlist for the `source` field's Ignore.

`"*"` first drops everything; each `!` pattern brings back what a function reads. Uploading only
those files keeps the upload small and the cache keys stable: an edit elsewhere (docs, workflows,
the module itself) changes nothing any function sees. tests/mcp_trader/test_sources.py runs every
function against the engine double and fails when one reads a path this list leaves out.
"""

from typing import Final

SOURCE_IGNORE: Final = [
    "*",
    # build-provider, provider checks (provider.py): the crate and the contract build.rs compiles
    "!providers/proto/**",
    "!providers/binance-rs/Cargo.toml",
    "!providers/binance-rs/Cargo.lock",
    "!providers/binance-rs/build.rs",
    "!providers/binance-rs/src/**",
    "!providers/binance-rs/tests/**",
    # build-gateway, gateway checks (gateway.py)
    "!mcp-gateway/pyproject.toml",
    "!mcp-gateway/uv.lock",
    "!mcp-gateway/README.md",
    "!mcp-gateway/src/**",
    "!mcp-gateway/tests/**",
    "!mcp-gateway/scripts/**",
    # deploy, rollback, status (deploy.py, ssh.BUNDLE_FILES)
    "!compose.yml",
    "!deploy/**",
    # Never: build outputs, environments and tool caches inside the allowed trees.
    "**/target",
    "**/.venv",
    "**/__pycache__",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
]
