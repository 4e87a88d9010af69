"""Issue 6's scenarios, end to end: the module's ssh/scp argv lists (mcp_trader.ssh) run from
the host against a real sshd, shipping compose.yml + deploy/ and running the server script,
which drives Docker Compose v2 against images pulled from the local registry.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time

import pytest

from tests.deploy import images
from tests.deploy.conftest import Server

pytestmark = pytest.mark.docker

P = "binance-provider"
G = "mcp-gateway"
V1, V2, BAD, V4 = images.V1.tag, images.V2.tag, images.BAD.tag, images.V4.tag


def both(tag: str) -> dict[str, str]:
    return {P: tag, G: tag}


def pinned(server: Server) -> tuple[str | None, str | None]:
    lines = server.env_file.read_text().splitlines()
    p = [line.split("=", 1)[1] for line in lines if line.startswith("BINANCE_IMAGE_TAG=")]
    g = [line.split("=", 1)[1] for line in lines if line.startswith("GATEWAY_IMAGE_TAG=")]
    return (p[-1] if p else None, g[-1] if g else None)


def other_lines(server: Server) -> bytes:
    """The .env without the two tag lines: what the deploy must never change, byte for byte."""
    raw = server.env_file.read_bytes()
    kept = [
        line
        for line in raw.split(b"\n")
        if not line.startswith((b"BINANCE_IMAGE_TAG=", b"GATEWAY_IMAGE_TAG="))
    ]
    return b"\n".join(kept)


def deploy_ok(server: Server, tag: str) -> None:
    result = server.run("deploy", tag=tag)
    assert result.returncode == 0, result.output
    assert server.running_tags() == both(tag)


def test_deploy_v1_is_healthy_and_pinned(server: Server) -> None:
    original = server.env_file.read_bytes()
    result = server.run("deploy", tag=V1)
    assert result.returncode == 0, result.output
    assert server.running_tags() == both(V1)
    assert server.gateway_health() == 200
    assert pinned(server) == (V1, V1)
    # Only two lines were added; every original byte is still there, in order, including the
    # last line that had no newline (it gained one so the new lines start on their own).
    text = server.env_file.read_bytes()
    assert text.startswith(original)
    assert text[len(original) :] == f"\nBINANCE_IMAGE_TAG={V1}\nGATEWAY_IMAGE_TAG={V1}\n".encode()
    assert oct(server.env_file.stat().st_mode & 0o777) == "0o600"
    [entry] = server.log()
    assert entry["action"] == "deploy"
    assert entry["from"] is None
    assert entry["to"] == {"provider": V1, "gateway": V1}
    assert entry["result"] == "ok"
    assert entry["sha"] == V1.removeprefix("sha-")
    assert isinstance(entry["duration_s"], float)
    # The staging directory of the run is gone; the bundle is installed.
    assert list((server.path / ".incoming").iterdir()) == []
    for name in ("compose.yml", "deploy/providers.yaml", "deploy/mcp-trader-deploy.sh"):
        assert (server.path / name).read_bytes() == (images.REPO / name).read_bytes()


def test_deploy_v2_logs_and_keeps_v1_pullable(server: Server) -> None:
    deploy_ok(server, V1)
    before = other_lines(server)
    deploy_ok(server, V2)
    assert pinned(server) == (V2, V2)
    assert other_lines(server) == before
    last = server.log()[-1]
    assert last["from"] == {"provider": V1, "gateway": V1}
    assert last["to"] == {"provider": V2, "gateway": V2}
    assert last["result"] == "ok"
    # v1 is still in the registry (nothing deletes published tags) and in the rollback window.
    for service in (P, G):
        ref = images.image_ref(service, V1)
        assert (
            subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0
        )
        # --force: untag even if a container of another test session still uses it.
        subprocess.run(["docker", "image", "rm", "--force", ref], capture_output=True, check=True)
        pull = subprocess.run(["docker", "pull", "--quiet", ref], capture_output=True, text=True)
        assert pull.returncode == 0, pull.stderr


def test_unhealthy_version_rolls_back_automatically(server: Server) -> None:
    deploy_ok(server, V1)
    deploy_ok(server, V2)
    env_before = server.env_file.read_bytes()
    result = server.run("deploy", tag=BAD)
    assert result.returncode == 4, result.output
    assert "rolled back" in result.output
    assert BAD in result.output
    assert server.running_tags() == both(V2)
    assert server.gateway_health() == 200
    assert server.env_file.read_bytes() == env_before
    last = server.log()[-1]
    assert last["result"] == "unhealthy-rolled-back"
    assert last["from"] == {"provider": V2, "gateway": V2}
    assert last["to"] == {"provider": BAD, "gateway": BAD}


def test_rollback_previous_then_to(server: Server) -> None:
    deploy_ok(server, V1)
    deploy_ok(server, V2)
    deploy_ok(server, V4)
    result = server.run("rollback")  # --previous
    assert result.returncode == 0, result.output
    assert server.running_tags() == both(V2)
    assert pinned(server) == (V2, V2)
    # Again: walks further back through the history, not back and forth.
    result = server.run("rollback")
    assert result.returncode == 0, result.output
    assert server.running_tags() == both(V1)
    # --to a sha tag: pulled first, then deployed like any version.
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


def test_rollback_previous_without_history_refuses(server: Server) -> None:
    deploy_ok(server, V1)
    result = server.run("rollback")
    assert result.returncode == 1
    assert "no deployment before the current one" in result.output
    assert server.running_tags() == both(V1)


def test_nonexistent_tag_changes_nothing(server: Server) -> None:
    deploy_ok(server, V1)
    env_before = server.env_file.read_bytes()
    ids_before = {s: c["id"] for s, c in server.containers().items()}
    for action in ("deploy", "rollback"):
        if action == "deploy":
            result = server.run(action, tag=images.MISSING_TAG)
        else:
            result = server.run(action, to=images.MISSING_TAG)
        assert result.returncode == 3, result.output
        assert "nothing was changed" in result.output
        assert server.env_file.read_bytes() == env_before
        assert {s: c["id"] for s, c in server.containers().items()} == ids_before
        assert server.running_tags() == both(V1)
        assert server.log()[-1]["result"] == "pull-failed"


def test_invalid_tag_is_refused_before_anything(server: Server) -> None:
    deploy_ok(server, V1)
    env_before = server.env_file.read_bytes()
    log_before = server.log_file.read_bytes()
    # The module refuses it before building a command...
    with pytest.raises(ValueError, match="not a valid image tag"):
        server.run("deploy", tag="v1;rm -rf /")
    # ...and the script refuses it too when called directly on the server.
    script = server.path / "deploy" / "mcp-trader-deploy.sh"
    proc = subprocess.run(
        ["bash", str(script), "deploy", "--tag", "../x"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "'../x' is not a valid image tag" in proc.stderr
    assert server.env_file.read_bytes() == env_before
    assert server.log_file.read_bytes() == log_before


def test_concurrent_deploys_one_is_refused(server: Server) -> None:
    deploy_ok(server, V1)
    first = server.start("deploy", tag=V2)
    lock = server.path / "deploy.lock"
    deadline = time.monotonic() + 30
    while "command=deploy" not in (lock.read_text() if lock.exists() else ""):
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first deploy never took the lock"
        time.sleep(0.05)
    started = time.monotonic()
    second = server.run("deploy", tag=V4)
    refused_in = time.monotonic() - started
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert second.returncode == 2, second.output
    assert "another deploy is running" in second.output
    # The refusal names the holder: its pid, user and start time.
    assert "pid=" in second.output and "user=" in second.output and "since=" in second.output
    assert refused_in < 10, f"the second deploy waited {refused_in:.1f}s instead of failing at once"
    assert server.running_tags() == both(V2)
    assert [e["to"]["provider"] for e in server.log()] == [V1, V2]


def test_wrong_host_key_is_refused_before_any_change(server: Server) -> None:
    deploy_ok(server, V1)
    env_before = server.env_file.read_bytes()
    ids_before = {s: c["id"] for s, c in server.containers().items()}
    incoming_before = sorted(p.name for p in (server.path / ".incoming").iterdir())
    result = server.run("deploy", tag=V2, known_hosts=server.sshd.wrong_known_hosts)
    assert result.returncode == 255, result.output
    assert "Host key verification failed" in result.output
    # Nothing was copied (no new staging dir) and nothing ran.
    assert sorted(p.name for p in (server.path / ".incoming").iterdir()) == incoming_before
    assert server.env_file.read_bytes() == env_before
    assert {s: c["id"] for s, c in server.containers().items()} == ids_before
    assert len(server.log()) == 1
    # An unknown host (no line for it at all) is refused the same way: no trust on first use.
    empty = server.path.parent / "empty_known_hosts"
    empty.write_text("")
    result = server.run("deploy", tag=V2, known_hosts=empty)
    assert result.returncode == 255, result.output
    assert "Host key verification failed" in result.output
    assert sorted(p.name for p in (server.path / ".incoming").iterdir()) == incoming_before
    assert server.env_file.read_bytes() == env_before


def test_manual_compose_up_keeps_rolled_back_version(server: Server) -> None:
    deploy_ok(server, V1)
    deploy_ok(server, V2)
    result = server.run("rollback")
    assert result.returncode == 0, result.output
    assert server.running_tags() == both(V1)
    # What a reboot or an operator does: Compose alone, reading only compose.yml and .env.
    down = server.compose("down", "--timeout", "1")
    assert down.returncode == 0, down.stderr
    up = server.compose("up", "-d", "--wait", "--wait-timeout", "60")
    assert up.returncode == 0, up.stderr
    assert server.running_tags() == both(V1)


def test_env_other_lines_byte_identical_across_everything(server: Server) -> None:
    deploy_ok(server, V1)
    before = other_lines(server)
    deploy_ok(server, V2)
    assert server.run("deploy", tag=BAD).returncode == 4
    assert server.run("deploy", tag=images.MISSING_TAG).returncode == 3
    assert server.run("rollback").returncode == 0
    assert server.run("deploy", provider_tag=V4).returncode == 0
    assert pinned(server) == (V4, V1)
    assert server.running_tags() == {P: V4, G: V1}
    assert other_lines(server) == before


def test_status_reports_pinned_running_and_history(server: Server) -> None:
    result = server.run("status")
    assert result.returncode == 6  # nothing runs yet
    assert "missing" in result.stdout
    deploy_ok(server, V1)
    result = server.run("status")
    assert result.returncode == 0, result.output
    assert f"{P}={V1}" in result.stdout
    assert "healthy" in result.stdout
    assert '"result":"ok"' in result.stdout


def test_old_images_are_pruned_beyond_the_window(server: Server) -> None:
    for tag in (V1, V2, V4):
        result = server.run("deploy", tag=tag, keep=2)
        assert result.returncode == 0, result.output

    def local(service: str, tag: str) -> bool:
        ref = images.image_ref(service, tag)
        return (
            subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0
        )

    for service in (P, G):
        assert not local(service, V1), f"{service}:{V1} should have been pruned"
        assert local(service, V2) and local(service, V4)
    # Images of other repositories are never touched.
    assert (
        subprocess.run(
            ["docker", "image", "inspect", images.BASE_IMAGE], capture_output=True
        ).returncode
        == 0
    )


def test_registry_login_reads_the_token_from_stdin(server: Server) -> None:
    token = "tok-" + "7" * 36
    result = server.run("deploy", tag=V1, registry_user="deployer", stdin=token + "\n")
    assert result.returncode == 0, result.output
    config = json.loads((server.sshd.home / "docker-config" / "config.json").read_text())
    auth = config["auths"][images.REGISTRY]["auth"]
    assert base64.b64decode(auth).decode() == f"deployer:{token}"
    # The token went in on stdin only: it is in no output and no file the script writes.
    assert token not in result.output
    assert token not in server.log_file.read_text()
    assert token not in (server.path / "deploy.lock").read_text()


def test_compose_v1_fallback_polls_health_and_rolls_back(server: Server) -> None:
    """Without the v2 plugin (forced here), docker-compose v1 applies and the script polls."""
    for name in ("compose.yml", "deploy/providers.yaml", "deploy/mcp-trader-deploy.sh"):
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
