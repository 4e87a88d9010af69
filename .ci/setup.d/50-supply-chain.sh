#!/usr/bin/env bash
# Supply-chain tools for the signing, SBOM and verification tests (tests/supply): cosign, syft and
# crane from the Go module proxy, and cargo-auditable from crates.io, each pinned to the version
# of the container image the module runs (ci/src/mcp_trader/cosign.py), so the tests run the
# module's own argv with the same program. Idempotent: a tool already at its pinned version is
# kept; Go's module and build caches make a re-install after a bump incremental.
set -euo pipefail

# Keep in step with the image pins in ci/src/mcp_trader/cosign.py (tests/supply checks it).
readonly COSIGN_VERSION="2.6.5"
readonly SYFT_VERSION="1.50.0"
readonly CRANE_VERSION="0.21.8"
readonly CARGO_AUDITABLE_VERSION="0.7.7"
readonly BIN_DIR="/usr/local/bin"

if ! command -v go >/dev/null 2>&1; then
  if [[ -x /usr/local/go/bin/go ]]; then
    PATH="/usr/local/go/bin:${PATH}"
  else
    echo "50-supply-chain: no Go toolchain (need Go >= 1.24 at /usr/local/go or on PATH)" >&2
    exit 1
  fi
fi

# go_tool NAME VERSION MODULE LDFLAGS VERSION_COMMAND...: install unless NAME reports VERSION.
go_tool() {
  local name=$1 version=$2 module=$3 ldflags=$4
  shift 4
  if command -v "${name}" >/dev/null 2>&1 && "$@" 2>&1 | grep -Fq "${version}"; then
    echo "${name} ${version} already installed"
    return 0
  fi
  local started=${SECONDS}
  # -trimpath: the binary does not depend on where the module cache is; the ldflags give the
  # version commands the release version, as the official images' builds do.
  GOBIN="${BIN_DIR}" go install -trimpath -ldflags "${ldflags}" "${module}@v${version}"
  echo "${name} ${version} installed in $((SECONDS - started)) s"
}

go_tool cosign "${COSIGN_VERSION}" github.com/sigstore/cosign/v2/cmd/cosign \
  "-X sigs.k8s.io/release-utils/version.gitVersion=v${COSIGN_VERSION}" \
  cosign version
go_tool syft "${SYFT_VERSION}" github.com/anchore/syft/cmd/syft \
  "-X main.version=${SYFT_VERSION}" \
  syft version
go_tool crane "${CRANE_VERSION}" github.com/google/go-containerregistry/cmd/crane \
  "-X github.com/google/go-containerregistry/cmd/crane/cmd.Version=v${CRANE_VERSION}" \
  crane version

# cargo-auditable embeds the dependency tree in the provider binary (what syft reads back).
# (`cargo auditable --version` prints cargo's own version: ask cargo which one it installed.)
if cargo install --list | grep -Fxq "cargo-auditable v${CARGO_AUDITABLE_VERSION}:"; then
  echo "cargo-auditable ${CARGO_AUDITABLE_VERSION} already installed"
else
  started=${SECONDS}
  cargo install --locked --quiet --version "${CARGO_AUDITABLE_VERSION}" cargo-auditable
  echo "cargo-auditable ${CARGO_AUDITABLE_VERSION} installed in $((SECONDS - started)) s"
fi

cosign version 2>&1 | grep -E '^GitVersion'
syft version | grep -E '^Version'
crane version
cargo install --list | grep -F cargo-auditable
