"""Fixtures of the deploy scenarios: a real Docker engine with Compose v2, the local registry on
127.0.0.1:5000 (both started by .ci/setup.d/30-docker.sh), test images built from the real
service binaries (images.py), and an sshd of our own on a free loopback port with generated keys.

The "server" is this machine reached over that sshd: every scenario ships and runs the deploy
exactly as the Dagger module does, with the argv lists built by `mcp_trader.ssh`. Faults are
injected from here: the ssh client or the sshd child of a connection killed, the server-side
worker SIGKILLed, a full filesystem (a tmpfs mounted on the deploy directory).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp_trader import ssh

from tests.deploy import images

REPO = images.REPO
SSHD = "/usr/sbin/sshd"
# Fast healthchecks so the suite stays short on 2 cores: a good version counts as healthy at
# its first passing check (1 s interval). The start period and the timeout are generous because
# a loaded machine (2 cores shared with builds) can take many seconds to start the gateway; the
# bad release is declared unhealthy after the start period plus three quick failures (~25 s).
GATEWAY_TOKEN = "0123abcd-test-token"
TEST_ENV_LINES = [
    "# mcp-trader test server settings",
    f"IMAGE_PREFIX={images.PREFIX}",
    # The official HAProxy image cannot be pulled here: Debian's package of the same LTS branch.
    f"PROXY_IMAGE={images.PROXY_IMAGE}",
    "HEALTHCHECK_INTERVAL=1s",
    "HEALTHCHECK_TIMEOUT=10s",
    "HEALTHCHECK_RETRIES=3",
    "HEALTHCHECK_START_PERIOD=20s",
    "STOP_GRACE_PERIOD=5s",
    "BINANCE_BASE_URL=http://127.0.0.1:9",
    f'MCP_GATEWAY_TOKEN="{GATEWAY_TOKEN}"',
    "EXTRA_NO_NEWLINE_AT_END=kept",
]
WAIT_TIMEOUT = 60


def _why_docker_unusable() -> str | None:
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        return "no Docker engine answers (`docker info` fails)"
    if (
        subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        != 0
    ):
        return "the Compose v2 plugin is missing (`docker compose version` fails)"
    try:
        urllib.request.urlopen(f"http://{images.REGISTRY}/v2/", timeout=5).close()
    except OSError as exc:
        return f"no registry answers on {images.REGISTRY} ({exc})"
    for tool in (SSHD, "ssh", "scp", "ssh-keygen", "debootstrap", "flock", "docker-compose"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Docker, Compose v2, the registry and OpenSSH, or a skip; never a silent skip in CI."""
    why = _why_docker_unusable()
    if why is None:
        return
    message = (
        "deploy tests need Docker, Compose v2, the registry and sshd: "
        f"{why} (run .ci/setup.d/30-docker.sh)"
    )
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def test_images(docker_ready: None) -> None:
    """Every test version, pushed to the local registry (built once per session)."""
    images.build_and_push()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return path


