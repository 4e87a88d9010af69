"""`server ... deploy|rollback|status|attach` against the engine double (tests/enginedouble).

What these prove about the module side: the pinned OpenSSH container, the bundle files taken
from the source, the key / known_hosts / token mounted as secrets by reference (0600, root), the
exact ssh/scp argv lists of `mcp_trader.ssh` in order (so the docker tests, which run those same
lists for real, cover what ships), stdin carrying the registry token, a per-run id that defeats
the exec cache, errors propagated, registration with cache policy Never, and bad input refused
before a single query reaches the engine (the connection when `server` is called).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any, TypedDict

import dagger
import pytest
from dagger import dag
from mcp_trader import cosign, deploy, provenance, ssh, supply
from mcp_trader.cosign import COSIGN_TYPES, PROVENANCE_TYPE
from mcp_trader.main import McpTrader
from mcp_trader.server import Server

from tests.enginedouble import Call, EngineDouble
from tests.enginedouble.double import called
from tests.mcp_trader.test_supply import IMAGE_MANIFEST, tool_argv
from tests.registration import Function, is_optional, object_name, required

HOST = "deploy.example.com"
USER = "deploy"
TAG = "sha-1a2b3c4"
REPOSITORY = "acme/mcp-trader"
#: The escape hatch, for the tests about the SSH side: images resolved to digests, not verified.
UNVERIFIED: dict[str, Any] = {"repository": REPOSITORY, "allow_unsigned": True}


def digest_of(image: str) -> str:
    """The digest the registry double serves for `repository:tag`."""
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


def commit_of(image: str) -> str:
    """The source commit the provenance names: a `sha-` tag's own, else a fixed one."""
    tag = image.rsplit(":", 1)[1]
    return (tag.removeprefix("sha-") if tag.startswith("sha-") else "5e5e5e5").ljust(40, "0")


