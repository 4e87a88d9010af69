"""Zero downtime (issue 13): not one failed request while a deploy, an automatic rollback and a
manual `rollback --previous` replace the stack's containers under a steady load.

The load is mcp-gateway/scripts/deploy_load.py, run in the gateway's own project (it needs the
official MCP Python SDK, which this environment cannot take): MCP clients that each hold one
session for the whole module, plus GET /health and GET /ready, through the proxy's published
port, and the fake Binance the stack's provider is pointed at. It records every request.

In-flight calls are checked without relying on timing: at each switch the load starts one tool
call per session that the fake Binance holds, and the test proves that only the OLD container
can be serving it (a provider: the fake saw the calls come from the old provider's address; a
gateway: they reached Binance before the new one listened, by its log); they are released only
once Docker has sent that old container SIGTERM, so they finish during its drain. One stack for
the whole module.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from tests.deploy.conftest import GATEWAY_TOKEN, Server, Sshd, new_server, wait_for
from tests.deploy.helpers import BAD, V1, V2, G, P, both, deploy_ok, pinned
from tests.deploy.load import Load, fake_binance_address

pytestmark = pytest.mark.docker

CLIENTS = 4


class Events:
    """`docker events` of the project (kills and starts), collected in a thread."""

    def __init__(self, project: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self.proc = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}",
             "--filter", f"label=com.docker.compose.project={project}",
             "--filter", "event=kill", "--filter", "event=start"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.seen.append(json.loads(line))

    def kill_time(self, container: str) -> float | None:
        """When Docker sent the container its stop signal (Unix time), if it did."""
        for e in self.seen:
            if e.get("Action") == "kill" and e.get("id") == container:
                return int(e["timeNano"]) / 1e9
        return None

    def started_after(self, service: str, t: float) -> tuple[str, float] | None:
        """(id, Unix time) of the first container of `service` started after `t`, if any."""
        for e in self.seen:
            attrs = e.get("Actor", {}).get("Attributes", {})
            when = int(e["timeNano"]) / 1e9
            service_of = attrs.get("com.docker.compose.service")
            if e.get("Action") == "start" and service_of == service and when > t:
                return str(e["id"]), when
        return None

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class Hold:
    """One batch of held calls: sent while only `container` could serve them."""

    what: str
    container: str
    sent: float
    acked: float = 0.0
    released: float = 0.0
    # Only the old container can be serving it (checked when sent).
    proven: bool = False


@dataclass
class Stack:
    server: Server
    load: Load
    events: Events
    holds: list[Hold] = field(default_factory=list)

    def ids(self, service: str) -> list[str]:
        out = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc",
             "--filter", f"label=com.docker.compose.project={self.server.project}",
             "--filter", f"label=com.docker.compose.service={service}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return out.split()

    def hold(self, what: str, container: str) -> Hold:
        """Held calls; for a provider, checked to have reached Binance from that container."""
        h = Hold(what, container, time.time())
        answer = self.load.command("hold")
        h.acked = time.time()
        count, _, peers = answer.removeprefix("held ").partition(" from ")
        assert count == str(CLIENTS), f"{what}: only {answer}"
        if container in self.ids(P):
            assert peers == self.ip(container), (
                f"{what}: {answer}, old provider {self.ip(container)}"
            )
            h.proven = True
        self.holds.append(h)
        return h

    def release_after_kill(self, h: Hold) -> None:
        wait_for(
            f"{h.what}: SIGTERM to {h.container[:12]}",
            lambda: self.events.kill_time(h.container) is not None,
            WAIT,
        )
        assert self.load.command("release") == "released"
        for held in self.holds:  # `release` answers every batch still held
            held.released = held.released or time.time()

    def ip(self, container: str) -> str:
        return subprocess.run(
            ["docker", "inspect", "-f",
             "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    def wait_phase(self, *phases: str) -> None:
        """Until the run in progress is in one of `phases` (a short one may be missed)."""
        wait_for(f"phase {phases}", lambda: self.server.intent().get("phase") in phases, WAIT)

    def hold_across_provider_switch(self, what: str) -> None:
        """Held calls in the old provider (it asked Binance for them), released at its SIGTERM."""
        (old_p,) = self.ids(P)
        self.release_after_kill(self.hold(what, old_p))

    def hold_across_gateway_switch(self, what: str, since: float) -> None:
        """Held calls on the old gateway, released at its SIGTERM.

        A batch counts if it had reached Binance before the new gateway listened: its log
        says when (uvicorn logs it in the same step of its event loop as it starts accepting),
        and a gateway that does not listen serves nothing (the proxy's dial is refused and
        sent to the other one). Batches go out every second from now (before the new container
        exists: an idle machine boots it faster than a batch reaches Binance) until it listens,
        so the last one counted is at most that old when the switch begins and is still held
        (the fake answers after --hold-cap at the latest) at the old one's SIGTERM, even when a
        loaded machine takes long to boot the new gateway."""
        (old_g,) = self.ids(G)
        new_g: str | None = None
        listened: float | None = None
        last, batches, deadline = 0.0, [], time.time() + WAIT
        while listened is None:
            assert time.time() < deadline, f"{what}: no new gateway listening within {WAIT}s"
            if new_g is None and (started := self.events.started_after(G, since)) is not None:
                new_g = started[0]
            if time.time() - last >= 1.0:
                batches.append(self.hold(what, old_g))
                last = batches[-1].sent
            time.sleep(0.1)
            listened = None if new_g is None else listening_at(new_g)
        for h in batches:
            h.proven = h.acked < listened
        assert any(h.proven for h in batches), (
            f"{what}: the new gateway listened at {listened}, before any held batch was in"
        )
        self.release_after_kill(batches[-1])


WAIT = 90


def listening_at(container: str) -> float | None:
    """When the gateway in `container` logged that it accepts connections (Unix time)."""
    logs = subprocess.run(
        ["docker", "logs", "--timestamps", container], capture_output=True, text=True, check=True
    )
    for line in (logs.stdout + logs.stderr).splitlines():
        stamp, _, message = line.partition(" ")
        if "Uvicorn running on" in message:
            # RFC 3339 with nanoseconds; Python reads microseconds.
            day, _, frac = stamp.rstrip("Z").partition(".")
            return datetime.fromisoformat(f"{day}.{frac[:6]:0<6}+00:00").timestamp()
    return None


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, sshd: Sshd, test_images: None
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("zerodt")
    server = new_server(root / "mcp-trader", sshd)
    fake = fake_binance_address()
    lines = [
        f"BINANCE_BASE_URL=http://{fake}" if line.startswith("BINANCE_BASE_URL=") else line
        for line in server.env_lines
    ]
    server.env_lines = lines
    server.env_file.write_text("\n".join(lines))
    # No MCP_SESSION_SECRET: the first deploy makes the secret every gateway shares.
    events = Events(server.project)
    load = None
    try:
        deploy_ok(server, V1)
        load = Load(
            f"http://127.0.0.1:{server.gateway_port}",
            GATEWAY_TOKEN,
            fake,
            root / "load.json",
            CLIENTS,
        )
        yield Stack(server, load, events)
    finally:
        if load is not None:
            load.close()
        events.close()
        # A failed scenario may leave a deploy running on the "server" (detached, as the
        # module runs it): let it end, or it brings containers back after the `down`.
        deadline = time.monotonic() + 180
        while server.intent() and time.monotonic() < deadline:
            time.sleep(0.5)
        server.compose("down", "--remove-orphans", "--timeout", "1")


def test_no_request_fails_through_deploy_automatic_rollback_and_rollback(stack: Stack) -> None:
    server, load = stack.server, stack.load

    # 1. A deploy of a new tag: the provider, then the gateway, each replaced under load.
    assert load.command("window deploy") == "window deploy"
    since = time.time()
    old_p, old_g = stack.ids(P), stack.ids(G)
    run_id, client = server.start("deploy", tag=V2)
    stack.wait_phase("up")
    stack.hold_across_provider_switch("deploy: provider swap")
    stack.hold_across_gateway_switch("deploy: gateway switch", since)
    out, err = client.communicate(timeout=300)
    assert client.returncode == 0, out + err
    assert server.running_tags() == both(V2)
    assert pinned(server) == (V2, V2)
    assert server.log()[-1]["result"] == "ok" and server.log()[-1]["run"] == run_id
    for service, old in ((P, old_p), (G, old_g)):
        assert set(stack.ids(service)).isdisjoint(old), f"{service}: the old container still runs"
        assert len(stack.ids(service)) == 1, f"{service}: not exactly one container"

    # 2. A version whose gateway never gets healthy: its provider is swapped in and back out,
    # the bad gateway never serves, and the serving gateway is never touched.
    assert load.command("window automatic-rollback") == "window automatic-rollback"
    old_g = stack.ids(G)
    env_before = server.env_file.read_bytes()
    run_id, client = server.start("deploy", tag=BAD)
    stack.wait_phase("up")
    stack.hold_across_provider_switch("bad deploy: provider swap")
    stack.wait_phase("rollback")
    stack.hold_across_provider_switch("automatic rollback: provider swap")
    out, err = client.communicate(timeout=300)
    assert client.returncode == 4, out + err
    assert "rolled back" in err and BAD in err
    assert server.running_tags() == both(V2)
    assert server.env_file.read_bytes() == env_before
    assert stack.ids(G) == old_g, "the serving gateway was replaced during the failed deploy"
    last = server.log()[-1]
    assert (last["run"], last["result"]) == (run_id, "unhealthy-rolled-back")
    assert last["from"] == {"provider": V2, "gateway": V2}
    assert last["to"] == {"provider": BAD, "gateway": BAD}

    # 3. rollback --previous: back to v1, both services replaced again.
    assert load.command("window rollback") == "window rollback"
    since = time.time()
    old_p, old_g = stack.ids(P), stack.ids(G)
    run_id, client = server.start("rollback")
    stack.wait_phase("up")
    stack.hold_across_provider_switch("rollback: provider swap")
    stack.hold_across_gateway_switch("rollback: gateway switch", since)
    out, err = client.communicate(timeout=300)
    assert client.returncode == 0, out + err
    assert server.running_tags() == both(V1)
    assert pinned(server) == (V1, V1)
    for service, old in ((P, old_p), (G, old_g)):
        assert set(stack.ids(service)).isdisjoint(old), f"{service}: the old container still runs"
    last = server.log()[-1]
    assert (last["run"], last["action"], last["result"]) == (run_id, "rollback-previous", "ok")

    assert load.command("window after") == "window after"
    time.sleep(1)
    summary = load.stop()
    total = summary["total"]
    report = json.dumps({w["name"]: {k: w[k] for k in ("requests", "rate_per_s", "failed",
                         "longest_gap_s")} for w in summary["windows"]})  # fmt: skip
    print(report)
    for h in stack.holds:
        print(f"held: {h.what}: {h.acked - h.sent:.2f}s to reach Binance, proven {h.proven}, "
              f"released {h.released - h.acked:.2f}s later")  # fmt: skip

    # Not one failed request, at a steady load of at least 20 requests/s.
    assert total["failed"] == 0, json.dumps(total["failures"][:20], indent=1)
    windows = {w["name"]: w for w in summary["windows"]}
    for name in ("deploy", "automatic-rollback", "rollback"):
        w = windows[name]
        assert w["rate_per_s"] >= 20, (w["name"], w["rate_per_s"])
        for kind in ("health", "ready", "tool", "tool-slow"):
            assert w["kinds"][kind]["count"] > 0, (w["name"], kind)
    # Every client kept its one session: the same Mcp-Session-Id on every request, before and
    # after the two gateway switches; its GET stream was reopened on each new gateway.
    for c in summary["clients"]:
        assert len(c["session_ids"]) == 1, c
        assert c["requests_with_id"] > 20, c
        assert c["stream_opens"] >= 3, c
    # The held calls: all answered (no failure above); in each switch, a batch that only the
    # old container could be serving was still in flight when Docker sent it SIGTERM.
    held = [r for r in summary["records"] if r["kind"] == "tool-held"]
    assert len(held) == CLIENTS * len(stack.holds)
    for what in dict.fromkeys(h.what for h in stack.holds):
        batches = [h for h in stack.holds if h.what == what]
        killed = stack.events.kill_time(batches[0].container)
        assert killed is not None, what
        crossed = []
        for h in batches:
            mine = [r for r in held if h.sent <= r["start"] <= h.acked]
            assert len(mine) == CLIENTS, (h, mine)
            if h.proven and all(r["end"] > killed for r in mine):
                crossed.append(h)
        assert crossed, (what, batches, killed)
