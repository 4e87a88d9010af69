"""ssh.py on its own: the validators, the ssh/scp argv and the plan of one run (pure, no engine).

tests/mcp_trader/test_deploy.py checks that these lists reach the engine as built; the deploy
suites (tests/deploy) run them against a real sshd.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from typing import Any

import pytest
from mcp_trader import ssh

NONCE = "0123456789abcdef"


def target(host: str = "deploy.example.com", port: int = 22) -> ssh.Target:
    return ssh.Target(host, "deploy", port, "/run/key", "/run/known_hosts")


@pytest.mark.parametrize(
    ("validate", "good", "normalized"),
    [
        (ssh.validate_host, "deploy.example.com", "deploy.example.com"),
        (ssh.validate_host, "203.0.113.7", "203.0.113.7"),
        (ssh.validate_host, "2001:DB8::1", "2001:db8::1"),
        (ssh.validate_user, "_deploy-1.x", "_deploy-1.x"),
        (ssh.validate_port, 2222, 2222),
        (ssh.validate_path, "/opt/mcp-trader/", "/opt/mcp-trader"),
        (ssh.validate_tag, "sha-1a2b3c4", "sha-1a2b3c4"),
        (ssh.validate_tag, f"1.2.3@sha256:{'a' * 64}", f"1.2.3@sha256:{'a' * 64}"),
        (ssh.validate_run_id, "gh-123_4", "gh-123_4"),
    ],
)
def test_valid_values_are_returned_normalized(
    validate: Callable[[Any], Any], good: object, normalized: object
) -> None:
    assert validate(good) == normalized


@pytest.mark.parametrize(
    ("validate", "bad", "says"),
    [
        (ssh.validate_host, "-oProxyCommand=x", "deploy.example.com"),
        (ssh.validate_host, "a b", "IP address"),
        (ssh.validate_user, "root;id", "login name"),
        (ssh.validate_user, "x" * 33, "at most 32"),
        (ssh.validate_port, 0, "1 to 65535"),
        (ssh.validate_port, True, "1 to 65535"),
        (ssh.validate_path, "/", "other than '/'"),
        (ssh.validate_path, "opt/x", "absolute"),
        (ssh.validate_path, "/opt/../etc", "'..'"),
        (ssh.validate_path, "/opt/$(id)", "/opt/mcp-trader"),
        (ssh.validate_tag, "-x", "not starting with"),
        (ssh.validate_tag, "v1@sha256:ABC", "64 lowercase hex"),
        (ssh.validate_run_id, "-r", "1 to 64"),
    ],
)
def test_bad_values_are_refused_naming_the_value_and_what_is_valid(
    validate: Callable[[Any], Any], bad: object, says: str
) -> None:
    with pytest.raises(ValueError) as refused:
        validate(bad)
    assert repr(bad) in str(refused.value)
    assert says in str(refused.value)


def test_a_target_with_a_bad_field_cannot_exist() -> None:
    with pytest.raises(ValueError, match="'bad host'"):
        target(host="bad host")
    with pytest.raises(ValueError, match="70000"):
        target(port=70000)


def test_ssh_trusts_only_the_given_key_and_known_hosts_and_quotes_the_remote_argv() -> None:
    argv = target(port=2222).ssh(["bash", "/a b/script.sh", "--tag", "v1;id"])
    options = dict(argv[i + 1].split("=", 1) for i, arg in enumerate(argv[:-1]) if arg == "-o")
    assert options["StrictHostKeyChecking"] == "yes"
    assert options["UserKnownHostsFile"] == "/run/known_hosts"
    assert options["GlobalKnownHostsFile"] == "/dev/null"
    assert options["BatchMode"] == "yes"
    assert options["IdentitiesOnly"] == "yes"
    assert argv[argv.index("-F") + 1] == "/dev/null"
    assert argv[argv.index("-i") + 1] == "/run/key"
    assert argv[argv.index("-p") + 1] == "2222"
    # The host follows `--` (never read as an option) and the remote shell sees exactly the argv.
    assert argv[-3:-1] == ["--", "deploy.example.com"]
    assert shlex.split(argv[-1]) == ["bash", "/a b/script.sh", "--tag", "v1;id"]
    with pytest.raises(ValueError, match="empty"):
        target().ssh([])


def test_scp_brackets_an_ipv6_host_and_copies_into_a_validated_directory() -> None:
    argv = ssh.Target("2001:db8::1", "deploy", 22, "/k", "/kh").scp(["/b/compose.yml"], "/opt/x/")
    assert argv[-2:] == ["/b/compose.yml", "deploy@[2001:db8::1]:/opt/x/"]
    with pytest.raises(ValueError, match=re.escape("'/opt/../x'")):
        target().scp(["/b/compose.yml"], "/opt/../x")
    with pytest.raises(ValueError, match="nothing to copy"):
        target().scp([], "/opt/x")


def test_plan_stages_under_a_fresh_directory_and_ships_every_bundle_file() -> None:
    run = ssh.plan(
        target(),
        path="/opt/mcp-trader",
        run_id="r1",
        nonce=NONCE,
        bundle_root="/bundle/",
        args=["status"],
    )
    stage = f"/opt/mcp-trader/{ssh.INCOMING_DIR}/r1-{NONCE}"
    assert run.all()[0] is run.prepare and run.all()[-1] is run.run
    assert shlex.split(run.prepare[-1])[:3] == ["mkdir", "-p", "--"]
    shipped = {
        (src, dest)
        for copy in run.copies
        for src in copy[copy.index("--") + 1 : -1]
        for dest in [copy[-1].split(":", 1)[1]]
    }
    expected = {
        (f"/bundle/{src}", posixpath.join(stage, posixpath.dirname(dst), ""))
        for src, dst in ssh.BUNDLE_FILES
    }
    assert shipped == expected
    assert shlex.split(run.run[-1]) == [
        "bash",
        f"{stage}/deploy/{ssh.SCRIPT_NAME}",
        "--dir",
        "/opt/mcp-trader",
        "--staged",
        stage,
        "--run-id",
        "r1",
        "status",
    ]


@pytest.mark.parametrize("nonce", ["", "XYZ12345", "0" * 33])
def test_plan_refuses_a_nonce_that_is_not_lowercase_hex(nonce: str) -> None:
    with pytest.raises(ValueError, match="lowercase hex"):
        ssh.plan(target(), path="/opt/x", run_id="r", nonce=nonce, bundle_root="/b", args=[])


def test_script_args_per_action() -> None:
    assert ssh.script_args("deploy", tag="v1", provider_tag="v2") == [
        "deploy",
        "--tag",
        "v1",
        "--provider-tag",
        "v2",
    ]
    assert ssh.script_args("rollback") == ["rollback", "--previous"]
    assert ssh.script_args("rollback", to="v0", keep=3) == ["--keep", "3", "rollback", "--to", "v0"]
    assert ssh.script_args("attach") == ["attach"]
    assert ssh.script_args("attach", run="r1") == ["attach", "--run", "r1"]
    assert ssh.script_args("status", registry="ghcr.io", registry_user="bot", wait_timeout=5) == [
        "--wait-timeout",
        "5",
        "--registry",
        "ghcr.io",
        "--registry-user",
        "bot",
        "status",
    ]


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"action": "deploy"}, "needs a tag"),
        ({"action": "deploy", "gateway_tag": "a b"}, "gateway tag 'a b'"),
        ({"action": "rollback", "to": ".x"}, "rollback target '.x'"),
        ({"action": "status", "wait_timeout": 0}, "1 to 3600"),
        ({"action": "status", "keep": 101}, "1 to 100"),
        ({"action": "status", "registry_user": "bot"}, "registry the token is for"),
        ({"action": "status", "signature": "maybe"}, "verified, unsigned"),
        ({"action": "restart"}, "deploy, rollback, status, attach"),
    ],
)
def test_script_args_refuse_bad_input(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        ssh.script_args(**kwargs)
