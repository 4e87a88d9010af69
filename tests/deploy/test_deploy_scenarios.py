"""The deploy path end to end, and every fault of the deploy-reliability issue as a scenario.

The module's ssh/scp argv lists (mcp_trader.ssh) run from the host against a real sshd,
shipping compose.yml + deploy/ and running the server script, which drives Docker Compose v2
against images pulled from the local registry. Faults are real: the ssh client or the sshd
child killed mid-`up` and mid-rollback, the server-side worker SIGKILLed, a broken bundle, a
failed pull, .env spellings and a symlinked .env, damaged logs, a full filesystem, five
deploys at once, a registry that is not the images'.

Each scenario gets a deploy directory of its own; those that only look or are refused share
one stack in test_deploy_one_stack.py. Healthchecks are fast (conftest.TEST_ENV_LINES).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp_trader import ssh

from tests.deploy import images
from tests.deploy.conftest import WAIT_TIMEOUT, Server, new_server, wait_for
from tests.deploy.helpers import (
    BAD,
    BUNDLE,
    SECRET_FILE,
    V1,
    V2,
    V4,
    G,
    P,
    both,
    bundle_copy,
    container_ids,
    deploy_ok,
    installed,
    local_image,
    open_session,
    other_lines,
    pinned,
    secret_leaks,
    session_answered,
    signed_with,
    without_session_secret,
)

pytestmark = pytest.mark.docker

# ---------------------------------------------------------------------------------------------
# Deploy, roll back, and what Compose alone does with the result


def test_redeploy_rollback_and_a_manual_compose_up(server: Server, tmp_path: Path) -> None:
    # v1 comes with a bundle from before the session secret file: the history returns to it.
    old = bundle_copy(tmp_path, without_session_secret)
    outputs = [server.run("deploy", tag=V1, bundle_root=old)]
    assert outputs[-1].returncode == 0, outputs[-1].output
    assert (server.path / SECRET_FILE).is_file()  # made once, before any bundle needs it
    env_before = other_lines(server)
    deploy_ok(server, V2)
    secret = (server.path / SECRET_FILE).read_text().strip()
    session = open_session(server)
    assert signed_with(session, secret)
    gateway_v2 = container_ids(server)[G]
    outputs.append(server.run("deploy", tag=V4))
    assert outputs[-1].returncode == 0, outputs[-1].output
    last = server.log()[-1]
    assert last["from"] == {"provider": V2, "gateway": V2}
    assert last["to"] == {"provider": V4, "gateway": V4}
    # Another gateway container (the v2 one is gone), the same secret: the session goes on.
    assert container_ids(server)[G] != gateway_v2
    assert session_answered(server, session) == 200
    outputs.append(server.run("rollback"))  # --previous
    assert outputs[-1].returncode == 0, outputs[-1].output
    assert server.running_tags() == both(V2)
    assert pinned(server) == (V2, V2)
    assert session_answered(server, session) == 200
    # What a reboot or an operator does: Compose alone, reading only compose.yml and .env (and
    # the secret file the deploy made).
    assert server.compose("down", "--timeout", "1").returncode == 0
    up = server.compose("up", "-d", "--wait", "--wait-timeout", "60")
    assert up.returncode == 0, up.stderr
    assert server.running_tags() == both(V2)
    assert session_answered(server, session) == 200
    # Again: walks further back through the history, not back and forth; to v1's own bundle,
    # whose compose.yml knows no secret file (the file stays for the next deploy).
    outputs.append(server.run("rollback"))
    assert outputs[-1].returncode == 0, outputs[-1].output
    assert server.running_tags() == both(V1)
    assert (server.path / "compose.yml").read_bytes() == (old / "compose.yml").read_bytes()
    assert (server.path / SECRET_FILE).read_text().strip() == secret
    assert other_lines(server) == env_before
    # --to a tag that is no longer local: pulled first, then deployed like any version.
    for service in (P, G):
        subprocess.run(
            ["docker", "image", "rm", images.image_ref(service, V4)], capture_output=True
        )
    result = server.run("rollback", to=V4)
    assert result.returncode == 0, result.output
    assert server.running_tags() == both(V4)
    actions = [(e["action"], e["to"], e["result"]) for e in server.log()]
    assert actions[-3:] == [
        ("rollback-previous", {"provider": V2, "gateway": V2}, "ok"),
        ("rollback-previous", {"provider": V1, "gateway": V1}, "ok"),
        ("rollback-to", {"provider": V4, "gateway": V4}, "ok"),
    ]
    # The kept secret again: a session of v2's time is still good.
    assert session_answered(server, session) == 200
    assert secret_leaks(server, secret, *(r.output for r in [*outputs, result])) == []


# ---------------------------------------------------------------------------------------------
# .env as Compose reads it; a failed pull; a broken bundle


def test_env_spellings_and_a_symlink_survive_every_outcome(server: Server, tmp_path: Path) -> None:
    deploy_ok(server, V1)
    # The operator's .env: the real file elsewhere (symlinked), CRLF line endings, the tags in
    # `export` and spaced forms with quotes and an inline comment.
    real = server.path.parent / "config" / "mcp-trader.env"
    real.parent.mkdir()
    lines = [
        *server.env_lines,
        f"export BINANCE_IMAGE_TAG={V1}",
        f'GATEWAY_IMAGE_TAG = "{V1}"  # pin',
    ]
    real.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    real.chmod(0o640)
    server.env_file.unlink()
    server.env_file.symlink_to(real)
    before = other_lines(server)

    def tag_lines() -> list[bytes]:
        return [line for line in real.read_bytes().split(b"\n") if b"IMAGE_TAG" in line]

    deploy_ok(server, V2)
    assert tag_lines() == [
        f"export BINANCE_IMAGE_TAG={V2}\r".encode(),
        f'GATEWAY_IMAGE_TAG = "{V2}"  # pin\r'.encode(),
    ]
    assert server.env_file.is_symlink() and oct(real.stat().st_mode & 0o777) == "0o640"
    # An unhealthy version: back to what ran (v2), not to an unpinned `latest`.
    env_before = real.read_bytes()
    result = server.run("deploy", tag=BAD)
    assert result.returncode == 4, result.output
    assert "rolled back" in result.output and BAD in result.output
    assert server.running_tags() == both(V2)
    assert server.gateway_health() == 200
    assert real.read_bytes() == env_before
    last = server.log()[-1]
    assert last["result"] == "unhealthy-rolled-back"
    assert last["from"] == {"provider": V2, "gateway": V2}
    assert last["to"] == {"provider": BAD, "gateway": BAD}
    # A failed pull, shipping a changed bundle: nothing changes, the installed bundle included.
    bundle_before = installed(server)
    changed = bundle_copy(tmp_path, lambda c: c + "# a newer bundle\n")
    ids_before = container_ids(server)
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("deploy", {"tag": images.MISSING_TAG}),
        ("rollback", {"to": images.MISSING_TAG}),
    ]
    for action, kwargs in attempts:
        result = server.run(action, bundle_root=changed, **kwargs)
        assert result.returncode == 3, result.output
        assert "nothing was changed" in result.output
        assert real.read_bytes() == env_before
        assert installed(server) == bundle_before
        assert container_ids(server) == ids_before
        assert server.log()[-1]["result"] == "pull-failed"
    # One service only: the other keeps what runs.
    assert server.run("deploy", provider_tag=V4).returncode == 0
    assert server.running_tags() == {P: V4, G: V2}
    assert tag_lines() == [
        f"export BINANCE_IMAGE_TAG={V4}\r".encode(),
        f'GATEWAY_IMAGE_TAG = "{V2}"  # pin\r'.encode(),
    ]
    assert other_lines(server) == before


def test_a_broken_healthcheck_bundle_brings_back_the_previous_bundle(
    server: Server, tmp_path: Path
) -> None:
    deploy_ok(server, V1)
    bundle_before = installed(server)
    env_before = server.env_file.read_bytes()
    broken = bundle_copy(
        tmp_path,
        lambda c: c.replace(
            'test: ["CMD", "python", "-m", "mcp_gateway.healthcheck"]', 'test: ["CMD", "false"]'
        ),
    )
    assert (broken / "compose.yml").read_text() != (images.REPO / "compose.yml").read_text()
    result = server.run("deploy", tag=V2, bundle_root=broken)
    assert result.returncode == 4, result.output
    # The previous compose.yml came back with the previous tags, and they are healthy.
    assert installed(server) == bundle_before
    assert server.running_tags() == both(V1)
    assert server.env_file.read_bytes() == env_before
    last = server.log()[-1]
    assert last["result"] == "unhealthy-rolled-back"
    assert last["bundle"] != server.log()[0]["bundle"]
    # The bad bundle is kept for inspection, by its id.
    assert (server.state_dir / "bundles" / last["bundle"] / "compose.yml").read_bytes() == (
        broken / "compose.yml"
    ).read_bytes()


# ---------------------------------------------------------------------------------------------
# The run survives its connection


def kill_connection(server: Server, client: subprocess.Popen[str], how: str) -> None:
    if how == "client":
        client.kill()
    else:
        server.kill_sshd_child()
    client.communicate(timeout=60)
    assert client.returncode != 0


@pytest.mark.parametrize(
    ("during_up", "during_rollback"), [("client", "sshd-child"), ("sshd-child", "client")]
)
def test_a_dropped_connection_does_not_stop_the_deploy_or_its_rollback(
    server: Server, during_up: str, during_rollback: str
) -> None:
    deploy_ok(server, V1)
    # Mid-`up` of a good version: the deploy finishes, pinned and recorded.
    run_id, client = server.start("deploy", tag=V2)
    server.wait_phase("up")
    time.sleep(1)
    kill_connection(server, client, during_up)
    assert server.wait_outcome(run_id)[0] == 0
    assert server.running_tags() == both(V2)
    assert pinned(server) == (V2, V2)
    assert server.log()[-1]["run"] == run_id and server.log()[-1]["result"] == "ok"
    status = server.run("status")
    assert status.returncode == 0, status.output
    assert f"last run:  {run_id}: exit 0" in status.stdout
    # Mid-rollback of a bad one: the rollback finishes and the outage closes.
    env_before = server.env_file.read_bytes()
    run_id, client = server.start("deploy", tag=BAD)
    server.wait_phase("rollback")
    time.sleep(0.5)
    kill_connection(server, client, during_rollback)
    code, message = server.wait_outcome(run_id)
    assert code == 4, message
    assert server.running_tags() == both(V2)
    assert server.gateway_health() == 200
    assert server.env_file.read_bytes() == env_before
    assert server.log()[-1]["result"] == "unhealthy-rolled-back"
    # Re-attaching reports how that run ended: its output and its exit code.
    attach = server.run("attach", run=run_id)
    assert attach.returncode == 4, attach.output
    assert "rolled back" in attach.stderr and f"{BAD} did not become healthy" in attach.stderr


def test_sigkill_mid_up_then_status_rollback_and_deploy(server: Server) -> None:
    deploy_ok(server, V1)
    deploy_ok(server, V2)
    run_id, client = server.start("deploy", tag=V4)
    server.wait_phase("up")
    # Between the two services' swaps: the provider runs v4, the gateway still v2.
    wait_for(
        "the new provider",
        lambda: server.containers().get(P, {}).get("image", "").endswith(f":{V4}"),
        60,
    )
    os.kill(server.worker_pid(), 9)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 7, out + err
    assert "ended without recording an outcome" in err
    status = server.run("status")
    assert status.returncode == 7, status.output
    assert f"interrupted: run {run_id}" in status.stdout
    # The next rollback is not locked out by the dead run's children, and goes back to what
    # ran before the interrupted run (v2), not to the one before that.
    result = server.run("rollback")
    assert result.returncode == 0, result.output
    assert "found an interrupted run" in result.stderr
    assert server.running_tags() == both(V2)
    assert pinned(server) == (V2, V2)
    interrupted = [e for e in server.log() if e["run"] == run_id]
    assert [e["result"] for e in interrupted] == ["interrupted"]
    assert interrupted[0]["to"] == {"provider": V4, "gateway": V4}
    assert not (server.state_dir / "intent").exists()
    status = server.run("status")
    assert status.returncode == 0, status.output
    deploy_ok(server, V4)


def test_sigkill_mid_rollback_then_status_and_the_next_deploy(server: Server) -> None:
    deploy_ok(server, V1)
    bundle_before = installed(server)
    run_id, client = server.start("deploy", tag=BAD)
    server.wait_phase("rollback")
    time.sleep(0.5)
    os.kill(server.worker_pid(), 9)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 7, out + err
    assert "ended without recording an outcome" in err and "running now: " in err
    status = server.run("status")
    assert status.returncode == 7, status.output
    assert f"interrupted: run {run_id}" in status.stdout
    # The next deploy reconciles the killed rollback and starts from what runs.
    deploy_ok(server, V2)
    assert pinned(server) == (V2, V2)
    assert installed(server) == bundle_before
    assert [e["result"] for e in server.log() if e["run"] == run_id] == ["interrupted"]
    assert not (server.state_dir / "intent").exists()
    assert server.run("status").returncode == 0


# ---------------------------------------------------------------------------------------------
# The log, the disk, the lock


def test_the_log_cannot_mislead(server: Server, tmp_path: Path) -> None:
    # Another deploy directory on the same host runs v1 from the same repositories, and v1 is
    # also there under a second tag (as when one build is published as sha-… and as a branch
    # tag): Docker would then untag v1 although the other stack's containers were made from it.
    other = new_server(tmp_path / "other" / "mcp-trader", server.sshd)
    alias = "sha-1000001-alias"
    try:
        deploy_ok(other, V1)
        for service in (P, G):
            images.run(["docker", "tag", images.image_ref(service, V1),
                        images.image_ref(service, alias)])  # fmt: skip
        for tag in (V1, V2, V4):
            result = server.run("deploy", tag=tag, keep=2)
            assert result.returncode == 0, result.output
        for service in (P, G):
            assert local_image(service, V1), f"{service}:{V1} is the other directory's"
        assert other.running_tags() == both(V1)
        assert f"kept {images.image_ref(P, V1)}: a container on this host uses it" in result.output
    finally:
        other.compose("down", "--remove-orphans", "--timeout", "1")
        for service in (P, G):
            subprocess.run(["docker", "image", "rm", images.image_ref(service, alias)],
                           capture_output=True, check=False)  # fmt: skip
    # With the other stack gone, only this directory's own history beyond the window goes.
    deploy_ok(server, V4, keep=2)
    for service in (P, G):
        assert not local_image(service, V1), f"{service}:{V1} should have been pruned"
        assert local_image(service, V2) and local_image(service, V4)
    # A truncated last line: rollback --previous will not skip past it.
    raw = server.log_file.read_bytes()
    server.log_file.write_bytes(raw[: raw.rindex(b'"result"')])
    ids_before = container_ids(server)
    result = server.run("rollback")
    assert result.returncode == 1, result.output
    assert "line 4 is not a complete record" in result.output
    assert container_ids(server) == ids_before
    status = server.run("status")
    assert "line 4: truncated record" in status.stdout
    # NUL padding after it (a crash): the next record still lands on a line of its own.
    with server.log_file.open("ab") as f:
        f.write(b"\0" * 512)
    deploy_ok(server, V2, keep=2)
    lines = server.log_file.read_bytes().split(b"\n")
    assert json.loads(lines[-2])["to"]["provider"] == V2 and lines[-1] == b""
    assert b"\0" in lines[3]
    assert "NUL bytes" in server.run("status").stdout
    # An empty log: nothing is known, so nothing is pruned.
    server.log_file.write_bytes(b"")
    deploy_ok(server, V1, keep=1)
    for service in (P, G):
        assert local_image(service, V2) and local_image(service, V4)


@pytest.fixture
def small_disk(server: Server) -> Iterator[Server]:
    """The server's deploy directory on a 4 MB tmpfs of its own."""
    env = server.env_file.read_bytes()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(server.path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server.env_file.write_bytes(env)
    server.env_file.chmod(0o600)
    try:
        yield server
    finally:
        server.compose("down", "--remove-orphans", "--timeout", "1")
        subprocess.run(["umount", "-l", str(server.path)], check=False)


def fill(path: Path) -> Path:
    """Use up every byte of the filesystem holding `path`."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_after_the_switch_has_its_own_exit_code(small_disk: Server) -> None:
    server = small_disk
    deploy_ok(server, V1)
    env_before = server.env_file.read_bytes()
    # Full before the run starts (the bundle already shipped): refused, nothing changed.
    bundle_before = installed(server)
    log_before = server.log_file.read_bytes()
    ids_before = container_ids(server)
    plan = server.plan(ssh.script_args("deploy", tag=V2, wait_timeout=WAIT_TIMEOUT))
    assert server.ship(plan) is None
    filler = fill(server.path)
    full = subprocess.run(plan.run, capture_output=True, text=True, check=False, timeout=120)
    assert full.returncode == 3, full.stdout + full.stderr
    assert "nothing was changed; running now: " in full.stderr
    assert f"{P}={V1} (healthy)" in full.stderr
    assert server.env_file.read_bytes() == env_before
    assert installed(server) == bundle_before
    assert server.log_file.read_bytes() == log_before
    assert container_ids(server) == ids_before
    assert list((server.path / ".incoming").iterdir()) == []
    filler.unlink()
    run_id, client = server.start("deploy", tag=V2)
    server.wait_phase("up")
    filler = fill(server.path)
    out, err = client.communicate(timeout=180)
    assert client.returncode == 8, out + err
    assert "is healthy and serving, but .env could not be rewritten" in err
    # What runs is the new version; .env still pins the old one, and says so to `status`.
    assert server.running_tags() == both(V2)
    assert server.env_file.read_bytes() == env_before
    assert server.outcome(run_id) is not None and server.outcome(run_id)[0] == 8  # type: ignore[index]
    status = server.run("status")
    assert status.returncode == 7, status.output
    assert "drift:" in status.stdout
    # With space again, the same deploy pins and records what runs.
    filler.unlink()
    deploy_ok(server, V2)
    assert pinned(server) == (V2, V2)
    assert server.log()[-1]["result"] == "ok"
    assert server.run("status").returncode == 0


def test_five_concurrent_deploys_one_runs_the_others_name_it(server: Server) -> None:
    plans = {}
    for i in range(5):
        run_id = f"race-{i}"
        plans[run_id] = server.plan(
            ssh.script_args("deploy", tag=V1, wait_timeout=WAIT_TIMEOUT), run_id=run_id
        )
        assert server.ship(plans[run_id]) is None
    procs = {
        run_id: subprocess.Popen(
            plan.run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for run_id, plan in plans.items()
    }
    results = {run_id: (p.communicate(timeout=180), p.returncode) for run_id, p in procs.items()}
    winners = [r for r, (_, code) in results.items() if code == 0]
    assert len(winners) == 1, {r: (code, err[-300:]) for r, ((_, err), code) in results.items()}
    (winner,) = winners
    for run_id, ((_, err), code) in results.items():
        if run_id != winner:
            assert code == 2, err
            assert "another deploy is running" in err
            assert f"run={winner} " in err, err
    assert server.running_tags() == both(V1)
    assert [e["run"] for e in server.log()] == [winner]
    assert not (server.state_dir / "holder").exists()


def test_compose_v1_fallback_polls_health_and_rolls_back(server: Server) -> None:
    """Without the v2 plugin (forced here), docker-compose v1 applies and the script polls."""
    for name in BUNDLE:
        (server.path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(images.REPO / name, server.path / name)
    env = {**os.environ, "MCP_TRADER_COMPOSE": "v1"}

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(server.path / "deploy" / "mcp-trader-deploy.sh"), "--wait-timeout", "30",
             *args],
            env=env, capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip

    ok = script("deploy", "--tag", V1)
    assert ok.returncode == 0, ok.stderr
    assert server.running_tags() == both(V1)
    versions = subprocess.run(
        ["docker", "inspect", "-f", '{{index .Config.Labels "com.docker.compose.version"}}',
         *[c["id"] for c in server.containers().values()]],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert versions and all(v.startswith("1.") for v in versions), versions
    bad = script("deploy", "--tag", BAD)
    assert bad.returncode == 4, bad.stderr
    assert "rolled back" in bad.stderr
    assert server.running_tags() == both(V1)
    assert pinned(server) == (V1, V1)
