"""What the deploy scenarios share: the test versions, and how to look at a deploy directory."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mcp_trader import ssh

from tests.deploy import images
from tests.deploy.conftest import Server

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