def attestation(image: str, digest: str, predicate_type: str) -> str:
    """One DSSE envelope line, as `cosign verify-attestation` prints it."""
    repository = image.rsplit(":", 1)[0]
    if predicate_type == PROVENANCE_TYPE:
        predicate = provenance.predicate(
            source=provenance.Source("https://github.com/acme/mcp-trader", "refs/heads/main",
                                     commit_of(image)),
            parameters={"service": repository.rsplit("/", 1)[1]},
            base_images={},
            builder=provenance.local_builder("ci@example.com"),
        )  # fmt: skip
    else:
        predicate = {"spdxVersion": "SPDX-2.3", "name": repository, "packages": []}
    statement = {
        "_type": provenance.STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": payload})


class Registry:
    """The images as the module's tools containers see them, in the double: `crane digest`
    answers digest_of(image); cosign finds a signature and both attestations for every digest
    unless the image is in `unsigned`. Every other exec (the SSH container) answers
    `ssh_stdout`. Tool commands are recorded in the order run."""

    def __init__(self, engine: EngineDouble) -> None:
        self.ssh_stdout = ""
        self.unsigned: set[str] = set()
        self.ran: list[list[str]] = []
        self._seen: set[str] = set()
        self._pinned: dict[str, str] = {}
        engine.answer("Container.exitCode", lambda call: self._result(call)[0])
        engine.answer("Container.stdout", lambda call: self._result(call)[1])
        engine.answer("Container.stderr", lambda call: self._result(call)[2])

    def _result(self, call: Call) -> tuple[int, str, str]:
        argv = tool_argv(call)
        if argv is None:
            return 0, self.ssh_stdout, ""
        if call.receiver.id not in self._seen:
            self._seen.add(call.receiver.id)
            self.ran.append(argv)
        if argv[:2] == ["crane", "digest"]:
            digest = digest_of(argv[2])
            self._pinned[f"{argv[2].rsplit(':', 1)[0]}@{digest}"] = argv[2]
            return 0, digest + "\n", ""
        pinned = argv[-1]
        if argv[:2] == ["crane", "manifest"]:
            return 0, IMAGE_MANIFEST, ""
        image, digest = self._pinned[pinned], pinned.split("@", 1)[1]
        if image in self.unsigned:
            return 1, "", "Error: no signatures found\nmain.go:74: error during command execution"
        if argv[1] == "verify":
            signature = [{"critical": {"image": {"docker-manifest-digest": digest}}}]
            return 0, json.dumps(signature), ""
        kind = {v: k for k, v in COSIGN_TYPES.items()}[argv[argv.index("--type") + 1]]
        return 0, attestation(image, digest, kind) + "\n", ""


@pytest.fixture(autouse=True)
def registry(engine: EngineDouble) -> Registry:
    return Registry(engine)


def image(service: str, tag: str = TAG) -> str:
    return f"ghcr.io/{REPOSITORY}/{service}:{tag}"


P, G = "binance-provider", "mcp-gateway"
#: What the script is given for `deploy --tag TAG`: each service pinned to its resolved digest.
PINNED = f"--provider-tag {TAG}@{digest_of(image(P))} --gateway-tag {TAG}@{digest_of(image(G))}"


def trader() -> McpTrader:
    return McpTrader(source=dag.host().directory("/repo"))  # type: ignore[call-arg]


class Credentials(TypedDict):
    ssh_key: dagger.Secret
    known_hosts: dagger.Secret


def secrets() -> Credentials:
    """Secrets by URI, the way `--ssh-key env://DEPLOY_SSH_KEY` reaches a module: no value."""
    return {
        "ssh_key": dag.secret("env://DEPLOY_SSH_KEY"),
        "known_hosts": dag.secret("env://DEPLOY_KNOWN_HOSTS"),
    }


def server(**connection: Any) -> Server:
    """The `server` object as `dagger call server --host H --user U --ssh-key env://...
    --known-hosts env://...` makes it (connection overrides as keyword arguments)."""
    args: dict[str, Any] = {"host": HOST, "user": USER, **secrets(), **connection}
    result: Server = trader().server(**args)
    return result


def ssh_calls(engine: EngineDouble) -> list[Call]:
    """The `stdout` of each run's SSH container (not the tools containers'), in order."""
    return [
        c
        for c in engine.calls("stdout", "Container")
        if c.receiver.arg("from", "address") == deploy.SSH_IMAGE
    ]


def execs(engine: EngineDouble) -> list[dict[str, Any]]:
    """The withExec steps of the SSH container's chain, in order."""
    (stdout,) = ssh_calls(engine)
    return [dict(s.args) for s in stdout.receiver.steps if s.field == "withExec"]


def nonce_of(prepare: list[str]) -> str:
    """The nonce in a prepare command's staging directory (`.incoming/<run id>-<nonce>`)."""
    match = re.search(r"/\.incoming/[A-Za-z0-9_-]+?-([0-9a-f]{16})/", prepare[-1])
    assert match, prepare
    return match.group(1)


def expected_plan(
    run_id: str, nonce: str, args: list[str], path: str = "/opt/mcp-trader", port: int = 22
) -> ssh.Plan:
    target = ssh.Target(HOST, USER, port, deploy.KEY_PATH, deploy.KNOWN_HOSTS_PATH)
    return ssh.plan(target, path=path, run_id=run_id, nonce=nonce, bundle_root="/bundle", args=args)


async def test_deploy_runs_the_plan_in_the_pinned_ssh_container(
    engine: EngineDouble, registry: Registry
) -> None:
    registry.ssh_stdout = "[mcp-trader-deploy] done"
    out = await called(server().deploy(tag=TAG, run_id="run1", **UNVERIFIED))
    assert out == "[mcp-trader-deploy] done"
    (stdout,) = ssh_calls(engine)
    chain = stdout.receiver
    assert chain.arg("from", "address") == deploy.SSH_IMAGE
    assert "@sha256:" in deploy.SSH_IMAGE
    run = execs(engine)
    assert run[0]["args"] == ["apk", "add", "--no-cache", "openssh-client-default"]
    plan = expected_plan(
        "run1",
        nonce_of(run[1]["args"]),
        ["--wait-timeout", "120", "--keep", "5", "--signature", "unsigned", "deploy",
         *PINNED.split()],
    )  # fmt: skip
    # Exactly the pure plan, in order: prepare (host key check), the copies, the script.
    assert [e["args"] for e in run[1:]] == plan.all()
    assert run[-1]["args"][-1].endswith(f"--signature unsigned deploy {PINNED}")
    assert all(e["redirectStdin"] == "" for e in run)  # no token: nothing on stdin


async def test_ssh_options_are_strict(engine: EngineDouble) -> None:
    await called(server().deploy(tag=TAG, **UNVERIFIED))
    for e in execs(engine)[1:]:
        argv = e["args"]
        opts = [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]
        # Exactly one host-key policy, and it is the strict one.
        assert [o for o in opts if o.startswith("StrictHostKeyChecking")] == [
            "StrictHostKeyChecking=yes"
        ]
        assert "IdentitiesOnly=yes" in opts
        assert "BatchMode=yes" in opts
        assert f"UserKnownHostsFile={deploy.KNOWN_HOSTS_PATH}" in opts
        assert argv[argv.index("-i") + 1] == deploy.KEY_PATH
        assert argv[0] in ("ssh", "scp"), argv  # no key scanning, no other tool


async def test_secrets_are_mounted_by_reference_and_never_sent(
    engine: EngineDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Values the secrets' URIs point at: the module must never read or send them.
    values = {
        "DEPLOY_SSH_KEY": "-----BEGIN OPENSSH PRIVATE KEY----- marker-key",
        "DEPLOY_KNOWN_HOSTS": "deploy.example.com ssh-ed25519 marker-host",
        "GITHUB_TOKEN": "ghs_markertoken",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    token = dag.secret("env://GITHUB_TOKEN")
    await called(server().deploy(tag=TAG, registry_password=token, run_id="r2", **UNVERIFIED))
    mounts = {c.args["path"]: c for c in engine.calls("withMountedSecret")}
    assert set(mounts) == {deploy.KEY_PATH, deploy.KNOWN_HOSTS_PATH, deploy.TOKEN_PATH}
    uris = {p: c.args["source"].arg("secret", "uri") for p, c in mounts.items()}
    assert uris == {
        deploy.KEY_PATH: "env://DEPLOY_SSH_KEY",
        deploy.KNOWN_HOSTS_PATH: "env://DEPLOY_KNOWN_HOSTS",
        deploy.TOKEN_PATH: "env://GITHUB_TOKEN",
    }
    for c in mounts.values():
        assert c.args["mode"] == 0o600
        assert c.args["owner"] == "root:root"
    for q in engine.queries:
        for value in values.values():
            assert value not in q.text and value not in json.dumps(q.variables)
    # Never unwrapped, never put in an env var, never set from a value: the one secret variable
    # is the token for crane's login in the tools container (resolving the digests first).
    assert engine.calls("plaintext") == []
    assert engine.calls("setSecret") == []
    (login,) = {
        (c.args["name"], c.args["secret"].arg("secret", "uri"))
        for c in engine.calls("withSecretVariable")
    }
    assert login == ("REGISTRY_PASSWORD", "env://GITHUB_TOKEN")
    assert not [c for c in engine.calls("withEnvVariable") if "TOKEN" in c.args["name"]]
    # The token reaches the server on the script's stdin, with the login user as a flag.
    run = execs(engine)[-1]
    assert run["redirectStdin"] == deploy.TOKEN_PATH
    assert run["args"][-1].endswith(
        f"--registry ghcr.io --registry-user {deploy.DEFAULT_REGISTRY_USERNAME} "
        f"--signature unsigned deploy {PINNED}"
    )
    # The token is mounted after the copies, only for the step that runs the script.
    token_chain = [s.field for s in mounts[deploy.TOKEN_PATH].receiver.steps]
    plan = expected_plan("r", "0" * 16, ["status"])
    assert token_chain.count("withExec") == 2 + len(plan.copies)  # apk, prepare, the copies


async def test_bundle_files_come_from_the_source(engine: EngineDouble) -> None:
    await called(server().deploy(tag=TAG, **UNVERIFIED))
    files = {
        c.args["path"]: c.args["source"]
        for c in engine.calls("withFile")
        if c.args["path"].startswith("/bundle/")
    }
    assert set(files) == {
        "/bundle/compose.yml",
        "/bundle/deploy/providers.yaml",
        "/bundle/deploy/mcp-trader-deploy.sh",
        "/bundle/deploy/rollout.sh",
        "/bundle/deploy/proxy/haproxy.cfg",
        "/bundle/deploy/compose.no-proxy.yml",
    }
    for path, src in files.items():
        assert src.arg("file", "path") == path.removeprefix("/bundle/")
        assert src.arg("directory", "path") == "/repo"


@pytest.mark.parametrize("run_id", ["", "same-run-id"])
async def test_a_fresh_nonce_reaches_the_first_exec_whatever_the_run_id(
    engine: EngineDouble, run_id: str
) -> None:
    # Twice the same deploy, with no run id (fresh ones) and with the same one reused.
    for fn in ("deploy", "deploy", "rollback", "rollback", "status", "status"):
        kwargs: dict[str, Any] = {"tag": TAG, **UNVERIFIED} if fn == "deploy" else {}
        await called(getattr(server(), fn)(run_id=run_id, **kwargs))
    chains = [
        [s.args["args"] for s in c.receiver.steps if s.field == "withExec"][1:]
        for c in ssh_calls(engine)
    ]
    assert len(chains) == 6
    nonces = [nonce_of(chain[0]) for chain in chains]
    assert len(set(nonces)) == 6, nonces
    # The first connecting exec already differs, so every exec after it does too: the engine
    # cannot answer any of them from its cache, and each call really connects.
    for a, b in zip(chains[::2], chains[1::2], strict=True):
        assert a[0] != b[0]
        for x, y in zip(a, b, strict=True):
            assert x != y
    if run_id:
        assert all(f"--run-id {run_id} " in chain[-1][-1] for chain in chains)


async def test_tags_paths_and_ports_reach_the_argv(engine: EngineDouble) -> None:
    await called(
        server(host="203.0.113.7", path="/srv/trader/", port=2222).deploy(
            provider_tag="1.2.3",
            gateway_tag="sha-7654321",
            wait_timeout=60,
            keep=3,
            run_id="r3",
            **UNVERIFIED,
        )
    )
    run = execs(engine)
    assert run[1]["args"][run[1]["args"].index("-p") + 1] == "2222"
    assert run[2]["args"][run[2]["args"].index("-P") + 1] == "2222"
    stage = f"/srv/trader/.incoming/r3-{nonce_of(run[1]['args'])}"
    assert run[2]["args"][-1] == f"deploy@203.0.113.7:{stage}/"
    assert run[-1]["args"][-1] == (
        f"bash {stage}/deploy/mcp-trader-deploy.sh --dir /srv/trader "
        f"--staged {stage} --run-id r3 --wait-timeout 60 --keep 3 --signature unsigned deploy "
        f"--provider-tag 1.2.3@{digest_of(image(P, '1.2.3'))} "
        f"--gateway-tag sha-7654321@{digest_of(image(G, 'sha-7654321'))}"
    )


async def test_rollback_previous_and_to(engine: EngineDouble, registry: Registry) -> None:
    # The previous deployment: its recorded digests, nothing to verify (no policy needed).
    await called(server().rollback(run_id="a"))
    assert registry.ran == []
    await called(server().rollback(to=TAG, run_id="b", **UNVERIFIED))
    prev, to = (
        [s.args["args"] for s in c.receiver.steps if s.field == "withExec"][-1][-1]
        for c in ssh_calls(engine)
    )
    assert prev.endswith("--wait-timeout 120 --keep 5 rollback --previous")
    assert to.endswith(
        f"--wait-timeout 120 --keep 5 --signature unsigned rollback --to-provider "
        f"{TAG}@{digest_of(image(P))} --to-gateway {TAG}@{digest_of(image(G))}"
    )


async def test_status_ships_and_runs_status(engine: EngineDouble, registry: Registry) -> None:
    registry.ssh_stdout = "pinned: ..."
    assert await called(server().status(run_id="s")) == "pinned: ..."
    run = execs(engine)
    stage = f"/opt/mcp-trader/.incoming/s-{nonce_of(run[1]['args'])}"
    assert run[-1]["args"][-1] == (
        f"bash {stage}/deploy/mcp-trader-deploy.sh --dir /opt/mcp-trader "
        f"--staged {stage} --run-id s status"
    )


async def test_script_failure_fails_the_call(engine: EngineDouble) -> None:
    engine.fail(
        "withExec",
        when=lambda step: step.args["args"][-1].startswith("bash "),
        exit_code=4,
        stderr="deploy failed: sha-1a2b3c4 did not become healthy; rolled back to sha-0000001",
    )
    with pytest.raises(dagger.ExecError) as info:
        await called(server().deploy(tag=TAG, **UNVERIFIED))
    assert info.value.exit_code == 4
    assert "rolled back" in info.value.stderr


async def test_a_dropped_connection_is_followed_by_reattaching_to_the_run(
    engine: EngineDouble, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy, "REATTACH_BACKOFF_S", (0, 0, 0))
    tries: list[str] = []

    # The run's connection drops, then the first re-attach fails to connect too.
    engine.fail(
        "withExec",
        when=lambda step: step.args["args"][-1].endswith(f"deploy {PINNED}"),
        exit_code=255,
        stderr="Connection to deploy.example.com closed by remote host.",
    )

    def first_attach_fails(step: Any) -> bool:
        cmd = step.args["args"][-1]
        if cmd.endswith("attach --run r9") and cmd not in tries:
            tries.append(cmd)
        return bool(tries) and cmd == tries[0]

    engine.fail("withExec", when=first_attach_fails, exit_code=255, stderr="Connection refused")
    registry.ssh_stdout = "deploy ok: re-attached"
    out = await called(server().deploy(tag=TAG, run_id="r9", **UNVERIFIED))
    assert out == "deploy ok: re-attached"
    # Every evaluation, failed ones included: the drop, one failed re-attach, one that worked.
    attaches = [o for o, leaf in engine.evaluated if leaf == "stdout" and "attach --run" in str(o)]
    assert len(attaches) == 2
    nonces = set()
    for chain in attaches:
        argv = [s.args for s in chain.steps if s.field == "withExec"]
        # Each attach ships the bundle afresh (a new nonce) and runs `attach` for the same run,
        # without the token.
        assert argv[-1]["args"][-1].endswith("--run-id r9 attach --run r9")
        assert all(e["redirectStdin"] == "" for e in argv)
        nonces.add(nonce_of(argv[1]["args"]))
    assert len(nonces) == 2


async def test_a_failing_run_is_not_reattached(engine: EngineDouble) -> None:
    engine.fail(
        "withExec",
        when=lambda step: step.args["args"][-1].endswith("status"),
        exit_code=255,
        stderr="Connection closed",
    )
    with pytest.raises(dagger.ExecError) as info:
        await called(server().status())
    assert info.value.exit_code == 255
    assert not [c for c in engine.calls("withExec") if "attach" in c.args["args"][-1]]


async def test_host_key_failure_stops_before_any_copy(engine: EngineDouble) -> None:
    engine.fail(
        "withExec",
        when=lambda step: "mkdir" in step.args["args"][-1],
        exit_code=255,
        stderr="Host key verification failed.",
    )
    with pytest.raises(dagger.ExecError) as info:
        await called(server().deploy(tag=TAG, **UNVERIFIED))
    assert info.value.exit_code == 255
    # The copies and the script are chained after the prepare step: they cannot run first.
    (run,) = [c for c in engine.calls("withExec") if c.args["args"][-1].startswith("bash ")]
    before = [s.args["args"][0] for s in run.receiver.steps if s.field == "withExec"]
    assert before == ["apk", "ssh", *["scp"] * len(expected_plan("r", "0" * 16, ["status"]).copies)]
    assert "mkdir" in [s for s in run.receiver.steps if s.field == "withExec"][1].args["args"][-1]


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ({"host": "-oProxyCommand=touch /tmp/x"}, "is not a valid host name"),
        ({"host": "bad host"}, "is not a valid host name"),
        ({"user": "root;id"}, "is not a valid login name"),
        ({"user": "-l"}, "is not a valid login name"),
        ({"path": "relative/dir"}, "is not a valid deploy directory"),
        ({"path": "/opt/../etc"}, "must not contain"),
        ({"path": "/opt/mcp trader"}, "is not a valid deploy directory"),
        ({"port": 0}, "is not a TCP port"),
        ({"port": 70000}, "is not a TCP port"),
    ],
)
async def test_a_bad_connection_is_refused_when_server_is_called(
    engine: EngineDouble, connection: dict[str, Any], message: str
) -> None:
    before = len(engine.queries)
    with pytest.raises(ValueError, match=message):
        server(**connection)
    assert len(engine.queries) == before, "a query reached the engine before validation"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tag": "v1 && rm -rf /"}, "is not a valid image tag"),
        ({"tag": None}, "deploy needs a tag"),
        ({"provider_tag": "-x"}, "is not a valid image tag"),
        ({"run_id": "../../x"}, "run id"),
        ({"wait_timeout": 0}, "wait timeout"),
        ({"keep": 0}, "keep"),
        (
            {"registry": "https://ghcr.io"},
            "invalid registry .https://ghcr.io.: expected a registry host name",
        ),
        ({"repository": "acme"}, "invalid repository"),
        ({"tag": f"{TAG}@sha256:{'a' * 64}"}, "is pinned to a digest"),
    ],
)
async def test_bad_input_fails_before_any_query(
    engine: EngineDouble, kwargs: dict[str, Any], message: str
) -> None:
    target = server()
    before = len(engine.queries)
    with pytest.raises(ValueError, match=message):
        await called(target.deploy(**{"tag": TAG, **UNVERIFIED, **kwargs}))
    assert len(engine.queries) == before, "a query reached the engine before validation"


