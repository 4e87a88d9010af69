"""What the deploy scenarios share: the test versions, and how to look at a deploy directory."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp_trader import ssh

from tests.deploy import images
from tests.deploy.conftest import GATEWAY_TOKEN, Server

P = "binance-provider"
G = "mcp-gateway"
V1, V2, BAD, V4 = images.V1.tag, images.V2.tag, images.BAD.tag, images.V4.tag
BUNDLE = tuple(src for src, _ in ssh.BUNDLE_FILES)
TOKEN = "tok-" + "7" * 36


def both(tag: str) -> dict[str, str]:
    return {P: tag, G: tag}


def pinned(server: Server) -> tuple[str | None, str | None]:
    """The two pins as Compose reads them (any spelling the script accepts; the last counts)."""
    text = server.env_file.read_text()

    def last(key: str) -> str | None:
        found = re.findall(
            rf"^[ \t]*(?:export[ \t]+)?{key}[ \t]*[=:][ \t]*[\"']?([^\"'\s#]*)", text, re.M
        )
        return found[-1] if found else None

    return last("BINANCE_IMAGE_TAG"), last("GATEWAY_IMAGE_TAG")


def other_lines(server: Server) -> bytes:
    """The .env without the two tag lines: what the deploy must never change, byte for byte."""
    raw = server.env_file.read_bytes()
    kept = [
        line
        for line in raw.split(b"\n")
        if not re.match(rb"^[ \t]*(export[ \t]+)?(BINANCE|GATEWAY)_IMAGE_TAG", line)
    ]
    return b"\n".join(kept)


def deploy_ok(server: Server, tag: str, **kwargs: Any) -> None:
    result = server.run("deploy", tag=tag, **kwargs)
    assert result.returncode == 0, result.output
    assert server.running_tags() == both(tag)


def installed(server: Server) -> dict[str, bytes]:
    """The installed bundle, byte for byte."""
    files = {"compose.yml": (server.path / "compose.yml").read_bytes()}
    for f in sorted((server.path / "deploy").rglob("*")):
        if f.is_file():
            files[str(f.relative_to(server.path))] = f.read_bytes()
    return files


def bundle_copy(tmp_path: Path, edit: Callable[[str], str]) -> Path:
    """A copy of the repository's bundle with compose.yml changed by `edit`."""
    root = tmp_path / f"bundle-{len(list(tmp_path.glob('bundle-*')))}"
    for name in BUNDLE:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(images.REPO / name, root / name)
    compose = root / "compose.yml"
    compose.write_text(edit(compose.read_text()))
    return root


def container_ids(server: Server) -> dict[str, str]:
    return {s: c["id"] for s, c in server.containers().items()}


def local_image(service: str, tag: str) -> bool:
    ref = images.image_ref(service, tag)
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


# ---------------------------------------------------------------------------------------------
# MCP sessions through the published port (a handshake-era client, as the TypeScript SDK 1.x)

SECRET_FILE = Path(".deploy-state/secrets/session-secret")
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
    "Authorization": f"Bearer {GATEWAY_TOKEN}",
}


def mcp_post(server: Server, body: dict[str, Any], session: str | None = None) -> tuple[int, str]:
    """(HTTP status, Mcp-Session-Id header or "") of one JSON-RPC POST to /mcp."""
    headers = MCP_HEADERS | ({"Mcp-Session-Id": session} if session else {})
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.gateway_port}/mcp",
        data=json.dumps({"jsonrpc": "2.0", "id": 1, **body}).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            response.read()
            return int(response.status), response.headers.get("mcp-session-id", "")
    except urllib.error.HTTPError as err:
        return err.code, ""


def open_session(server: Server) -> str:
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "deploy-test", "version": "0"},
    }
    status, session = mcp_post(server, {"method": "initialize", "params": params})
    assert status == 200 and session, status
    return session


def session_answered(server: Server, session: str) -> int:
    """The status of a request in that session: 200 on any gateway that can verify its id, 404
    (the MCP spec's "start a new session") on one that cannot."""
    return mcp_post(server, {"method": "tools/list"}, session)[0]


def signed_with(session: str, secret: str) -> bool:
    """Whether the id was signed with this secret (the id format of mcp-gateway's sessions.py:
    `<nonce>.<first 32 hex digits of HMAC-SHA256(secret, "mcp-gateway session " + nonce)>`)."""
    nonce, _, signature = session.partition(".")
    mac = hmac.new(secret.encode(), b"mcp-gateway session " + nonce.encode(), hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest()[:32], signature)


def without_session_secret(compose: str) -> str:
    """compose.yml as bundles before the session secret file had it (the gateway read
    MCP_SESSION_SECRET from .env, or drew its own)."""
    text = compose.split("\nsecrets:\n", 1)[0] + "\n"
    text = re.sub(r"\n    secrets:\n(?:      .*\n)+", "\n", text)
    text = text.replace(
        "MCP_SESSION_SECRET_FILE: /run/secrets/mcp_session_secret",
        "MCP_SESSION_SECRET: ${MCP_SESSION_SECRET:-}",
    )
    assert "secrets:" not in text and "/run/secrets" not in text, text
    return text


def secret_leaks(server: Server, secret: str, *outputs: str, home: Path | None = None) -> list[str]:
    """Where the secret value shows up: run outputs, the directory's files other than its home
    (the secret file, or the .env that sets it), and every container's log and configuration."""
    home = home or server.path / SECRET_FILE
    found = [f"run output {i}" for i, out in enumerate(outputs) if secret in out]
    for f in server.path.rglob("*"):
        if f.is_file() and f != home and secret in f.read_text(errors="replace"):
            found.append(str(f))
    for c in server.containers().values():
        logs = subprocess.run(["docker", "logs", c["id"]], capture_output=True, text=True)
        config = subprocess.run(["docker", "inspect", c["id"]], capture_output=True, text=True)
        if secret in logs.stdout + logs.stderr + config.stdout:
            found.append(f"container {c['id'][:12]}")
    return found
