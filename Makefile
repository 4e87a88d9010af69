# The whole test suite: `make test` (what .ci/run runs, and what the README shows).
# Each area has its own target so a developer can run just the part they touched.
# Order matters: the provider's tests build the `binance-provider` binary that the gateway's
# end-to-end test and the deploy tests start.
.PHONY: test test-provider test-gateway test-repo

test: test-provider test-gateway test-repo

# Rust provider: format, lints as errors, unit + integration tests against a fake Binance.
test-provider:
	cd providers/binance-rs && cargo fmt --check
	cd providers/binance-rs && cargo clippy --locked --all-targets -- -D warnings
	cd providers/binance-rs && cargo test --locked

# Python MCP gateway: lint, format, types, tests (in-process providers, the real binary, and
# clients nobody here wrote: the MCP conformance suite and the TypeScript SDK, on Node 22 from
# .ci/setup.d/40-node.sh, packages pinned in mcp-gateway/conformance/package-lock.json).
NODE22_BIN ?= /opt/node22/bin

test-gateway:
	cd mcp-gateway && uv sync --locked
	cd mcp-gateway && uv run --locked ruff check .
	cd mcp-gateway && uv run --locked ruff format --check .
	cd mcp-gateway && uv run --locked mypy
	cd mcp-gateway/conformance && PATH="$(NODE22_BIN):$$PATH" npm ci --no-audit --no-fund --loglevel=error
	cd mcp-gateway && MCP_TEST_NODE="$(NODE22_BIN)/node" uv run --locked pytest

# The Dagger module (engine double), workflows, deploy path (real Docker, Compose, registry, sshd).
test-repo:
	uv sync --locked
	uv run --locked ruff check .
	uv run --locked ruff format --check .
	uv run --locked mypy
	uv run --locked pytest
