"""The load generator (mcp-gateway/scripts/deploy_load.py) as a subprocess, and where the stack's
provider finds the fake Binance it serves: for tests/deploy/test_zero_downtime.py and
scripts/bench_deploy.py.

The generator runs in the gateway's own project (`uv run --project mcp-gateway`): it needs the
official MCP Python SDK (mcp 2.x), which this environment cannot take (dagger-io pins httpx).
"""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.deploy import images

SCRIPT = images.REPO / "mcp-gateway" / "scripts" / "deploy_load.py"


def bridge_address() -> str:
    """The host's address on Docker's default bridge: containers on any network reach it."""
    out = subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not out:
        raise RuntimeError("Docker's bridge network has no gateway address")
    return out


def fake_binance_address() -> str:
    """HOST:PORT for the fake Binance: the bridge address and a port free on it."""
    host = bridge_address()
    with socket.socket() as s:
        s.bind((host, 0))
        return f"{host}:{s.getsockname()[1]}"


class Load:
    """The load generator: commands on its stdin, one answer line each; the summary at stop."""

    def __init__(self, url: str, token: str, fake: str, out: Path, clients: int) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            ["uv", "run", "--quiet", "--locked", "--project", str(SCRIPT.parents[1]),
             "python", str(SCRIPT), "--url", url, "--token", token, "--fake-binance", fake,
             "--clients", str(clients), "--out", str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self.answer(120)
        if ready != "ready":
            raise RuntimeError(f"the load generator did not start: {ready!r}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")

    def answer(self, timeout: float = 30) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the load generator did not answer within {timeout}s") from None
        assert line, f"the load generator exited ({self.proc.wait(timeout=30)})"
        return line

    def command(self, line: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.answer()

    def stop(self) -> dict[str, Any]:
        """Stop the load and return its summary (deploy_load.py's JSON)."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.close()
        code = self.proc.wait(timeout=120)
        assert code == 0, f"the load generator exited {code}"
        return dict(json.loads(self.out.read_text()))

    def close(self) -> None:
        """If still running (a scenario failed): stop, and show what the load saw."""
        if self.proc.poll() is None:
            total = self.stop()["total"]
            print("load:", json.dumps({k: v for k, v in total.items() if k != "kinds"})[:4000])
