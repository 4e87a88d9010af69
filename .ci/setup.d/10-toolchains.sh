#!/usr/bin/env bash
# Python tooling: uv manages every Python environment in the repo (root tests, gateway, module).
# Rust (cargo, rustfmt, clippy) and Python 3.11 come with the machine image.
set -euo pipefail
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --root-user-action=ignore 'uv==0.13.9'
fi
uv --version
cargo --version
cargo clippy --version
cargo fmt --version
