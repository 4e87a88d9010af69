"""Scenarios that only look at a deployed stack or are refused: they share one (v1, deployed
with a registry login) and must leave it as they found it.

Its own module, so the shared stack is down before the other scenarios run (they prune v1).
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deploy import images
from tests.deploy.conftest import Server
from tests.deploy.helpers import BUNDLE, TOKEN, V1, V2, G, P, both, container_ids, pinned

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def deployed(shared_server: Server) -> Server:
    """The shared stack with v1 deployed (logging in to the registry with a token on stdin)."""
    result = shared_server.run(
        "deploy", tag=V1, registry=images.REGISTRY, registry_user="deployer", stdin=TOKEN + "\n"
    )
    assert result.returncode == 0, result.output
    return shared_server


def test_first_deploy_is_healthy_pinned_logged_and_installed(deployed: Server) -> None:
    server = deployed
    assert server.running_tags() == both(V1)
    assert server.gateway_health() == 200
    assert pinned(server) == (V1, V1)
    # Only two lines were added; every original byte is still there, in order, including the
    # last line that had no newline (it gained one so the new lines start on their own).
    original = "\n".join(server.env_lines).encode()
    text = server.env_file.read_bytes()
    assert text.startswith(original)
    assert text[len(original) :] == f"\nBINANCE_IMAGE_TAG={V1}\nGATEWAY_IMAGE_TAG={V1}\n".encode()
    assert oct(server.env_file.stat().st_mode & 0o777) == "0o600"
    entry = server.log()[0]
    assert entry["action"] == "deploy"
    assert entry["from"] is None
    assert entry["to"] == {"provider": V1, "gateway": V1}
    assert entry["result"] == "ok"
    assert entry["sha"] == V1.removeprefix("sha-")
    assert entry["signature"] == "unsigned"
    assert isinstance(entry["duration_s"], float)
    for service, key in ((P, "provider"), (G, "gateway")):
        digests = subprocess.run(
            ["docker", "image", "inspect", "-f", "{{json .RepoDigests}}",
             images.image_ref(service, V1)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert entry["digests"][key] in digests
    # The staging directory of the run is gone; the bundle is installed and kept by its id.
    assert list((server.path / ".incoming").iterdir()) == []
    for name in BUNDLE:
        assert (server.path / name).read_bytes() == (images.REPO / name).read_bytes()
    assert (server.state_dir / "bundles" / entry["bundle"] / "compose.yml").exists()
    # The token went in on stdin only, and only to the images' registry.
    config = json.loads((server.sshd.home / "docker-config" / "config.json").read_text())
    auth = config["auths"][images.REGISTRY]["auth"]
    assert base64.b64decode(auth).decode() == f"deployer:{TOKEN}"
    for f in (server.log_file, *server.state_dir.rglob("*")):
        if f.is_file():
            assert TOKEN not in f.read_text(errors="replace"), f


def test_status_reports_pinned_running_digests_and_the_last_run(deployed: Server) -> None:
    result = deployed.run("status")
    assert result.returncode == 0, result.output
    assert f"{P}={V1}" in result.stdout
    assert "healthy" in result.stdout
    entry = deployed.log()[0]
    assert f"digest {entry['digests']['provider']}" in result.stdout
    assert f"sha {entry['sha']}, signature unsigned" in result.stdout
    assert "last run:" in result.stdout and "exit 0" in result.stdout


def test_invalid_tag_is_refused_before_anything(deployed: Server) -> None:
    env_before = deployed.env_file.read_bytes()
    log_before = deployed.log_file.read_bytes()
    # The module refuses it before building a command...
    with pytest.raises(ValueError, match="not a valid image tag"):
        deployed.run("deploy", tag="v1;rm -rf /")
    # ...and the script refuses it too when called directly on the server.
    script = deployed.path / "deploy" / "mcp-trader-deploy.sh"
    proc = subprocess.run(
        ["bash", str(script), "deploy", "--tag", "../x"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "'../x' is not a valid image tag" in proc.stderr
    assert deployed.env_file.read_bytes() == env_before
    assert deployed.log_file.read_bytes() == log_before


def test_rollback_previous_without_history_refuses(deployed: Server) -> None:
    result = deployed.run("rollback")
    assert result.returncode == 1, result.output
    assert "no deployment before the current one" in result.output
    assert deployed.running_tags() == both(V1)


def test_wrong_or_unknown_host_key_is_refused_before_any_change(deployed: Server) -> None:
    env_before = deployed.env_file.read_bytes()
    ids_before = container_ids(deployed)
    log_before = deployed.log_file.read_bytes()
    empty = deployed.path.parent / "empty_known_hosts"
    empty.write_text("")
    for known in (deployed.sshd.wrong_known_hosts, empty):
        result = deployed.run("deploy", tag=V2, known_hosts=known)
        assert result.returncode == 255, result.output
        assert "Host key verification failed" in result.output
        # Nothing was copied (no staging dir) and nothing ran.
        assert list((deployed.path / ".incoming").iterdir()) == []
        assert deployed.env_file.read_bytes() == env_before
        assert container_ids(deployed) == ids_before
        assert deployed.log_file.read_bytes() == log_before


class FakeRegistry:
    """An HTTP 'registry' that refuses every login and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append((self.path, self.headers.get("Authorization", "")))
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                self.send_header("Docker-Distribution-API-Version", "registry/2.0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()
    try:
        yield fake
    finally:
        fake.close()


def test_the_token_goes_only_to_the_images_registry(
    deployed: Server, fake_registry: FakeRegistry
) -> None:
    env_before = deployed.env_file.read_bytes()
    ids_before = container_ids(deployed)
    elsewhere = f"{fake_registry.host}/acme/mcp-trader"
    deployed.env_file.write_bytes(
        env_before.replace(
            f"IMAGE_PREFIX={images.PREFIX}".encode(), f"IMAGE_PREFIX={elsewhere}".encode()
        )
    )
    try:
        # .env names another registry than the one the token is for: refused, nothing sent.
        result = deployed.run(
            "deploy", tag=V2, registry=images.REGISTRY, registry_user="deployer", stdin=TOKEN
        )
        assert result.returncode == 1, result.output
        assert f"refusing to send the token for {images.REGISTRY} to {fake_registry.host}" in (
            result.output
        )
        assert fake_registry.requests == []
        # The token is for that registry, which refuses the login: recorded, nothing changed.
        result = deployed.run(
            "deploy", tag=V2, registry=fake_registry.host, registry_user="deployer", stdin=TOKEN
        )
        assert result.returncode == 3, result.output
        assert "registry login" in result.output and "nothing was changed" in result.output
        assert deployed.log()[-1]["result"] == "login-failed"
        assert TOKEN not in result.output
    finally:
        deployed.env_file.write_bytes(env_before)
    assert container_ids(deployed) == ids_before
    assert deployed.running_tags() == both(V1)
