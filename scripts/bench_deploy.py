"""Benchmark a deploy on the local stack under load: ours vs a plain `docker compose up -d`.

    uv run python scripts/bench_deploy.py [--rounds 2]

Needs what the deploy tests need (.ci/setup.d/30-docker.sh: Docker, Compose v2, the registry on
127.0.0.1:5000, debootstrap) and the gateway's project (`uv sync` in mcp-gateway/); it builds
and pushes the same test images (real provider binary, real gateway package).

One stack, one load for the whole run (mcp-gateway/scripts/deploy_load.py, the load of
tests/deploy/test_zero_downtime.py: 4 MCP SDK clients holding one session each, calling a fast
tool every 0.4 s and a 1.5 s tool back to back, plus GET /health and GET /ready every 0.1 s, all
through the proxy's published port, against the fake Binance). The deploy script runs on this
machine, alternating between the two methods `--rounds` times, each deploy switching between
two versions (provider and gateway both change):

- ours:  deploy/mcp-trader-deploy.sh deploy --tag T (what ships): each service rolled out with
         no gap behind the proxy (deploy/rollout.sh); time to healthy = its run time (exit 0);
- plain: `docker compose up -d` with the new tags, what an operator gets from Compose alone
         (every changed container stopped, then replaced); time to healthy = until every
         container runs the new tag and is healthy. Not the script's DEPLOY_ORDER=together
         (`up -d --wait`): that one now fails, because the proxy turns unhealthy while no
         gateway is in rotation, and `--wait` gives up on the first unhealthy container.

Per deploy, from the load's window covering the script's run and one second after it: failed
requests by kind, the longest gap (no successful answer to /health, /ready or the fast tool),
p99 latency per kind, and the time to healthy (as above). Prints a
Markdown table (the one in docs/deploy.md), and the load's JSON summary path.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "ci" / "src"))  # mcp_trader.ssh: the bundle's file list

from mcp_trader import ssh  # noqa: E402

from tests.deploy import images  # noqa: E402  (the repo root must be importable first)
from tests.deploy.load import Load, fake_binance_address  # noqa: E402

METHODS = ("ours", "plain")
KINDS = ("health", "ready", "tool", "tool-slow", "stream")
SETTLE_S = 1.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_script(d: Path, *args: str) -> float:
    """Ours: the deploy script (rolling, what ships); its start -> exit 0 time."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(d / "deploy" / "mcp-trader-deploy.sh"), "--dir", str(d), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"deploy {args} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed


def plain_up(d: Path, tag: str, timeout: float = 120) -> float:
    """The peer: `docker compose up -d` of the same change, as an operator runs it (the new
    tags in the environment, which Compose prefers to .env); the time until every container
    runs the new tag and is healthy (polled every 0.1 s)."""
    env = {**os.environ, "BINANCE_IMAGE_TAG": tag, "GATEWAY_IMAGE_TAG": tag}
    started = time.monotonic()
    up = subprocess.run(
        ["docker", "compose", "up", "-d"], cwd=d, env=env, capture_output=True, text=True
    )
    if up.returncode != 0:
        raise RuntimeError(f"docker compose up -d failed ({up.returncode}):\n{up.stderr}")
    while time.monotonic() - started < timeout:
        ps = subprocess.run(
            ["docker", "compose", "ps", "-a", "--format", "json"],
            cwd=d, env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        rows = [json.loads(line) for line in ps.splitlines() if line.strip()]
        services = {r["Service"] for r in rows}
        if (
            services == {"binance-provider", "mcp-gateway", "proxy"}
            and len(rows) == 3
            and all(r["Health"] == "healthy" for r in rows)
            and all(r["Image"].endswith(f":{tag}") for r in rows if r["Service"] != "proxy")
        ):
            return time.monotonic() - started
        time.sleep(0.25)
    raise RuntimeError(f"the stack was not healthy on {tag} within {timeout}s")


def row(method: str, i: int, healthy: float, w: dict[str, Any]) -> str:
    kinds = w["kinds"]
    failed = ", ".join(f"{k} {kinds[k]['failed']}/{kinds[k]['count']}" for k in KINDS)
    p99 = ", ".join(f"{k} {kinds[k]['p99_ms'] or 0:.0f}" for k in ("health", "ready", "tool"))
    return (
        f"| {method} {i} | {healthy:.2f} s | {w['failed']}/{w['requests']} ({failed}) "
        f"| {w['longest_gap_s']:.2f} s | {p99} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="deploys per method")
    parser.add_argument("--keep", type=Path, help="copy the load's JSON summary here")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    images.build_and_push((images.V1, images.V2))
    load_before = os.getloadavg()
    port = free_port()
    fake = fake_binance_address()
    token = secrets.token_hex(16)
    results: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="mcp-trader-bench-") as tmp:
        d = Path(tmp)
        for src, dest in ssh.BUNDLE_FILES:
            (d / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / src, d / dest)
        # The shipped defaults (healthchecks every 2 s, stop grace 10 s) but for the images;
        # the first deploy makes the session secret the gateways share.
        (d / ".env").write_text(
            "\n".join(
                [
                    f"IMAGE_PREFIX={images.PREFIX}",
                    # The official HAProxy image cannot be pulled here: the tests' build of 2.6.
                    f"PROXY_IMAGE={images.PROXY_IMAGE}",
                    "COMPOSE_PROJECT_NAME=mcp-trader-bench",
                    f"GATEWAY_PUBLISH=127.0.0.1:{port}",
                    f"BINANCE_BASE_URL=http://{fake}",
                    f"MCP_GATEWAY_TOKEN={token}",
                    "",
                ]
            )
        )
        load = None
        try:
            run_script(d, "deploy", "--tag", images.V1.tag)
            load = Load(f"http://127.0.0.1:{port}", token, fake, d / "load.json", 4)
            tag = images.V1.tag
            for i in range(1, args.rounds + 1):
                for method in METHODS:
                    tag = images.V2.tag if tag == images.V1.tag else images.V1.tag
                    load.command(f"window {method} {i}")
                    if method == "ours":
                        healthy = run_script(d, "deploy", "--tag", tag)
                    else:
                        healthy = plain_up(d, tag)
                    time.sleep(SETTLE_S)
                    load.command(f"window idle after {method} {i}")
                    results.append((method, i, healthy))
                    print(f"{method} {i}: healthy after {healthy:.2f}s", file=sys.stderr)
                    time.sleep(SETTLE_S)
            summary = load.stop()
            if args.keep:
                shutil.copy2(d / "load.json", args.keep)
        finally:
            if load is not None:
                load.close()
            subprocess.run(
                ["docker", "compose", "down", "--timeout", "1"],
                cwd=d,
                capture_output=True,
                check=False,
            )
    windows = {w["name"]: w for w in summary["windows"]}
    print(
        "| deploy | start -> healthy | failed requests (by kind) | longest gap "
        "| p99 ms (health, ready, tool) |"
    )
    print("|---|---|---|---|---|")
    for method, i, healthy in results:
        print(row(method, i, healthy, windows[f"{method} {i}"]))
    total = summary["total"]
    print(
        f"\nload: {total['requests']} requests in {total['duration_s']:.0f} s "
        f"({total['rate_per_s']}/s); machine load average (1, 5, 15 min) before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
