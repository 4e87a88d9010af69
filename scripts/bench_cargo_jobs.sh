#!/usr/bin/env bash
# Host-side proxy for the `test` function's Rust jobs (docs/benchmarks.md, "Rust jobs: one after
# another or at once"): clippy, cargo test and the release build, each in its own target
# directory (as each has its own cache volume in the engine), run one after another (what a
# shared serialized volume gives in Dagger 0.21) and then all three at once.
#
# Usage: scripts/bench_cargo_jobs.sh [cold|one-line]...   (default: cold one-line)
#   cold      every target directory empty (the registry already downloaded)
#   one-line  after a one-line change in src/ (dependencies compiled)
# Prints one "scenario mode job seconds" line per job and a wall time per run.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${BENCH_DIR:-/tmp/mcp-trader-bench-cargo-jobs}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
jobs=(clippy test release)

rm -rf "${work}"
mkdir -p "${work}"
cp -r "${repo}/providers/binance-rs" "${work}/crate"
cp -r "${repo}/providers/proto" "${work}/proto"
cd "${work}/crate"
rm -rf target

run_job() {
  local job="$1" target="${work}/target-$1"
  case "${job}" in
    clippy) CARGO_TARGET_DIR="${target}" cargo clippy --locked --all-targets -- -D warnings ;;
    test) CARGO_TARGET_DIR="${target}" cargo test --locked ;;
    release)
      rm -rf "${work}/out"
      CARGO_TARGET_DIR="${target}" cargo install --locked --no-track --path . \
        --root "${work}/out" --target "${triple}"
      ;;
  esac
}

timed_job() {
  local scenario="$1" mode="$2" job="$3" start end
  start="$(date +%s.%N)"
  run_job "${job}" >"${work}/${scenario}-${mode}-${job}.log" 2>&1
  end="$(date +%s.%N)"
  printf '%s %s %s %.1f\n' "${scenario}" "${mode}" "${job}" "$(echo "${end} - ${start}" | bc)"
}

prepare() {
  local scenario="$1" job
  if [[ "${scenario}" == cold ]]; then
    for job in "${jobs[@]}"; do rm -rf "${work}/target-${job}"; done
  else
    # Every job compiled once, then one line changed: what a warm engine sees after an edit.
    for job in "${jobs[@]}"; do run_job "${job}" >/dev/null 2>&1; done
    echo "// bench: one-line change $(date +%s%N)" >>src/main.rs
  fi
}

run_scenario() {
  local scenario="$1" mode start end job load
  for mode in serialized concurrent; do
    cp "${repo}/providers/binance-rs/src/main.rs" src/main.rs
    prepare "${scenario}"
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    start="$(date +%s.%N)"
    if [[ "${mode}" == serialized ]]; then
      for job in "${jobs[@]}"; do timed_job "${scenario}" "${mode}" "${job}"; done
    else
      for job in "${jobs[@]}"; do timed_job "${scenario}" "${mode}" "${job}" & done
      wait
    fi
    end="$(date +%s.%N)"
    printf '%s %s wall %.1f (load average before: %s)\n' "${scenario}" "${mode}" \
      "$(echo "${end} - ${start}" | bc)" "${load}"
  done
}

for scenario in "${@:-cold one-line}"; do
  for s in ${scenario}; do run_scenario "${s}"; done
done