@dataclass
class Sshd:
    home: Path
    port: int
    key: Path
    known_hosts: Path
    wrong_known_hosts: Path
    user: str
    pid: int

    def target(self, known_hosts: Path | None = None) -> ssh.Target:
        return ssh.Target(
            host="127.0.0.1",
            user=self.user,
            port=self.port,
            key_file=str(self.key),
            known_hosts_file=str(known_hosts or self.known_hosts),
        )


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, docker_ready: None) -> Iterator[Sshd]:
    """An sshd on a free loopback port: its own host key, config, pid file and authorized key."""
    d = tmp_path_factory.mktemp("sshd")
    host_key = keygen(d / "host_key")
    client_key = keygen(d / "client_key")
    keygen(d / "other_host_key")
    authorized = d / "authorized_keys"
    authorized.write_text((d / "client_key.pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    config = d / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {d / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                # pytest's temp dirs are not root-owned 0755 all the way up.
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "Subsystem sftp /usr/lib/openssh/sftp-server",
                # `docker login` on the "server" writes here, not into this machine's ~/.docker.
                f"SetEnv DOCKER_CONFIG={d / 'docker-config'}",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"sshd did not start on port {port}: {err}") from None
            time.sleep(0.1)
    known = d / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(d / 'host_key.pub').read_text()}")
    wrong = d / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{port} {(d / 'other_host_key.pub').read_text()}")
    try:
        yield Sshd(d, port, client_key, known, wrong, getpass.getuser(), proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    run_id: str = ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def proc_children() -> dict[int, list[int]]:
    """ppid -> pids of every process (from /proc)."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def comm(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


@dataclass
class Server:
    """One deploy directory on the "server", reached through the sshd fixture."""

    path: Path
    project: str
    gateway_port: int
    sshd: Sshd
    env_lines: list[str] = field(default_factory=list)

    # -- shipping and running, as the module does ---------------------------------------------
    def plan(
        self,
        args: Sequence[str],
        known_hosts: Path | None = None,
        run_id: str | None = None,
        bundle_root: Path = REPO,
    ) -> ssh.Plan:
        return ssh.plan(
            self.sshd.target(known_hosts),
            path=str(self.path),
            run_id=run_id or uuid.uuid4().hex,
            nonce=secrets.token_hex(6),
            bundle_root=str(bundle_root),
            args=args,
        )

    def ship(self, plan: ssh.Plan) -> Result | None:
        """Run the prepare and copy steps; a failure is returned, success gives None."""
        for argv in (plan.prepare, *plan.copies):
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
            if proc.returncode != 0:
                return Result(proc.returncode, proc.stdout, proc.stderr)
        return None

    def run(
        self,
        action: str,
        *,
        known_hosts: Path | None = None,
        stdin: str | None = None,
        bundle_root: Path = REPO,
        **kwargs: object,
    ) -> Result:
        """Ship the bundle and run the script: exactly the module's sequence of commands."""
        args = ssh.script_args(action, wait_timeout=WAIT_TIMEOUT, **kwargs)  # type: ignore[arg-type]
        run_id = uuid.uuid4().hex
        plan = self.plan(args, known_hosts, run_id=run_id, bundle_root=bundle_root)
        failed = self.ship(plan)
        if failed is not None:
            return failed
        proc = subprocess.run(
            plan.run,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, run_id)

    def start(
        self, action: str, *, bundle_root: Path = REPO, **kwargs: object
    ) -> tuple[str, subprocess.Popen[str]]:
        """Ship, then start the script without waiting: (run id, the ssh client process)."""
        args = ssh.script_args(action, wait_timeout=WAIT_TIMEOUT, **kwargs)  # type: ignore[arg-type]
        run_id = uuid.uuid4().hex
        plan = self.plan(args, run_id=run_id, bundle_root=bundle_root)
        failed = self.ship(plan)
        assert failed is None, failed
        proc = subprocess.Popen(
            plan.run,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return run_id, proc

    # -- the server-side run ------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.path / ".deploy-state"

    def intent(self) -> dict[str, str]:
        """The intent of the run in progress (empty when none)."""
        try:
            text = (self.state_dir / "intent").read_text()
        except OSError:
            return {}
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

    def wait_phase(self, phase: str, timeout: float = 120) -> None:
        wait_for(f"phase {phase}", lambda: self.intent().get("phase") == phase, timeout)

    def outcome(self, run_id: str) -> tuple[int, str] | None:
        """(exit code, message) of a finished server-side run, None while it runs."""
        try:
            code, msg = (self.state_dir / "runs" / f"{run_id}.exit").read_text().split("\n")[:2]
        except (OSError, ValueError):
            return None
        return (int(code), msg.rstrip()) if code.isdigit() else None

    def wait_outcome(self, run_id: str, timeout: float = 180) -> tuple[int, str]:
        wait_for(f"run {run_id} to end", lambda: self.outcome(run_id) is not None, timeout)
        result = self.outcome(run_id)
        assert result is not None
        return result

    def worker_pid(self) -> int:
        holder = (self.state_dir / "holder").read_text()
        return int(holder.split("pid=", 1)[1].split()[0])

    def kill_sshd_child(self) -> list[int]:
        """SIGKILL the sshd processes serving the open connection (not the listener)."""
        tree = proc_children()
        killed: list[int] = []
        todo = list(tree.get(self.sshd.pid, []))
        while todo:
            pid = todo.pop()
            if comm(pid).startswith("sshd"):
                todo.extend(tree.get(pid, []))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        assert killed, "no sshd child to kill: is the connection open?"
        return killed

    # -- looking at the server ----------------------------------------------------------------
    @property
    def env_file(self) -> Path:
        return self.path / ".env"

    @property
    def log_file(self) -> Path:
        return self.path / "deployments.log"

    def log(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`docker compose` in the deploy directory, as an operator would type it."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"BINANCE_IMAGE_TAG", "GATEWAY_IMAGE_TAG"}
        }
        return subprocess.run(
            ["docker", "compose", *args],
            cwd=self.path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )

    def containers(self) -> dict[str, dict[str, str]]:
        """service -> {id, image, health} of this project's containers."""
        ids = subprocess.run(
            [
                "docker",
                "ps",
                "-aq",
                "--filter",
                f"label=com.docker.compose.project={self.project}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        out: dict[str, dict[str, str]] = {}
        for cid in ids:
            inspected = subprocess.run(
                ["docker", "inspect", cid], capture_output=True, text=True, check=False
            )
            if inspected.returncode != 0:
                continue  # removed since `docker ps` listed it (a deploy is replacing it)
            info = json.loads(inspected.stdout)[0]
            service = info["Config"]["Labels"]["com.docker.compose.service"]
            health = (info["State"].get("Health") or {}).get("Status", info["State"]["Status"])
            out[service] = {"id": info["Id"], "image": info["Config"]["Image"], "health": health}
        return out

    def running_tags(self) -> dict[str, str]:
        """service -> image tag of the two deployed services (every container must be healthy;
        the proxy's image is not deployed by tag, so it is checked for health only)."""
        tags = {}
        for service, c in self.containers().items():
            assert c["health"] == "healthy", f"{service} is {c['health']}: {c}"
            if service != "proxy":
                tags[service] = c["image"].rsplit(":", 1)[1]
        return tags

    def gateway_health(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.gateway_port}/health", timeout=5) as r:
            return int(r.status)


def new_server(path: Path, sshd: Sshd) -> Server:
    """A fresh, empty deploy directory with a hand-written .env (secrets, settings, no tags)."""
    path.mkdir(parents=True, exist_ok=True)
    project = f"mcp-trader-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    lines = [
        *TEST_ENV_LINES[:-1],
        f"COMPOSE_PROJECT_NAME={project}",
        f"GATEWAY_PUBLISH=127.0.0.1:{port}",
        TEST_ENV_LINES[-1],
    ]
    # The last line deliberately has no newline: it must survive byte for byte too.
    (path / ".env").write_text("\n".join(lines))
    (path / ".env").chmod(0o600)
    return Server(path, project, port, sshd, lines)


@pytest.fixture
def server(tmp_path: Path, sshd: Sshd, test_images: None) -> Iterator[Server]:
    """A fresh deploy directory of its own for one scenario."""
    srv = new_server(tmp_path / "srv" / "mcp-trader", sshd)
    try:
        yield srv
    finally:
        srv.compose("down", "--remove-orphans", "--timeout", "1")


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, sshd: Sshd, test_images: None
) -> Iterator[Server]:
    """One deploy directory shared by a module's scenarios that only look or are refused."""
    srv = new_server(tmp_path_factory.mktemp("shared") / "mcp-trader", sshd)
    try:
        yield srv
    finally:
        srv.compose("down", "--remove-orphans", "--timeout", "1")