async def test_bad_rollback_target_and_attach_run_fail_before_any_query(
    engine: EngineDouble,
) -> None:
    target = server()
    before = len(engine.queries)
    with pytest.raises(ValueError, match="rollback target"):
        await called(target.rollback(to="sha-1;reboot"))
    with pytest.raises(ValueError, match="run id"):
        await called(target.attach(run_id="r;reboot"))
    assert len(engine.queries) == before


async def test_attach_follows_a_run_and_reattaches_only_a_named_one(
    engine: EngineDouble, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(deploy, "REATTACH_BACKOFF_S", (0,))
    registry.ssh_stdout = "[mcp-trader-deploy] attached"
    assert await called(server().attach(run_id="r7")) == "[mcp-trader-deploy] attached"
    assert await called(server().attach()) == "[mcp-trader-deploy] attached"
    named, latest = (
        [s.args["args"] for s in c.receiver.steps if s.field == "withExec"][-1][-1]
        for c in ssh_calls(engine)
    )
    assert named.endswith("--run-id r7 attach --run r7")
    assert re.search(r"--run-id [0-9a-f]{32} attach$", latest), latest
    # "The latest run" is not re-attached after a drop: by then it could be another run.
    engine.fail(
        "withExec",
        when=lambda step: step.args["args"][-1].endswith("attach"),
        exit_code=255,
        stderr="Connection closed",
    )
    with pytest.raises(dagger.ExecError):
        await called(server().attach())
    engine.fail(
        "withExec",
        when=lambda step: step.args["args"][-1].endswith("attach --run r8"),
        exit_code=255,
        stderr="Connection closed",
    )
    with pytest.raises(deploy.ConnectionLost, match="attach --run-id r8"):
        await called(server().attach(run_id="r8"))


def test_server_registers_its_connection_once_and_uncached_functions(
    registered: dict[str, Any], registered_functions: dict[str, Function]
) -> None:
    connect = registered_functions["server"]
    assert connect.return_type == "withObject:Server"
    assert connect.cache_policy is None  # pure: it only validates and holds the connection
    assert object_name(connect.args["ssh_key"]) == "Secret"
    assert object_name(connect.args["known_hosts"]) == "Secret"
    assert required(connect) == {"host", "user", "ssh_key", "known_hosts"}
    assert connect.args["path"]["defaultValue"] == '"/opt/mcp-trader"'
    assert connect.args["port"]["defaultValue"] == "22"
    # The old top-level functions are gone: one way to deploy.
    assert not {"deploy", "rollback", "status", "attach"} & set(registered_functions)
    functions: dict[str, Function] = registered["objects"]["Server"]["functions"]
    assert set(functions) == {"deploy", "rollback", "status", "attach"}
    connection = {"host", "user", "ssh_key", "known_hosts", "path", "port"}
    for name, fn in functions.items():
        assert fn.cache_policy == "Never", name
        assert not connection & set(fn.args), f"{name} repeats the connection"
        assert "run_id" in fn.args
    for name in ("deploy", "rollback"):
        assert object_name(functions[name].args["registry_password"]) == "Secret"
        assert is_optional(functions[name].args["registry_password"])
    assert {"tag", "provider_tag", "gateway_tag"} <= set(functions["deploy"].args)
    assert "to" in functions["rollback"].args


# --- Verified digests (issue 12 §5): verify before any SSH, pin TAG@sha256:... on the server ----

KEY: dict[str, Any] = {"repository": REPOSITORY}


def public_key() -> dagger.File:
    return dag.directory().file("cosign.pub")


def ssh_evaluated(engine: EngineDouble) -> list[int]:
    """Positions in the evaluation order of everything run in the SSH container."""
    return [
        i
        for i, (obj, _) in enumerate(engine.evaluated)
        if obj.find("from") is not None and obj.arg("from", "address") == deploy.SSH_IMAGE
    ]


async def test_deploy_verifies_every_image_before_ssh_and_pins_the_digests(
    engine: EngineDouble, registry: Registry
) -> None:
    await called(server().deploy(tag=TAG, public_key=public_key(), run_id="v1", **KEY))
    # Resolve, signature, provenance, SBOM: for both images, all before the first SSH exec.
    assert [argv[:2] for argv in registry.ran] == [
        ["crane", "digest"], ["crane", "manifest"], ["cosign", "verify"],
        ["cosign", "verify-attestation"], ["cosign", "verify-attestation"],
    ] * 2  # fmt: skip
    assert [registry.ran[0][-1], registry.ran[5][-1]] == [image(P), image(G)]
    tools_done = max(
        i for i, (obj, _) in enumerate(engine.evaluated) if supply.PUBLIC_KEY_FILE in str(obj)
    )
    assert tools_done < min(ssh_evaluated(engine))
    # The server gets each digest, "verified", and the source commit the provenance names.
    commit = commit_of(image(P))
    assert execs(engine)[-1]["args"][-1].endswith(
        f"--signature verified --provider-commit {commit} --gateway-commit {commit} deploy {PINNED}"
    )


@pytest.mark.parametrize("fn", ["deploy", "rollback"])
async def test_an_unsigned_image_is_refused_before_any_ssh(
    engine: EngineDouble, registry: Registry, fn: str
) -> None:
    registry.unsigned.add(image(G))
    kwargs: dict[str, Any] = {"tag": TAG} if fn == "deploy" else {"to": TAG}
    with pytest.raises(cosign.VerificationError, match=r"signature check failed .* no signatures"):
        await called(getattr(server(), fn)(public_key=public_key(), **kwargs, **KEY))
    assert ssh_evaluated(engine) == []
    assert ssh_calls(engine) == []


async def test_allow_unsigned_resolves_digests_only_and_says_so(
    engine: EngineDouble, registry: Registry
) -> None:
    registry.unsigned.update({image(P), image(G)})
    await called(server().deploy(tag=TAG, **UNVERIFIED))
    assert [argv[:2] for argv in registry.ran] == [["crane", "digest"]] * 2
    last = execs(engine)[-1]["args"][-1]
    assert last.endswith(f"--signature unsigned deploy {PINNED}")
    assert "--provider-commit" not in last


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "--public-key cosign.pub .* --certificate-identity\\(-regexp\\) .* --allow-unsigned"),
        ({"allow_unsigned": True, "certificate_identity": "x"}, "--allow-unsigned deploys"),
    ],
)
async def test_a_deploy_without_one_clear_policy_is_refused_before_any_query(
    engine: EngineDouble, kwargs: dict[str, Any], message: str
) -> None:
    target = server()
    before = len(engine.queries)
    with pytest.raises(ValueError, match=message):
        await called(target.deploy(tag=TAG, **KEY, **kwargs))
    with pytest.raises(ValueError, match=message):
        await called(target.rollback(to=TAG, **KEY, **kwargs))
    with pytest.raises(ValueError, match="--repository"):
        await called(target.rollback(to=TAG, allow_unsigned=True, run_id=""))
    assert len(engine.queries) == before


def test_deploy_takes_verify_s_policy_flags(registered: dict[str, Any]) -> None:
    verify = registered["objects"]["McpTrader"]["functions"]["verify"]
    functions = registered["objects"]["Server"]["functions"]
    policy = [
        "public_key",
        "certificate_identity",
        "certificate_identity_regexp",
        "certificate_oidc_issuer",
        "expected_repository",
    ]
    for name in ("deploy", "rollback"):
        fn = functions[name]
        for arg in policy:
            assert fn.args[arg]["description"] == verify.args[arg]["description"], arg
            assert fn.args[arg].get("defaultValue") == verify.args[arg].get("defaultValue")
        assert fn.args["allow_unsigned"]["defaultValue"] == "false"
    assert "repository" in required(functions["deploy"])
