"""Benchmark a deploy on the local stack: time to healthy, and the outage a client sees.

    uv run python scripts/bench_deploy.py [--rounds 4] [--config baseline --config tuned ...]

Needs what the deploy tests need (.ci/setup.d/30-docker.sh: Docker, Compose v2, the registry on
127.0.0.1:5000, debootstrap); it builds and pushes the same test images (real provider binary,
real gateway package). For each configuration it deploys one version, then alternates between
two versions `--rounds` times, running deploy/mcp-trader-deploy.sh on this machine while a
client polls the gateway's published /health every 50 ms. Per deploy it records:

- healthy_s: from the script's start to its exit 0 (Compose reports every service healthy);
- outage_s:  from the last 200 before the first failed poll to the first 200 after it (the
             longest such window if there are several), i.e. what a client polling at 50 ms saw;
- failed polls.

Configurations (environment of the server script and the stack's .env):
- baseline: one `docker compose up -d --wait` for the whole stack (DEPLOY_ORDER=together) and a
            Docker-typical 10 s healthcheck interval;
- interval: the same single `up`, with the stack's shipped 2 s interval;
- tuned:    what ships: every service rolled out with no gap behind the proxy (deploy/rollout.sh:
            the new container next to the old one, the old one drained once the new one is
            healthy and in the proxy's rotation; DEPLOY_ORDER=rolling), 2 s interval, images
            pulled before anything changes.
Prints a Markdown table (the one in docs/deploy.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "ci" / "src"))  # mcp_trader.ssh: the bundle's file list

from mcp_trader import ssh  # noqa: E402

from tests.deploy import images  # noqa: E402  (the repo root must be importable first)

POLL_INTERVAL = 0.05
CONFIGS: dict[str, dict[str, str]] = {
    "baseline": {"DEPLOY_ORDER": "together", "HEALTHCHECK_INTERVAL": "10s"},
    "interval": {"DEPLOY_ORDER": "together", "HEALTHCHECK_INTERVAL": "2s"},
    "tuned": {"DEPLOY_ORDER": "rolling", "HEALTHCHECK_INTERVAL": "2s"},
}


@dataclass
class Sample:
    healthy_s: float
    outage_s: float
    failed_polls: int
    polls: int


class Poller:
    """GET /health every 50 ms in a thread; remembers (time, ok) for each poll."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.results: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=0.5) as r:  # noqa: S310 - loopback
                    ok = r.status == 200
            except OSError:
                ok = False
            self.results.append((started, ok))
            next_tick += POLL_INTERVAL
            time.sleep(max(0.0, next_tick - time.monotonic()))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def outage(self) -> tuple[float, int]:
        """Longest window last-ok -> next-ok that contains failures, and the failed-poll count."""
        longest = 0.0
        last_ok: float | None = None
        in_outage = False
        for t, ok in self.results:
            if ok:
                if in_outage and last_ok is not None:
                    longest = max(longest, t - last_ok)
                last_ok, in_outage = t, False
            else:
                in_outage = True
        if in_outage and last_ok is not None:
            longest = max(longest, self.results[-1][0] - last_ok)
        return longest, sum(1 for _, ok in self.results if not ok)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_script(d: Path, env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(d / "deploy" / "mcp-trader-deploy.sh"), "--dir", str(d), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"deploy {args} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def bench(name: str, rounds: int) -> list[Sample]:
    knobs = CONFIGS[name]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"mcp-trader-bench-{name}-") as tmp:
        d = Path(tmp)
        for src, dest in ssh.BUNDLE_FILES:
            (d / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / src, d / dest)
        env_lines = [
            f"IMAGE_PREFIX={images.PREFIX}",
            # The official HAProxy image cannot be pulled here: the tests' build of the same LTS.
            f"PROXY_IMAGE={images.PROXY_IMAGE}",
            f"COMPOSE_PROJECT_NAME=mcp-trader-bench-{name}",
            f"GATEWAY_PUBLISH=127.0.0.1:{port}",
            f"HEALTHCHECK_INTERVAL={knobs['HEALTHCHECK_INTERVAL']}",
        ]
        (d / ".env").write_text("\n".join(env_lines) + "\n")
        env = {**os.environ, "DEPLOY_ORDER": knobs["DEPLOY_ORDER"]}
        try:
            run_script(d, env, "deploy", "--tag", images.V1.tag)
            samples = []
            for i in range(rounds):
                tag = images.V2.tag if i % 2 == 0 else images.V1.tag
                with Poller(f"http://127.0.0.1:{port}/health") as poller:
                    time.sleep(0.5)  # a few good polls first: the outage starts from a 200
                    healthy = run_script(d, env, "deploy", "--tag", tag)
                    time.sleep(0.5)
                outage, failed = poller.outage()
                samples.append(Sample(healthy, outage, failed, len(poller.results)))
                print(
                    f"{name} round {i + 1}: healthy after {healthy:.2f}s, outage {outage:.2f}s "
                    f"({failed}/{len(poller.results)} polls failed)",
                    file=sys.stderr,
                )
            return samples
        finally:
            subprocess.run(
                ["docker", "compose", "down", "--timeout", "1"],
                cwd=d,
                capture_output=True,
                check=False,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4, help="deploys per configuration")
    parser.add_argument(
        "--config", action="append", choices=sorted(CONFIGS), help="default: all, in order"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    images.build_and_push((images.V1, images.V2))
    print(
        "| configuration | deploy start -> healthy (median, max) | outage at /health "
        "(median, max) | failed 50 ms polls (median) |"
    )
    print("|---|---|---|---|")
    for name in args.config or list(CONFIGS):
        s = bench(name, args.rounds)
        h = [x.healthy_s for x in s]
        o = [x.outage_s for x in s]
        f = [x.failed_polls for x in s]
        print(
            f"| {name} | {statistics.median(h):.2f} s, {max(h):.2f} s "
            f"| {statistics.median(o):.2f} s, {max(o):.2f} s | {statistics.median(f):.0f} |"
        )


if __name__ == "__main__":
    main()
