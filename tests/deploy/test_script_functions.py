"""The server script's functions, one concern at a time, without Docker (milliseconds each).

Each test sources deploy/mcp-trader-deploy.sh in a fresh bash (its `main` guard keeps it from
running) and calls its functions on files in a temp directory: the .env reader and writer, the
log reader, the history and prune rules, the bundle switch, the staging guard, the lock and its
holder, the detached worker. The Docker scenarios (test_deploy_scenarios.py) run the same code
for real; these pin each rule down on its own, including the inputs a scenario cannot stage
cheaply. Where Compose's own reading is the reference (the .env forms), `docker compose config`
is asked too, when the CLI is installed (it needs no daemon).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.deploy.images import REPO

SCRIPT = REPO / "deploy" / "mcp-trader-deploy.sh"
P_VAR, G_VAR = "BINANCE_IMAGE_TAG", "GATEWAY_IMAGE_TAG"
DIGEST = "sha256:" + "ab" * 32


def sh(
    code: str, *, cwd: Path | None = None, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run bash `code` with the script's functions loaded (strict mode, as `main` sets it)."""
    proc = subprocess.run(
        ["bash", "-c", f"set -uo pipefail; export LC_ALL=C; source {q(SCRIPT)}\n{code}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def q(path: Path | str) -> str:
    """A path quoted for bash."""
    return "'" + str(path).replace("'", "'\\''") + "'"


# ---------------------------------------------------------------------------------------------
# .env


def scan(env: Path) -> subprocess.CompletedProcess[str]:
    return sh(
        f"""set_dir {q(env.parent)}
        if env_scan "$env_file" && env_check_pins; then
          printf '%s|%s|%s|%s\\n' "${{env_val[{P_VAR}]}}" "${{env_val[{G_VAR}]}}" \
            "${{env_idx[{P_VAR}]}}" "${{env_idx[{G_VAR}]}}"
        else
          printf 'REFUSED %s\\n' "$problem"
        fi""",
    )


def render(env: Path, p: str, g: str) -> bytes:
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f"set -uo pipefail; source {q(SCRIPT)}; set_dir {q(env.parent)}; "
            f'env_scan "$env_file" || exit 9; env_render {p} {g}',
        ],
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# Each accepted spelling of a tag line: (the line, what Compose reads, the line after pinning v9).
FORMS = [
    ("K=v1", "v1", "K=v9"),
    ("export K=v1", "v1", "export K=v9"),
    ("export \tK=v1", "v1", "export \tK=v9"),
    ("K = v1", "v1", "K = v9"),
    ("K =v1   ", "v1", "K =v9   "),
    ("K: v1", "v1", "K: v9"),
    ("  K=v1", "v1", "  K=v9"),
    ('K="v1"', "v1", 'K="v9"'),
    ("K='v1'", "v1", "K='v9'"),
    ("K=v1 # pinned by the deploy", "v1", "K=v9 # pinned by the deploy"),
    ('K = "v1"  # quoted, commented', "v1", 'K = "v9"  # quoted, commented'),
    ("K='v1'#c", "v1", "K='v9'#c"),
    ("K=", "", "K=v9"),
    ('K=""', "", 'K="v9"'),
    (f"K=v1@{DIGEST}", f"v1@{DIGEST}", "K=v9"),
]


@pytest.mark.parametrize(("line", "value", "pinned"), FORMS)
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_env_forms_are_read_and_rewritten_in_their_own_form(
    tmp_path: Path, line: str, value: str, pinned: str, eol: str
) -> None:
    other = f"# settings{eol}IMAGE_PREFIX=registry.example/acme{eol}"
    text = other + line.replace("K", P_VAR, 1) + eol + f"{G_VAR}=g1{eol}" + "LAST=kept"
    env = tmp_path / ".env"
    env.write_bytes(text.encode())
    assert scan(env).stdout == f"{value}|g1|2|3\n"
    # Rendering the same values gives the file back byte for byte...
    if value:
        assert render(env, value, "g1") == text.encode()
    # ...and new values change the values only, in the line's own form (CR kept).
    expected = other + pinned.replace("K", P_VAR, 1) + eol + f"{G_VAR}=g9{eol}" + "LAST=kept"
    assert render(env, "v9", "g9") == expected.encode()


def test_env_last_assignment_counts_and_multiline_values_are_skipped(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(
        textwrap.dedent(
            f"""\
            {P_VAR}=old
            CERT="-----BEGIN CERT-----
            {P_VAR}=not-a-line-of-its-own
            -----END CERT-----"
            {P_VAR}=v2
            NOTE='it''s'
            {G_VAR}=g2
            """
        )
    )
    assert scan(env).stdout == "v2|g2|4|6\n"
    out = render(env, "v3", "g3").decode()
    assert out.splitlines()[0] == f"{P_VAR}=old"  # only the assignment that counts changes
    assert f"{P_VAR}=not-a-line-of-its-own" in out
    assert out.splitlines()[4] == f"{P_VAR}=v3"


def test_env_missing_keys_are_appended_in_the_files_line_ending(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(b"A=1\r\nB=2")  # CRLF, no newline at the end
    assert render(env, "v1", "g1") == (f"A=1\r\nB=2\r\n{P_VAR}=v1\r\n{G_VAR}=g1\r\n".encode())
    env.write_bytes(b"")
    assert render(env, "v1", "g1") == f"{P_VAR}=v1\n{G_VAR}=g1\n".encode()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (P_VAR, "has no value"),
        (f'{P_VAR}="v1', "does not end on its line"),
        (f'{P_VAR}="v1" trailing', "unexpected text after the quoted value"),
        (f"{P_VAR}=${{TAG:-v1}}", "not a literal image tag"),
        (f"{P_VAR}=v1 v2", "not a literal image tag"),
        (f"{P_VAR}=v1#comment-without-a-space", "not a literal image tag"),
        (f"{P_VAR}=v1\t# a tab is not a comment start for Compose", "not a literal image tag"),
    ],
)
def test_env_forms_that_cannot_be_rewritten_are_refused_with_the_line(
    tmp_path: Path, line: str, message: str
) -> None:
    env = tmp_path / ".env"
    env.write_text(f"A=1\n{line}\n")
    out = scan(env).stdout
    assert out.startswith("REFUSED "), out
    assert message in out and "line 2" in out


def test_env_with_nul_bytes_is_refused(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(f"{P_VAR}=v1\n\0\0\n".encode())
    assert "NUL bytes" in scan(env).stdout


def compose_values(env: Path, keys: list[str]) -> dict[str, str]:
    """What Compose itself reads for each key from `env` (one interpolation per service)."""
    compose = env.parent / "compose.yml"
    compose.write_text(
        "services:\n" + "".join(f'  s{i}:\n    image: "x/y:${{{k}}}"\n' for i, k in enumerate(keys))
    )
    proc = subprocess.run(
        ["docker", "compose", "--project-directory", str(env.parent), "-f", str(compose),
         "config", "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    services = json.loads(proc.stdout)["services"]
    return {k: services[f"s{i}"]["image"].removeprefix("x/y:") for i, k in enumerate(keys)}


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose CLI is not installed",
)
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_env_reading_agrees_with_compose(tmp_path: Path, eol: str) -> None:
    """Every accepted spelling, read by the script and by Compose, in one file."""
    keys = [f"K{i}" for i in range(len(FORMS))]
    env = tmp_path / ".env"
    env.write_bytes(
        "".join(
            line.replace("K", key, 1) + eol for key, (line, _, _) in zip(keys, FORMS, strict=True)
        ).encode()
    )
    ours = sh(
        f'set_dir {q(tmp_path)}; env_scan "$env_file"; '
        f'for k in {" ".join(keys)}; do printf \'%s=%s\\n\' "$k" "${{env_all[$k]}}"; done'
    ).stdout
    assert dict(line.split("=", 1) for line in ours.splitlines()) == compose_values(env, keys)


def pin(env: Path, p: str = "v2", g: str = "g2", *, user: str | None = None) -> str:
    code = (
        f'set_dir {q(env.parent)}; env_scan "$env_file" || exit 9; '
        'env_preflight || { echo "REFUSED $problem"; exit 0; }; '
        f"env_pin {p} {g} && echo pinned"
    )
    if user is None:
        return sh(code).stdout
    proc = as_user(user, code)
    return proc.stdout + proc.stderr


def as_user(user: str, code: str) -> subprocess.CompletedProcess[str]:
    """`code` with the script's functions loaded, run as `user`. The checkout may be private to
    root (a clone under a 0700 temp dir): `user` sources a copy of deploy/ (the script loads
    rollout.sh from beside itself)."""
    readable = Path(tempfile.mkdtemp(prefix="mcp-trader-script-"))
    try:
        readable.chmod(0o755)
        script = shutil.copytree(SCRIPT.parent, readable / "deploy") / SCRIPT.name
        return subprocess.run(
            ["runuser", "-u", user, "--", "bash", "-c",
             f"set -uo pipefail; export LC_ALL=C; source {q(script)}; {code}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(readable)


def test_env_pin_keeps_mode_owner_and_every_other_byte(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_bytes(f"# c\r\nexport {P_VAR}=v1\r\nSECRET='a b'\r\n{G_VAR} = g1 # x\r\n".encode())
    env.chmod(0o640)
    os.chown(env, 1234, 2345)
    assert pin(env) == "pinned\n"
    assert (
        env.read_bytes()
        == f"# c\r\nexport {P_VAR}=v2\r\nSECRET='a b'\r\n{G_VAR} = g2 # x\r\n".encode()
    )
    st = env.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 1234, 2345)
    assert [p.name for p in tmp_path.iterdir()] == [".env"]  # no temp file left


def test_env_pin_writes_through_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "config" / "mcp-trader.env"
    real.parent.mkdir()
    real.write_text(f"A=1\n{P_VAR}=v1\n{G_VAR}=g1\n")
    real.chmod(0o600)
    link = tmp_path / "srv" / ".env"
    link.parent.mkdir()
    link.symlink_to(os.path.relpath(real, link.parent))
    assert pin(link) == "pinned\n"
    assert link.is_symlink()
    assert real.read_text() == f"A=1\n{P_VAR}=v2\n{G_VAR}=g2\n"
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


def test_env_pin_leaves_an_already_pinned_file_untouched(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"{P_VAR}=v2\n{G_VAR}=g2\n")
    before = env.stat().st_ino
    assert pin(env) == "pinned\n"
    assert env.stat().st_ino == before


def test_env_pin_creates_a_private_env_when_there_is_none(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    assert pin(env) == "pinned\n"
    assert env.read_text() == f"{P_VAR}=v2\n{G_VAR}=g2\n"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600


def test_a_failed_write_never_replaces_env(tmp_path: Path) -> None:
    """A write cut short (a full disk; here a file-size limit) leaves .env as it was."""
    env = tmp_path / ".env"
    original = f"{P_VAR}=v1\n{G_VAR}=g1\n" + "".join(f"SETTING_{i}={'x' * 60}\n" for i in range(40))
    env.write_text(original)
    out = sh(
        f'set_dir {q(tmp_path)}; env_scan "$env_file"; trap "" XFSZ; ulimit -f 2; '
        "env_pin v2 g2 && echo pinned || echo failed"
    ).stdout
    assert out.endswith("failed\n"), out
    assert env.read_text() == original
    assert [p.name for p in tmp_path.iterdir()] == [".env"]


def test_env_preflight_refuses_what_a_rewrite_could_not_keep(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text(f"{P_VAR}=v1\n")
    (tmp_path / "second-link").hardlink_to(env)
    assert "2 hard links" in pin(env)
    (tmp_path / "second-link").unlink()
    dangling = tmp_path / "d" / ".env"
    dangling.parent.mkdir()
    dangling.symlink_to(tmp_path / "missing")
    assert "which does not exist" in pin(dangling)
    # Not the owner (and not root): the rewrite could not keep the owner.
    if shutil.which("runuser") and os.geteuid() == 0:
        # pytest's temp dirs are private to root: this one must be reachable by `nobody`.
        shared = Path(tempfile.mkdtemp(prefix="mcp-trader-env-"))
        try:
            shared.chmod(0o777)
            (shared / ".env").write_text(f"{P_VAR}=v1\n")
            (shared / ".env").chmod(0o666)
            out = pin(shared / ".env", user="nobody")
            assert "is owned by uid 0" in out, out
            assert (shared / ".env").read_text() == f"{P_VAR}=v1\n"
        finally:
            shutil.rmtree(shared)


# ---------------------------------------------------------------------------------------------
# deployments.log


def rec(
    to: str,
    *,
    result: str = "ok",
    action: str = "deploy",
    frm: str | None = None,
    bundle: str | None = None,
) -> str:
    """A record as the script writes it (bundle=None: the previous script's format)."""
    f = "null" if frm is None else f'{{"provider":"{frm}","gateway":"{frm}"}}'
    line = (
        f'{{"time":"2026-11-28T10:00:00Z","action":"{action}","user":"deploy",'
        + ("" if bundle is None else '"run":"r1",')
        + f'"from":{f},"to":{{"provider":"{to}","gateway":"{to}"}},"result":"{result}",'
        f'"duration_s":7.412,"sha":"1a2b3c4"'
    )
    if bundle is not None:
        line += f',"bundle":"{bundle}","digests":null,"signature":"unsigned"'
    return line + "}"


def records(log: bytes, tmp_path: Path) -> list[list[str]]:
    (tmp_path / "deployments.log").write_bytes(log)
    out = sh(f"set_dir {q(tmp_path)}; log_records").stdout
    return [line.split("\t") for line in out.splitlines()]


def test_log_reader_reads_both_formats_and_reports_what_is_not_a_record(tmp_path: Path) -> None:
    log = (
        "\n".join([rec("v1"), rec("v2", bundle="b2"), "", "garbage", rec("v3")[:50]]).encode()
        + b"\0" * 16
    )
    rows = records(log, tmp_path)
    assert [r[:2] for r in rows] == [["1", "ok"], ["2", "ok"], ["4", "corrupt"], ["5", "corrupt"]]
    assert rows[0][2:9] == ["deploy", "ok", "-", "-", "v1", "v1", "1a2b3c4"]
    assert rows[1][10] == "b2" and rows[1][13] == "unsigned"
    assert "not a record" in rows[2][2]
    assert "NUL bytes" in rows[3][2]
    assert records(b"", tmp_path) == []


def test_log_reader_reads_the_verified_commits_and_records_without_them(tmp_path: Path) -> None:
    commit = "1a2b3c4" + "0" * 33
    with_commits = (
        rec("v4", bundle="b4")[:-1] + f',"commits":{{"provider":"{commit}","gateway":""}}}}'
    )
    bad = rec("v5", bundle="b5")[:-1] + ',"commits":{"provider":"not hex","gateway":""}}'
    rows = records("\n".join([rec("v3", bundle="b3"), with_commits, bad]).encode(), tmp_path)
    assert [r[1] for r in rows] == ["ok", "ok", "corrupt"]
    assert rows[0][15:] == ["-", "-"]  # an older record: no commits, still read
    assert rows[1][15:] == [commit, "-"]


def test_log_append_finishes_a_partial_last_line_first(tmp_path: Path) -> None:
    log = tmp_path / "deployments.log"
    for tail in (rec("v2")[:40].encode(), b"\0" * 64):
        log.write_bytes(rec("v1").encode() + b"\n" + tail)
        sh(f"set_dir {q(tmp_path)}; log_append {q(rec('v3'))}")
        lines = log.read_bytes().split(b"\n")
        assert lines == [rec("v1").encode(), tail, rec("v3").encode(), b""]


def history(log: str, tmp_path: Path, current: str) -> str:
    (tmp_path / "deployments.log").write_text(log)
    return sh(
        f"set_dir {q(tmp_path)}; "
        f'if previous_target {current} {current}; then echo "$tgt_p $tgt_line $tgt_b"; '
        'else echo "REFUSED $problem"; fi'
    ).stdout.strip()


def test_rollback_previous_walks_back_and_starts_from_what_runs(tmp_path: Path) -> None:
    log = (
        "\n".join(
            [
                rec("v1"),
                rec("v2", bundle="b2"),
                rec("bad", result="unhealthy-rolled-back"),
                rec("v3"),
            ]
        )
        + "\n"
    )
    assert history(log, tmp_path, "v3") == "v2 2 b2"
    # v4 runs but was never recorded (an interrupted run): back to the last recorded one.
    assert history(log, tmp_path, "v4") == "v3 4"
    popped = log + rec("v2", action="rollback-previous") + "\n"
    assert history(popped, tmp_path, "v2") == "v1 1"
    assert "no deployment before" in history(rec("v1") + "\n", tmp_path, "v1")


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda r: r[:60], id="truncated"),
        pytest.param(lambda r: "\0" * 300, id="nul-padded"),
        pytest.param(lambda r: r.replace('"result"', '"rezult"'), id="edited"),
    ],
)
def test_rollback_previous_never_guesses_past_a_corrupt_line(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    log = "\n".join([rec("v1"), rec("v2"), damage(rec("v3"))]) + "\n"
    out = history(log, tmp_path, "v3")
    assert out.startswith("REFUSED"), out
    assert "line 3 is not a complete record" in out and "rollback --to" in out
    assert "v2/v2 (line 2)" in out
    # A corrupt line older than the target does not matter.
    log = "\n".join([damage(rec("v0")), rec("v1"), rec("v2")]) + "\n"
    assert history(log, tmp_path, "v2") == "v1 2"


def prune(log: str, tmp_path: Path, keep: int, *protected: str) -> list[str]:
    (tmp_path / "deployments.log").write_text(log)
    out = sh(f"set_dir {q(tmp_path)}; prune_plan {keep} {' '.join(protected)}")
    return sorted(out.stdout.splitlines())


def test_prune_only_what_this_directorys_history_no_longer_needs(tmp_path: Path) -> None:
    log = "\n".join(
        [rec("v1"), rec("v2", frm="v1"), rec("bad", frm="v2", result="unhealthy-rolled-back"),
         rec("v3", frm="v2"), rec("v4", frm="v3")]
    ) + "\n"  # fmt: skip
    assert prune(log, tmp_path, 2) == sorted(
        ["provider v1", "gateway v1", "provider v2", "gateway v2", "provider bad", "gateway bad"]
    )
    assert prune(log, tmp_path, 2, "v2") == sorted(
        ["provider v1", "gateway v1", "provider bad", "gateway bad"]
    )
    assert prune(log, tmp_path, 10) == ["gateway bad", "provider bad"]
    # Nothing at all when the history is empty, or when the window is not fully readable.
    assert prune("", tmp_path, 1) == []
    assert prune(log + rec("v5")[:30] + "\n" + rec("v6") + "\n", tmp_path, 2) == []


# ---------------------------------------------------------------------------------------------
# Bundles, staging, references


def make_bundle(d: Path, compose: str = "name: x\n", script: str = "echo\n") -> Path:
    (d / "deploy").mkdir(parents=True)
    (d / "compose.yml").write_text(compose)
    (d / "deploy" / "mcp-trader-deploy.sh").write_text(script)
    (d / "deploy" / "providers.yaml").write_text("providers: []\n")
    return d


def test_bundle_id_follows_the_contents(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a")
    b = make_bundle(tmp_path / "b")
    ids = sh(f"bundle_id {q(a)}; echo; bundle_id {q(b)}").stdout.split()
    assert ids[0] == ids[1] and len(ids[0]) == 16
    (b / "deploy" / "extra.conf").write_text("x")
    assert sh(f"bundle_id {q(b)}").stdout != ids[0]
    assert sh(f"bundle_id {q(tmp_path / 'none')}", check=False).returncode != 0


def test_bundle_switch_and_restore_are_renames_that_round_trip(tmp_path: Path) -> None:
    srv = make_bundle(tmp_path / "srv", compose="old\n", script="old\n")
    (srv / ".env").write_text("A=1\n")
    nxt = make_bundle(tmp_path / "srv" / ".incoming" / "r1", compose="new\n", script="new\n")
    displaced = srv / ".deploy-state" / "displaced-r1"
    displaced.mkdir(parents=True)
    old_inode = (srv / "compose.yml").stat().st_ino
    sh(f"set_dir {q(srv)}; bundle_switch {q(nxt)} {q(displaced)}")
    assert (srv / "compose.yml").read_text() == "new\n"
    assert (srv / "deploy" / "mcp-trader-deploy.sh").read_text() == "new\n"
    assert (displaced / "compose.yml").stat().st_ino == old_inode
    sh(f"set_dir {q(srv)}; bundle_restore {q(displaced)} 1")
    assert (srv / "compose.yml").read_text() == "old\n"
    assert (srv / "deploy" / "mcp-trader-deploy.sh").read_text() == "old\n"
    assert (srv / ".env").read_text() == "A=1\n"
    # With nothing installed before, restoring removes what the switch installed.
    fresh = tmp_path / "fresh"
    (fresh / ".deploy-state" / "d").mkdir(parents=True)
    nxt2 = make_bundle(fresh / ".incoming" / "r2")
    sh(f"set_dir {q(fresh)}; bundle_switch {q(nxt2)} {q(fresh / '.deploy-state' / 'd')}")
    assert (fresh / "compose.yml").exists()
    sh(f"set_dir {q(fresh)}; bundle_restore {q(fresh / '.deploy-state' / 'd')} 0")
    assert not (fresh / "compose.yml").exists() and not (fresh / "deploy").exists()


@pytest.mark.parametrize(
    ("phase", "renames", "installed"),
    [
        # Killed between the renames: the new deploy/ beside the old compose.yml, neither bundle.
        ("switch", 2, "old"),
        ("switch", 0, "old"),
        # Killed in the automatic rollback before it had put the previous bundle back.
        ("rollback", 4, "old"),
        # Killed after a finished switch: the running containers came from the new bundle.
        ("up", 4, "new"),
        ("pin", 4, "new"),
    ],
)
def test_reconcile_never_leaves_a_mix_of_two_bundles(
    tmp_path: Path, phase: str, renames: int, installed: str
) -> None:
    srv = make_bundle(tmp_path / "srv", compose="old\n", script="old\n")
    nxt = make_bundle(srv / ".incoming" / "dead", compose="new\n", script="new\n")
    # The interrupted run, as far as it got: its intent (no process left), and the first
    # `renames` of bundle_switch's renames (deploy/ out, deploy/ in, compose.yml linked, in).
    steps = [
        'mv -T "$dir/deploy" "$displaced/deploy"',
        f'mv -T {q(nxt / "deploy")} "$dir/deploy"',
        'ln "$dir/compose.yml" "$displaced/compose.yml"',
        f'mv -f -T {q(nxt / "compose.yml")} "$dir/compose.yml"',
    ]
    out = sh(
        f"""set_dir {q(srv)}; mkdir -p "$state_dir"
        run_id=dead action=deploy from_p=v1 from_g=v1 to_p=v2 to_g=v2 staged={q(nxt)}
        from_bundle=$(bundle_id "$dir") to_bundle=$(bundle_id {q(nxt)})
        displaced="$state_dir/displaced-dead"; mkdir -p "$displaced"
        {"; ".join(steps[:renames]) or ":"}
        intent_write {phase}; sed -i 's/^pid=.*/pid=/' "$intent_file"
        echo "$from_bundle $to_bundle"
        run_id=next action=deploy staged="" signature=unsigned started=$(now_s)
        reconcile; bundle_id "$dir"; echo
        [[ ! -e $intent_file && ! -e $displaced ]] && echo clean"""
    ).stdout.split()
    old_id, new_id, now_id, clean = out
    assert now_id == (old_id if installed == "old" else new_id)
    assert (srv / "compose.yml").read_text() == f"{installed}\n"
    assert (srv / "deploy" / "mcp-trader-deploy.sh").read_text() == f"{installed}\n"
    assert clean == "clean"
    (entry,) = [json.loads(line) for line in (srv / "deployments.log").read_text().splitlines()]
    assert (entry["run"], entry["result"], entry["to"]["provider"]) == ("dead", "interrupted", "v2")
    assert not nxt.exists()


@pytest.mark.parametrize(
    ("worker", "code", "named"), [(1, 1, True), (1, 2, True), (0, 3, True), (0, 1, False)]
)
def test_a_failure_message_names_what_runs_now(
    tmp_path: Path, worker: int, code: int, named: bool
) -> None:
    # No compose.yml here: nothing can run, and the message says so (Docker is not asked).
    proc = sh(f"set_dir {q(tmp_path)}; worker={worker}; finish {code} 'it failed'", check=False)
    assert proc.returncode == code
    line = proc.stderr.strip().splitlines()[-1]
    if named:
        assert line.startswith("[mcp-trader-deploy] error: it failed; running now: "), line
        assert line.endswith(("running now: nothing", ")")), line
    else:
        assert line == "[mcp-trader-deploy] error: it failed"
    # Named once only: a message that already says what runs is left as it is.
    proc = sh(f"set_dir {q(tmp_path)}; worker=1; finish 5 'x; running now: y'", check=False)
    assert proc.stderr.strip().endswith("error: x; running now: y")


@pytest.mark.parametrize(
    "staged",
    [
        pytest.param(lambda d: d, id="the-deploy-directory"),
        pytest.param(lambda d: d / ".incoming", id="the-incoming-directory"),
        pytest.param(lambda d: d.parent / "elsewhere", id="outside"),
        pytest.param(lambda d: d / ".incoming" / "link", id="a-symlink"),
        pytest.param(lambda d: d / ".incoming" / "copy", id="a-copy-of-a-deploy-directory"),
    ],
)
def test_staged_must_be_a_fresh_staging_subdirectory(tmp_path: Path, staged) -> None:  # type: ignore[no-untyped-def]
    srv = make_bundle(tmp_path / "srv")
    (srv / ".env").write_text("A=1\n")
    (srv / "deployments.log").write_text(rec("v1") + "\n")
    make_bundle(tmp_path / "elsewhere")
    (srv / ".incoming").mkdir()
    (srv / ".incoming" / "link").symlink_to(tmp_path / "elsewhere")
    copy = make_bundle(srv / ".incoming" / "copy")
    (copy / ".env").write_text("B=2\n")
    target: Path = staged(srv)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    # A rejected command too: the guard runs before anything else, and removes nothing.
    for argv in (["status"], ["deploy", "--tag", "../bad"]):
        proc = subprocess.run(
            ["bash", str(SCRIPT), "--dir", str(srv), "--staged", str(target), *argv],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert (srv / ".env").read_text() == "A=1\n"


def test_a_real_staging_directory_is_removed_when_the_command_ends(tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    stage = make_bundle(srv / ".incoming" / "run1-0a0b0c0d")
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dir", str(srv), "--staged", str(stage), "deploy", "--tag", "-x"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert not stage.exists()


@pytest.mark.parametrize(
    ("ref", "repo", "tag", "registry"),
    [
        ("ghcr.io/acme/app/binance-provider:sha-1a2b3c4", "ghcr.io/acme/app/binance-provider",
         "sha-1a2b3c4", "ghcr.io"),
        (f"127.0.0.1:5000/a/mcp-gateway:v1@{DIGEST}", "127.0.0.1:5000/a/mcp-gateway",
         f"v1@{DIGEST}", "127.0.0.1:5000"),
        ("localhost/x:1", "localhost/x", "1", "localhost"),
        ("acme/app", "acme/app", "latest", "docker.io"),
        ("registry:5000/app", "registry:5000/app", "latest", "registry:5000"),
    ],
)  # fmt: skip
def test_image_references(ref: str, repo: str, tag: str, registry: str) -> None:
    out = sh(f"ref_repo {q(ref)}; echo; ref_tag {q(ref)}; echo; ref_registry {q(ref)}").stdout
    assert out.split("\n") == [repo, tag, registry]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--registry-user", "me", "deploy", "--tag", "v1"], "needs --registry HOST"),
        (["--registry", "ghcr.io", "--registry-user", "a b", "status"], "'a b' is not a valid"),
        (["--registry", "ghcr.io/x", "status"], "is not a registry"),
        (["--signature", "trusted", "status"], "not one of: verified, unsigned"),
        (["deploy", "--tag", f"v1@sha256:{'A' * 64}"], "is not a valid image tag"),
        (["rollback", "--to", "v1@sha256:abc"], "is not a valid image tag"),
        (["--run-id", "../x", "status"], "--run-id '../x' is not valid"),
        (["attach", "--run", "a/b"], "is not a run id"),
    ],
)
def test_arguments_are_refused_before_anything(
    tmp_path: Path, argv: list[str], message: str
) -> None:
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--dir", str(tmp_path), *argv],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert message in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_digest_pinned_tags_are_accepted() -> None:
    out = sh(
        f"parse_args deploy --tag v1@{DIGEST} --gateway-tag g1; "
        'echo "$req_provider $req_gateway $signature"'
    )
    assert out.stdout == f"v1@{DIGEST} g1 unsigned\n"


def test_a_bots_registry_user_name_is_accepted() -> None:
    # github.actor for GitHub's own bots; the module's tags.validate_registry_username agrees.
    out = sh('parse_args --registry ghcr.io --registry-user "github-actions[bot]" status; '
             'echo "$registry_user"')  # fmt: skip
    assert out.stdout == "github-actions[bot]\n"


# ---------------------------------------------------------------------------------------------
# The gateways' session secret

SECRET_REL = ".deploy-state/secrets/session-secret"


def test_compose_mounts_the_file_the_script_makes() -> None:
    compose = yaml.safe_load((REPO / "compose.yml").read_text())
    assert compose["secrets"]["mcp_session_secret"]["file"] == f"./{SECRET_REL}"
    assert sh('set_dir /srv; printf %s "$secret_file"').stdout == f"/srv/{SECRET_REL}"
    gateway = compose["services"]["mcp-gateway"]
    target = gateway["secrets"][0]["target"]
    assert gateway["environment"]["MCP_SESSION_SECRET_FILE"] == f"/run/secrets/{target}"
    # The secret reaches the gateway as that file only: never as an environment variable.
    assert "MCP_SESSION_SECRET" not in gateway["environment"]


def test_the_session_secret_is_made_once_private_and_never_replaced(tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    srv.mkdir()
    out = subprocess.run(
        ["bash", str(SCRIPT), "--dir", str(srv), "secret"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    secret = srv / SECRET_REL
    assert out.stdout == f"{secret}\n"
    value = secret.read_text()
    assert len(value) == 65 and value.endswith("\n")
    int(value[:64], 16)  # 32 random bytes as hex: what the gateway accepts (>= 32, no blanks)
    st = secret.stat()
    # World-readable for the gateway's uid (a bind mount keeps host modes); its directory is
    # what keeps it from other host users.
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o444, os.geteuid())
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert value.strip() not in out.stdout + out.stderr
    # Idempotent: never regenerated, never rewritten (same inode, same bytes), concurrently too.
    inode = st.st_ino
    runs = [
        subprocess.Popen(["bash", str(SCRIPT), "--dir", str(srv), "secret"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    for run in runs:
        stdout, stderr = run.communicate(timeout=30)
        assert run.returncode == 0, stderr
        assert value.strip() not in stdout + stderr
    assert secret.stat().st_ino == inode and secret.read_text() == value
    assert sorted(p.name for p in secret.parent.iterdir()) == ["session-secret"]
    # Five makers racing on a fresh directory end with one secret, and no temp file.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    code = f"set_dir {q(fresh)}; for i in 1 2 3 4 5; do secret_ensure & done; wait"
    sh(code)
    assert sorted(p.name for p in (fresh / SECRET_REL).parent.iterdir()) == ["session-secret"]
    assert len((fresh / SECRET_REL).read_text()) == 65


def test_a_secret_that_cannot_be_kept_private_or_used_is_refused(tmp_path: Path) -> None:
    def preflight(srv: Path) -> str:
        code = f'set_dir {q(srv)}; secret_preflight && echo ok || echo "REFUSED $problem"'
        return sh(code).stdout

    srv = tmp_path / "srv"
    secret = srv / SECRET_REL
    secret.parent.mkdir(parents=True)
    secret.parent.chmod(0o755)
    assert f"REFUSED {secret.parent} is open to other users (mode 755)" in preflight(srv)
    secret.parent.chmod(0o700)
    secret.write_text("short\n")
    assert "is not a session secret" in preflight(srv)
    assert "short" not in preflight(srv)  # the value is never echoed, even a bad one
    secret.write_text("x" * 40)  # one line, no newline: as good as the generated one
    assert preflight(srv) == "ok\n"
    secret.unlink()
    secret.symlink_to(tmp_path / "elsewhere")
    assert "is not a regular file" in preflight(srv)


def test_a_state_directory_the_deploy_user_cannot_write_is_refused(tmp_path: Path) -> None:
    if not (shutil.which("runuser") and os.geteuid() == 0):
        pytest.skip("needs root and runuser to act as another user")
    shared = Path(tempfile.mkdtemp(prefix="mcp-trader-secret-"))
    try:
        shared.chmod(0o755)
        (shared / ".deploy-state").mkdir(mode=0o755)
        proc = as_user(
            "nobody",
            f'set_dir {q(shared)}; secret_preflight && echo ok || echo "REFUSED $problem"',
        )
        assert proc.stdout == (
            f"REFUSED cannot make the gateways' session secret {shared / SECRET_REL}: "
            f"{shared / '.deploy-state'} is not writable by the deploy user "
            f"(uid {pwd.getpwnam('nobody').pw_uid})\n"
        ), proc.stdout + proc.stderr
        # The command says so, with exit 1, and makes nothing.
        proc = as_user("nobody", f"main --dir {q(shared)} secret")
        assert proc.returncode == 1, proc.stderr
        assert "is not writable by the deploy user" in proc.stderr
        assert list((shared / ".deploy-state").iterdir()) == []
    finally:
        shutil.rmtree(shared)


def test_the_compose_v1_copy_hands_the_gateway_the_generated_file(tmp_path: Path) -> None:
    """Compose v1 knows neither `${VAR:+...}` nor secrets from the environment."""
    shutil.copy2(REPO / "compose.yml", tmp_path / "compose.yml")
    sh(f"set_dir {q(tmp_path)}; compose_v=1; compose_cmd=(true); "
       f"compose_at {q(tmp_path / 'compose.yml')} v1 v1 config")  # fmt: skip
    copy = yaml.safe_load((tmp_path / ".compose-v1.yml").read_text())
    assert "name" not in copy
    assert list(copy["secrets"]) == ["mcp_session_secret"]
    gateway = copy["services"]["mcp-gateway"]
    assert gateway["secrets"] == [{"source": "mcp_session_secret", "target": "mcp_session_secret"}]
    if shutil.which("docker-compose"):
        (tmp_path / ".env").write_text("MCP_SESSION_SECRET=" + "s" * 40 + "\n")
        proc = subprocess.run(
            ["docker-compose", "-f", str(tmp_path / ".compose-v1.yml"), "config", "-q"],
            cwd=tmp_path, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr


def test_compose_file_overrides_come_from_the_bundle_being_run(tmp_path: Path) -> None:
    """COMPOSE_FILE in .env (README "Without the proxy"): Compose ignores it once -f is given,
    so the script passes each file itself, the bundle's own from the bundle it checks or runs."""
    srv = tmp_path / "srv"
    stage = make_bundle(srv / ".incoming" / "r1")
    (stage / "deploy" / "compose.no-proxy.yml").write_text("services: {}\n")
    env = srv / ".env"

    def argv(bundle: Path) -> list[str]:
        code = (
            f'set_dir {q(srv)}; env_scan "$env_file"; compose_v=2; compose_cmd=(printf "%s\\n"); '
            f"compose_at {q(bundle / 'compose.yml')} p g config"
        )
        return sh(code).stdout.split()

    env.write_text("A=1\n")
    assert argv(stage) == ["--project-directory", str(srv), "-f", str(stage / "compose.yml"),
                           "config"]  # fmt: skip
    env.write_text("COMPOSE_FILE=./compose.yml:deploy/compose.no-proxy.yml:local.yml:/etc/x.yml\n")
    assert argv(stage) == [
        "--project-directory", str(srv),
        "-f", str(stage / "compose.yml"),
        "-f", str(stage / "deploy" / "compose.no-proxy.yml"),
        "-f", str(srv / "local.yml"),
        "-f", "/etc/x.yml",
        "config",
    ]  # fmt: skip

    def check(bundle: Path) -> str:
        code = (
            f'set_dir {q(srv)}; env_scan "$env_file"; '
            f'compose_files_check {q(bundle)} && echo ok || echo "REFUSED $problem"'
        )
        proc = sh(code)
        return proc.stdout + proc.stderr

    assert check(stage) == "ok\n"
    # A bundle made before the override it names (an old stored one, what an automatic
    # rollback may return to) runs as it was made, and the run says so.
    old = make_bundle(tmp_path / "old")
    assert check(old).startswith("ok\n") and "which the bundle to run" in check(old)
    assert argv(old)[2:] == ["-f", str(old / "compose.yml"), "-f", str(srv / "local.yml"),
                             "-f", "/etc/x.yml", "config"]  # fmt: skip
    # A list without compose.yml would not run what the deploy ships: refused.
    env.write_text("COMPOSE_FILE=deploy/compose.no-proxy.yml\n")
    assert "does not list compose.yml" in check(stage)


# ---------------------------------------------------------------------------------------------
# The lock, its holder, the detached worker


FAKE_TRANSACTION = """
transaction() {
  sleep 30 >/dev/null 2>&1 &
  echo "$!" >"$dir/child.pid"
  touch "$dir/locked.$run_id"
  while [[ ! -e $dir/release ]]; do sleep 0.05; done
  finish 0 "done $run_id"
}
"""


def start_worker(srv: Path, run_id: str) -> subprocess.Popen[str]:
    """The real worker_main, with a transaction that only holds the lock until released."""
    code = (
        f"{FAKE_TRANSACTION}\nparse_args --dir {q(srv)} --run-id {run_id} deploy --tag v1; "
        'resolve_dir; mkdir -p "$runs_dir"; run_files "$run_id"; run_status_init; worker_main'
    )
    return subprocess.Popen(
        ["bash", "-c", f"set -uo pipefail; source {q(SCRIPT)}\n{code}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_the_lock_is_never_held_by_a_child(tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    srv.mkdir()
    worker = start_worker(srv, "first")
    try:
        for _ in range(200):
            if (srv / "locked.first").exists():
                break
            time.sleep(0.05)
        child = int((srv / "child.pid").read_text())
        lock = str(srv / "deploy.lock")
        fds = [os.readlink(f) for f in Path(f"/proc/{child}/fd").iterdir()]
        assert lock not in fds, fds
        # The holder is described, atomically, with the process that holds the lock.
        holder = (srv / ".deploy-state" / "holder").read_text()
        assert f"pid={worker.pid} " in holder and "run=first" in holder
        # SIGKILL the worker: its leftover child must not keep the lock.
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        assert Path(f"/proc/{child}").exists()
        took = subprocess.run(["flock", "-n", lock, "true"], check=False).returncode
        assert took == 0, "a leftover child of the killed worker still holds the lock"
    finally:
        if worker.poll() is None:
            worker.kill()
        kill_child(srv)


def kill_child(srv: Path) -> None:
    """End the fake transaction's `sleep` (by its pid: it is ours)."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((srv / "child.pid").read_text()), signal.SIGKILL)


def test_five_concurrent_workers_one_wins_and_the_losers_name_it(tmp_path: Path) -> None:
    srv = tmp_path / "srv"
    srv.mkdir()
    for rnd in range(3):
        (srv / "release").unlink(missing_ok=True)
        workers = {f"r{rnd}-{i}": start_worker(srv, f"r{rnd}-{i}") for i in range(5)}
        deadline = time.monotonic() + 15
        while sum(w.poll() is not None for w in workers.values()) < 4:
            assert time.monotonic() < deadline, "the losers did not give up"
            time.sleep(0.02)
        (winner,) = [run for run, w in workers.items() if w.poll() is None]
        (srv / "release").touch()
        for run, w in workers.items():
            _, err = w.communicate(timeout=10)
            if run == winner:
                assert w.returncode == 0, err
            else:
                assert w.returncode == 2, err
                assert f"run={winner} " in err, (run, err)
        assert not (srv / ".deploy-state" / "holder").exists()
        kill_child(srv)


def test_holder_description_skips_a_dead_holder(tmp_path: Path) -> None:
    (tmp_path / ".deploy-state").mkdir()
    holder = tmp_path / ".deploy-state" / "holder"
    holder.write_text("pid=999999 start=1 run=old user=x host=h since=t command=deploy\n")
    out = sh(f"set_dir {q(tmp_path)}; holder_wait_s=1; holder_describe").stdout
    assert out.startswith("holder unknown")
    me = sh(f"set_dir {q(tmp_path)}; echo \"pid=$$ start=$(proc_start $$) run=now\" >{q(holder)};"
            " holder_describe").stdout  # fmt: skip
    assert "run=now" in me


def test_a_zombie_is_not_alive() -> None:
    # The inner sleep's parent execs another sleep that never reaps it: a zombie.
    parent = subprocess.Popen(
        ["bash", "-c", "sleep 0.1 & echo $!; exec sleep 5"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        time.sleep(0.5)
        assert Path(f"/proc/{zombie}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        out = sh(f"proc_alive {zombie} && echo alive || echo gone; proc_alive $$ && echo me")
        assert out.stdout == "gone\nme\n"
    finally:
        parent.kill()
        parent.wait()


def test_run_status_is_overwritten_in_place(tmp_path: Path) -> None:
    out = sh(
        f'runs_dir={q(tmp_path)}; run_files r; run_status_init; stat -c %s "$run_exit"; '
        'ino=$(stat -c %i "$run_exit"); printf "running pid=%s start=%s\\n" $$ 7 1<>"$run_exit"; '
        'run_status_get; echo "$run_code $run_pid $run_pid_start"; '
        'run_status_set 4 "rolled back"; run_status_get; echo "$run_code|$run_msg"; '
        '[[ $(stat -c %i "$run_exit") == "$ino" ]] && echo same-inode'
    ).stdout.splitlines()
    assert out[0] == "4096"
    assert out[1].startswith("running ") and out[1].endswith(" 7")
    assert out[2:] == ["4|rolled back", "same-inode"]
