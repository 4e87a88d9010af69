"""The Dagger side of the supply chain (supply.py) against the engine double: the pinned tool
images, secrets by reference only, the login wrapper, a fresh nonce per exec, keyless argv."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Final

import dagger
import pytest
from dagger import dag
from mcp_trader import cosign, supply
from mcp_trader.cosign import KeylessSigner, KeySigner
from mcp_trader.publish import PublishError

from tests.enginedouble import Call, EngineDouble, Obj

REPO = "ghcr.io/acme/mcp-trader/binance-provider"
DIGEST = "sha256:" + "ab" * 32
PINNED = f"{REPO}@{DIGEST}"
SECRETS = {
    "SUPPLY_TEST_REGISTRY_TOKEN": "ghp_registry-token-do-not-leak-1",
    "SUPPLY_TEST_KEY": "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY----- do-not-leak-2",
    "SUPPLY_TEST_KEY_PASSWORD": "key-password-do-not-leak-3",
    "SUPPLY_TEST_OIDC_URL": "https://pipelines.example/oidc?do-not-leak-4",
    "SUPPLY_TEST_OIDC_TOKEN": "oidc-request-token-do-not-leak-5",
}


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> dict[str, dagger.Secret]:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return {name: dag.secret(f"env://{name}") for name in SECRETS}


def auth(secret: dict[str, dagger.Secret]) -> supply.RegistryAuth:
    return supply.RegistryAuth("ghcr.io", "acme-bot", secret["SUPPLY_TEST_REGISTRY_TOKEN"])


#: The signing flags publish and ci register after their own (main.py), in order.
SIGNING_ARGS: Final = [
    {"name": "created", "optional": True, "default": "null"},
    {"name": "signing_key", "optional": True, "default": "null"},
    {"name": "signing_key_password", "optional": True, "default": "null"},
    {"name": "oidc_request_url", "optional": True, "default": "null"},
    {"name": "oidc_request_token", "optional": True, "default": "null"},
    {"name": "unsigned", "optional": False, "default": "false"},
    {"name": "builder_id", "optional": False, "default": '"local"'},
    {"name": "invocation", "optional": False, "default": '""'},
]


IMAGE_MANIFEST: Final = json.dumps(
    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
)


def tool_argv(call: Call) -> list[str] | None:
    """The crane/cosign/syft argv of the exec `call` evaluates (login wrapper removed)."""
    step = call.receiver.find("withExec")
    if step is None:
        return None
    argv = list(step.args["args"])
    if argv[:2] == [supply.SHELL, "-c"]:
        argv = argv[4:]
    return argv if argv and argv[0] in {"crane", "cosign", "syft"} else None


class ToolsDouble:
    """A registry as the tools container sees it: `crane digest/config/tag` answered from
    `tags` (address -> digest) and `revisions` (digest -> commit); cosign succeeds. Every tool
    command is recorded once, in the order run (each exec has its own nonce)."""

    def __init__(self, engine: EngineDouble) -> None:
        self.tags: dict[str, str] = {}
        self.revisions: dict[str, str] = {}
        #: index digest -> (platform, manifest digest) of each platform it lists.
        self.indexes: dict[str, list[tuple[str, str]]] = {}
        self.ran: list[list[str]] = []
        self.fail_on: str | None = None
        self._seen: set[str] = set()
        engine.answer("Container.exitCode", self._exit_code)
        engine.answer("Container.stdout", self._stdout)
        engine.answer("Container.stderr", self._stderr)
        engine.answer("Container.imageRef", self._image_ref)

    @staticmethod
    def _image_ref(call: Call) -> str:
        """What the engine resolves a `from` to: the address with the digest of the platform's
        manifest (one per address and platform, like a multi-platform base image)."""
        address = str(call.receiver.arg("from", "address"))
        if "@sha256:" in address:
            return address
        platform = call.receiver.arg("container", "platform") or "engine"
        return f"{address}@sha256:{hashlib.sha256(f'{address} {platform}'.encode()).hexdigest()}"

    def serve_publish(self, engine: EngineDouble, digest: Callable[[str], str]) -> None:
        """Also answer `Container.publish` (digest per address), recording it among the runs;
        a multi-platform publish is an index listing one manifest per variant's platform."""

        def publish(call: Call) -> str:
            address = str(call.args["address"])
            self.ran.append(["push", address])
            self.tags[address] = digest(address)
            variants = call.args.get("platformVariants") or []
            if variants:
                self.indexes[self.tags[address]] = [
                    (str(v.arg("container", "platform")), manifest_digest(address, v))
                    for v in variants
                ]
            return f"{address}@{self.tags[address]}"

        engine.answer("Container.publish", publish)

    def _result(self, call: Call) -> tuple[int, str, str] | None:
        argv = tool_argv(call)
        if argv is None:
            return None
        if call.receiver.id not in self._seen:
            self._seen.add(call.receiver.id)
            self.ran.append(argv)
        if argv[0] == "cosign" and self.fail_on and self.fail_on in argv:
            return 1, "", "Error: signing: UNAUTHORIZED: authentication required"
        if argv[:2] == ["crane", "digest"]:
            ref = argv[2]
            digest = self.tags.get(ref) or (ref.split("@", 1)[1] if "@" in ref else None)
            if digest is None:
                return 1, "", f"Error: GET {ref}: MANIFEST_UNKNOWN: manifest unknown"
            return 0, digest + "\n", ""
        if argv[:2] == ["crane", "manifest"]:
            digest = argv[-1].split("@", 1)[1]
            if digest not in self.indexes:
                return 0, IMAGE_MANIFEST, ""
            manifests = [
                {
                    "digest": d,
                    "platform": dict(zip(("os", "architecture"), p.split("/"), strict=True)),
                }
                for p, d in self.indexes[digest]
            ]
            return 0, json.dumps({"mediaType": cosign.INDEX_TYPES[0], "manifests": manifests}), ""
        if argv[:2] == ["crane", "config"]:
            digest = argv[-1].split("@", 1)[1]
            platform = argv[argv.index("--platform") + 1] if "--platform" in argv else ""
            listed = dict(self.indexes.get(digest, []))
            revision = self.revisions.get(listed.get(platform, digest), "")
            os_, arch = (platform if listed else "linux/amd64").split("/")
            labels = {"org.opencontainers.image.revision": revision}
            config = {"os": os_, "architecture": arch, "config": {"Labels": labels}}
            return 0, json.dumps(config), ""
        if argv[:2] == ["crane", "tag"]:
            image, digest = argv[2].split("@", 1)
            self.tags[f"{image}:{argv[3]}"] = digest
            return 0, "", ""
        return 0, "", ""

    def _exit_code(self, call: Call) -> int:
        result = self._result(call)
        return 0 if result is None else result[0]

    def _stdout(self, call: Call) -> str:
        result = self._result(call)
        return "" if result is None else result[1]

    def _stderr(self, call: Call) -> str:
        result = self._result(call)
        return "" if result is None else result[2]


def manifest_digest(address: str, variant: Obj) -> str:
    """One platform's manifest in the double's registry: a digest per image and platform."""
    key = f"{address.rsplit(':', 1)[0]} {variant.arg('container', 'platform')}"
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def execs(call: Call) -> list[dict[str, Any]]:
    return [dict(s.args) for s in call.receiver.steps if s.field == "withExec"]


def assert_no_secret_value(engine: EngineDouble) -> None:
    for record in engine.queries:
        for value in SECRETS.values():
            assert value not in record.text
            assert value not in repr(record.variables)
    assert not engine.calls("setSecret") and not engine.calls("plaintext")


def secret_uris(obj: Obj, field_name: str) -> dict[str, str]:
    found = {}
    for step in obj.find_all(field_name):
        target = step.args.get("name") or step.args.get("path")
        secret = step.args["secret" if "secret" in step.args else "source"]
        assert isinstance(secret, Obj) and secret.fields == ["secret"], secret
        found[str(target)] = str(secret.arg("secret", "uri"))
    return found


def stdout_for(answers: dict[str, str]) -> Any:
    """Answer Container.stdout by the tool's subcommand (verify, verify-attestation --type ...)."""

    def answer(call: Call) -> str:
        argv = call.receiver.arg("withExec", "args")
        if "crane" in argv and "digest" in argv:
            return answers["digest"]
        if "crane" in argv and "manifest" in argv:
            return answers.get("manifest", IMAGE_MANIFEST)
        if "--type" in argv:
            return answers[argv[argv.index("--type") + 1]]
        return answers.get(argv[-2] if argv[-2] == "verify" else "verify", "")

    return answer


async def test_tool_images_are_pinned_by_digest(engine: EngineDouble) -> None:
    await supply.tools().sync()
    froms = {c.args["address"] for c in engine.calls("from", "Container")}
    assert froms == {cosign.COSIGN_IMAGE, cosign.SYFT_IMAGE, cosign.CRANE_IMAGE}
    assert all("@sha256:" in address for address in froms)


async def test_sign_and_attest_runs_in_order_with_key_secrets_by_reference(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    done = await supply.sign_and_attest(
        PINNED,
        signer=KeySigner(supply.KEY_FILE),
        provenance={"buildDefinition": {}, "runDetails": {}},
        sbom_file=dag.directory().file("sbom.json"),
        auth=auth(secret),
        key=secret["SUPPLY_TEST_KEY"],
        key_password=secret["SUPPLY_TEST_KEY_PASSWORD"],
    )
    assert done == ["sign", "attest provenance", "attest SBOM"]
    runs = [execs(c)[-1]["args"] for c in engine.calls("exitCode", "Container")]
    assert [argv[4:6] for argv in runs] == [
        ["cosign", "sign"],
        ["cosign", "attest"],
        ["cosign", "attest"],
    ]
    for argv in runs:
        # The login wrapper: a fixed script, the tool's argv as its positional parameters.
        assert argv[:4] == [supply.SHELL, "-c", supply.LOGIN, "login"]
        assert argv[-1] == PINNED
        assert "--tlog-upload=false" in argv
    last = engine.calls("exitCode", "Container")[-1].receiver
    assert secret_uris(last, "withSecretVariable") == {
        "REGISTRY_PASSWORD": "env://SUPPLY_TEST_REGISTRY_TOKEN",
        "COSIGN_PASSWORD": "env://SUPPLY_TEST_KEY_PASSWORD",
    }
    assert secret_uris(last, "withMountedSecret") == {supply.KEY_FILE: "env://SUPPLY_TEST_KEY"}
    assert last.arg("withMountedTemp", "path") == supply.DOCKER_CONFIG
    provenance = json.loads(last.arg("withNewFile", "contents"))
    assert provenance == {"buildDefinition": {}, "runDetails": {}}
    # A fresh nonce in every exec: never an answer from the engine's cache.
    nonces = {
        step.args["value"]
        for c in engine.calls("exitCode", "Container")
        for step in c.receiver.find_all("withEnvVariable")
        if step.args["name"] == "MCP_TRADER_NONCE"
    }
    assert len(nonces) == 3
    assert_no_secret_value(engine)


async def test_keyless_signing_passes_the_oidc_request_as_secrets_and_no_key(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    await supply.sign_and_attest(
        PINNED,
        signer=KeylessSigner(),
        provenance={},
        sbom_file=dag.directory().file("sbom.json"),
        auth=auth(secret),
        oidc_request_url=secret["SUPPLY_TEST_OIDC_URL"],
        oidc_request_token=secret["SUPPLY_TEST_OIDC_TOKEN"],
    )
    first = engine.calls("exitCode", "Container")[0]
    argv = execs(first)[-1]["args"]
    assert argv[4:] == ["cosign", "sign", "--yes", PINNED]
    assert secret_uris(first.receiver, "withSecretVariable") == {
        "REGISTRY_PASSWORD": "env://SUPPLY_TEST_REGISTRY_TOKEN",
        "ACTIONS_ID_TOKEN_REQUEST_URL": "env://SUPPLY_TEST_OIDC_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "env://SUPPLY_TEST_OIDC_TOKEN",
    }
    assert not first.receiver.find_all("withMountedSecret")
    assert_no_secret_value(engine)


async def test_a_failed_step_stops_signing_and_names_it(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    engine.answer(
        "Container.exitCode",
        lambda call: 1 if "attest" in call.receiver.arg("withExec", "args") else 0,
    )
    engine.answer("Container.stderr", "Error: signing: UNAUTHORIZED: authentication required")
    with pytest.raises(supply.SigningError, match=r"attest provenance of .* failed .*UNAUTHORIZED"):
        await supply.sign_and_attest(
            PINNED,
            signer=KeylessSigner(),
            provenance={},
            sbom_file=dag.directory().file("sbom.json"),
            auth=auth(secret),
            oidc_request_url=secret["SUPPLY_TEST_OIDC_URL"],
            oidc_request_token=secret["SUPPLY_TEST_OIDC_TOKEN"],
        )
    ran = [execs(c)[-1]["args"][5] for c in engine.calls("exitCode", "Container")]
    assert ran == ["sign", "attest"]


def test_keyless_without_the_oidc_request_is_refused_with_the_flags_to_pass() -> None:
    with pytest.raises(ValueError, match=r"ACTIONS_ID_TOKEN_REQUEST_URL.*id-token: write"):
        supply.with_signer(dag.container(), KeylessSigner())


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"certificate_identity": "https://x/.github/workflows/ci.yml@refs/heads/main"}, "as"),
        ({"certificate_identity_regexp": "^https://x/.*$"}, "matching"),
    ],
)
def test_policy_from_flags(kwargs: dict[str, str], expected: str) -> None:
    args: dict[str, Any] = {
        "public_key": None,
        "certificate_identity": None,
        "certificate_identity_regexp": None,
        "certificate_oidc_issuer": cosign.GITHUB_ISSUER,
        **kwargs,
    }
    policy = supply.policy_for(**args)
    assert policy.describe().startswith(f"signed keyless {expected}")


def test_policy_needs_exactly_one_trust_anchor() -> None:
    for args in (
        {},
        {"public_key": dag.directory().file("k"), "certificate_identity": "x"},
    ):
        with pytest.raises(ValueError, match="give exactly one of --public-key"):
            supply.policy_for(
                public_key=args.get("public_key"),  # type: ignore[arg-type]
                certificate_identity=args.get("certificate_identity"),  # type: ignore[arg-type]
                certificate_identity_regexp=None,
                certificate_oidc_issuer=cosign.GITHUB_ISSUER,
            )


async def test_sbom_scans_the_image_tarball_with_the_pinned_syft(engine: EngineDouble) -> None:
    image = dag.container().from_("docker.io/library/alpine:3")
    await supply.sbom(image, name=REPO, version="sha-1a2b3c4").sync()
    (done,) = [c for c in engine.calls("sync", "File")]
    chain = done.receiver
    argv = chain.arg("withExec", "args")
    assert argv == cosign.sbom_argv(
        f"oci-archive:{supply.IMAGE_TARBALL}", supply.SBOM_OUT, name=REPO, version="sha-1a2b3c4"
    )
    tarball = chain.arg("withMountedFile", "source")
    assert isinstance(tarball, Obj) and tarball.fields[-1] == "asTarball"


async def test_verify_resolves_then_checks_with_the_public_key_mounted(
    engine: EngineDouble,
) -> None:
    # Only the digest answers; the signature check then fails on an empty list: refused.
    engine.answer("Container.stdout", stdout_for({"digest": DIGEST, "verify": "[]"}))
    policy = cosign.KeyPolicy(supply.PUBLIC_KEY_FILE)
    with pytest.raises(cosign.VerificationError, match="no verified signature"):
        await supply.verify(f"{REPO}:sha-1a2b3c4", policy, dag.directory().file("cosign.pub"))
    argvs = [execs(c)[-1]["args"] for c in engine.calls("exitCode", "Container")]
    assert argvs[0] == ["crane", "digest", f"{REPO}:sha-1a2b3c4"]
    assert argvs[1] == ["crane", "manifest", PINNED]
    assert argvs[2] == cosign.verify_argv(PINNED, policy)
    last = engine.calls("exitCode", "Container")[-1].receiver
    assert last.arg("withMountedFile", "path") == supply.PUBLIC_KEY_FILE


# --- publish with the supply chain: order, immutability, keyless, failures --------------------

SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
GATEWAY = "ghcr.io/acme/mcp-trader/mcp-gateway"


def digest_for(address: str) -> str:
    # One digest per image (every tag of it gets the same content), like a reproducible build.
    return "sha256:" + hashlib.sha256(address.rsplit(":", 1)[0].encode()).hexdigest()


def module() -> Any:
    from mcp_trader.main import McpTrader

    return McpTrader(source=dag.directory())  # type: ignore[call-arg]


async def publish(secret: dict[str, dagger.Secret], **kw: Any) -> list[str]:
    args: dict[str, Any] = {
        "repository": "acme/mcp-trader",
        "username": "octo-bot",
        "password": secret["SUPPLY_TEST_REGISTRY_TOKEN"],
        "sha": SHA,
        "ref": "refs/heads/main",
        "created": "2026-01-02T03:04:05Z",
        "signing_key": secret["SUPPLY_TEST_KEY"],
        "signing_key_password": secret["SUPPLY_TEST_KEY_PASSWORD"],
    }
    args.update(kw)
    result: list[str] = await module().publish(**args)
    return result


def steps(tools: ToolsDouble) -> list[str]:
    """The run as `push ADDRESS`, `crane ...`, `cosign sign|attest --type T` lines."""
    lines = []
    for argv in tools.ran:
        if argv[0] == "cosign":
            kind = argv[argv.index("--type") + 1] if "--type" in argv else ""
            lines.append(f"cosign {argv[1]} {kind}".rstrip() + f" {argv[-1].split('@')[0]}")
        elif argv[0] == "push":
            lines.append(" ".join(argv))
        else:
            lines.append(" ".join(argv[:2]) + f" {argv[2]}")
    return lines


async def test_publish_pushes_immutable_signs_attests_then_moves_tags(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    pushed = await publish(secret)
    assert steps(tools) == [
        f"crane digest {REPO}:sha-1a2b3c4",
        f"crane digest {GATEWAY}:sha-1a2b3c4",
        f"push {REPO}:sha-1a2b3c4",
        f"push {GATEWAY}:sha-1a2b3c4",
        f"cosign sign {REPO}",
        f"cosign attest slsaprovenance1 {REPO}",
        f"cosign attest spdxjson {REPO}",
        f"cosign sign {GATEWAY}",
        f"cosign attest slsaprovenance1 {GATEWAY}",
        f"cosign attest spdxjson {GATEWAY}",
        f"push {REPO}:main",
        f"push {GATEWAY}:main",
        f"push {REPO}:latest",
        f"push {GATEWAY}:latest",
    ]
    signed = [argv for argv in tools.ran if argv[:2] == ["cosign", "sign"]]
    assert [argv[-1] for argv in signed] == [
        f"{REPO}@{digest_for(REPO + ':x')}",
        f"{GATEWAY}@{digest_for(GATEWAY + ':x')}",
    ]
    assert pushed[0] == f"{REPO}:sha-1a2b3c4@{digest_for(REPO + ':x')}"
    assert_no_secret_value(engine)


async def test_provenance_names_source_builder_and_resolved_bases(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    await publish(
        secret,
        builder_id="https://github.com/acme/mcp-trader/.github/workflows/ci.yml@refs/heads/main",
        invocation="https://github.com/acme/mcp-trader/actions/runs/7/attempts/1",
    )
    files = [
        c.args["contents"]
        for c in engine.calls("withNewFile")
        if c.args["path"] == supply.PROVENANCE_FILE
    ]
    provider_doc, gateway_doc = (json.loads(text) for text in files)
    params = provider_doc["buildDefinition"]["externalParameters"]
    assert params["source"] == {
        "repository": "https://github.com/acme/mcp-trader",
        "ref": "refs/heads/main",
        "commit": SHA,
    }
    assert (params["service"], params["platform"], params["created"]) == (
        "binance-provider",
        "linux/amd64",
        "2026-01-02T03:04:05Z",
    )
    names = {
        d.get("name"): d["uri"] for d in provider_doc["buildDefinition"]["resolvedDependencies"]
    }
    assert set(names) == {None, "rust", "distroless"}
    assert {d.get("name") for d in gateway_doc["buildDefinition"]["resolvedDependencies"]} == {
        None,
        "python",
        "uv",
    }
    assert provider_doc["runDetails"]["builder"]["id"].endswith(
        "/.github/workflows/ci.yml@refs/heads/main"
    )
    assert provider_doc["runDetails"]["metadata"]["invocationId"].endswith(
        "/actions/runs/7/attempts/1"
    )


async def test_a_rerun_of_the_same_commit_pushes_no_new_digest(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    first = await publish(secret)
    # The first run's images carry this commit; a re-run's build differs (say, in created).
    for digest in set(tools.tags.values()):
        tools.revisions[digest] = SHA
    tools.ran.clear()
    tools.serve_publish(engine, lambda address: "sha256:" + "f" * 64)
    again = await publish(secret, created="2026-06-06T06:06:06Z")
    assert not [argv for argv in tools.ran if argv[0] == "push"]
    assert again == first  # every tag at the digest it already had
    retagged = [argv for argv in tools.ran if argv[:2] == ["crane", "tag"]]
    assert [argv[3] for argv in retagged] == [
        "sha-1a2b3c4",
        "sha-1a2b3c4",
        "main",
        "main",
        "latest",
        "latest",
    ]
    order = [
        argv[1] if argv[0] == "cosign" else argv[3]
        for argv in tools.ran
        if argv[:2] in (["crane", "tag"], ["cosign", "sign"])
    ]
    assert order.index("sign") > order.index("sha-1a2b3c4") and order.index("main") > order.index(
        "sign"
    )


async def test_an_immutable_tag_of_another_commit_is_never_overwritten(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    old = "sha256:" + "e" * 64
    tools.tags[f"{GATEWAY}:sha-1a2b3c4"] = old
    tools.revisions[old] = "9" * 40
    with pytest.raises(
        PublishError,
        match=r"mcp-gateway:sha-1a2b3c4 already exists .* built from commit 9{40}, not 1a2b3c4",
    ):
        await publish(secret)
    assert not [argv for argv in tools.ran if argv[0] in ("push", "cosign")]
    assert not engine.calls("publish")


async def test_a_signing_failure_stops_publish_before_any_moving_tag(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    tools.fail_on = "spdxjson"
    with pytest.raises(PublishError) as err:
        await publish(secret)
    message = str(err.value)
    assert message.startswith("signing failed: attest SBOM of")
    assert "no moving tag (branch, X.Y, X, pr-N, latest) was changed" in message
    assert f"not pushed: {REPO}:main, {GATEWAY}:main, {REPO}:latest, {GATEWAY}:latest" in message
    assert [argv[1] for argv in tools.ran if argv[0] == "push"] == [
        f"{REPO}:sha-1a2b3c4",
        f"{GATEWAY}:sha-1a2b3c4",
    ]


async def test_publish_without_a_signing_choice_is_refused_before_any_query(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    before = len(engine.queries)
    with pytest.raises(ValueError, match="publish signs every image: pass --signing-key"):
        await publish(secret, signing_key=None, signing_key_password=None)
    with pytest.raises(ValueError, match="--unsigned contradicts"):
        await publish(secret, unsigned=True)
    assert len(engine.queries) == before


async def test_ci_in_github_signs_keyless_with_the_oidc_secrets(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    from mcp_trader.pipeline import run_ci

    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)

    async def suite() -> None:
        return None

    async def build(service: str, platform: dagger.Platform) -> dagger.Container:
        return dag.container(platform=platform).from_(f"registry.invalid/{service}:1")

    await run_ci(
        test=suite,
        build=build,
        sha=SHA,
        ref="refs/heads/main",
        repository="acme/mcp-trader",
        username="octo-bot",
        password=secret["SUPPLY_TEST_REGISTRY_TOKEN"],
        signing=supply.SigningFlags(
            oidc_request_url=secret["SUPPLY_TEST_OIDC_URL"],
            oidc_request_token=secret["SUPPLY_TEST_OIDC_TOKEN"],
        ),
    )
    signs = [argv for argv in tools.ran if argv[:2] == ["cosign", "sign"]]
    assert signs == [
        ["cosign", "sign", "--yes", f"{REPO}@{digest_for(REPO + ':x')}"],
        ["cosign", "sign", "--yes", f"{GATEWAY}@{digest_for(GATEWAY + ':x')}"],
    ]
    assert all("--key" not in argv and "--tlog-upload=false" not in argv for argv in tools.ran)
    assert_no_secret_value(engine)


async def test_the_provider_build_embeds_its_crates_with_pinned_cargo_auditable(
    engine: EngineDouble,
) -> None:
    from mcp_trader import provider

    binary = await provider.binary(dag.directory())
    chain = engine.obj(await binary.id())
    commands = [list(s.args["args"]) for s in chain.find_all("withExec")]
    install = ["cargo", "install", "--locked", "--version", provider.CARGO_AUDITABLE_VERSION]
    assert [*install, "cargo-auditable"] in commands
    assert commands[-1][6:9] == ["cargo", "auditable", "install"]


async def test_verify_function_needs_one_policy_before_any_query(engine: EngineDouble) -> None:
    before = len(engine.queries)
    with pytest.raises(ValueError, match="give exactly one of --public-key"):
        await module().verify(image=f"{REPO}:sha-1a2b3c4")
    with pytest.raises(ValueError, match="both --registry-username and --registry-password"):
        await module().verify(
            image=f"{REPO}:sha-1a2b3c4", certificate_identity="x", registry_username="u"
        )
    assert len(engine.queries) == before


def test_verify_and_sbom_register_with_the_sdk(registered_functions: dict[str, Any]) -> None:
    verify, sbom_function = registered_functions["verify"], registered_functions["sbom"]
    assert verify.cache_policy == "Never"  # the registry's state is what it checks
    assert list(verify.args) == [
        "image",
        "public_key",
        "certificate_identity",
        "certificate_identity_regexp",
        "certificate_oidc_issuer",
        "expected_repository",
        "registry_username",
        "registry_password",
    ]
    assert list(sbom_function.args) == ["service", "platform"]


# --- a multi-platform publish: each platform manifest signed and attested, then the index -----

BOTH = ["linux/amd64", "linux/arm64"]


def platform_digest(image: str, platform: str) -> str:
    return "sha256:" + hashlib.sha256(f"{image} {platform}".encode()).hexdigest()


async def test_multi_platform_publish_signs_every_platform_then_the_index(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    pushed = await publish(secret, platforms=BOTH)
    lines = steps(tools)
    assert lines[:4] == [
        f"crane digest {REPO}:sha-1a2b3c4",
        f"crane digest {GATEWAY}:sha-1a2b3c4",
        f"push {REPO}:sha-1a2b3c4",
        f"push {GATEWAY}:sha-1a2b3c4",
    ]
    assert lines[-4:] == [
        f"push {REPO}:main",
        f"push {GATEWAY}:main",
        f"push {REPO}:latest",
        f"push {GATEWAY}:latest",
    ]
    cosign_runs = [argv for argv in tools.ran if argv[0] == "cosign"]
    for image in (REPO, GATEWAY):
        index = f"{image}@{digest_for(image + ':x')}"
        ran = [argv for argv in cosign_runs if argv[-1].startswith(image + "@")]
        # The platforms run concurrently: each in order, the index signed after both.
        for platform in BOTH:
            manifest = f"{image}@{platform_digest(image, platform)}"
            assert [
                (argv[1], argv[argv.index("--type") + 1] if "--type" in argv else "")
                for argv in ran
                if argv[-1] == manifest
            ] == [("sign", ""), ("attest", "slsaprovenance1"), ("attest", "spdxjson")]
        assert ran[-1] == ["cosign", "sign", "--yes", "--key", supply.KEY_FILE,
                           "--tlog-upload=false", index]  # fmt: skip
        assert [argv for argv in ran if argv[-1] == index] == [ran[-1]]
    # Provider's platforms and index, then the gateway's: one service at a time.
    owners = [argv[-1].split("@")[0] for argv in cosign_runs]
    assert owners == [REPO] * 7 + [GATEWAY] * 7
    # Every cosign exec, the index's too, has the key and its password only as secrets.
    signing = [c for c in engine.calls("exitCode", "Container") if "cosign" in str(tool_argv(c))]
    assert len({c.receiver.id for c in signing}) == 14
    for call in signing:
        assert secret_uris(call.receiver, "withMountedSecret") == {
            supply.KEY_FILE: "env://SUPPLY_TEST_KEY"
        }
        assert secret_uris(call.receiver, "withSecretVariable")["COSIGN_PASSWORD"] == (
            "env://SUPPLY_TEST_KEY_PASSWORD"
        )
    assert pushed[0] == f"{REPO}:sha-1a2b3c4@{digest_for(REPO + ':x')}"
    assert_no_secret_value(engine)


async def test_each_platform_gets_its_own_sbom_and_provenance(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    await publish(secret, platforms=BOTH)
    attested: dict[str, dict[str, Any]] = {}
    for call in engine.calls("exitCode", "Container"):
        argv = tool_argv(call)
        if argv is None or argv[:2] != ["cosign", "attest"]:
            continue
        kind = argv[argv.index("--type") + 1]
        if kind == "slsaprovenance1":
            attested[argv[-1]] = json.loads(call.receiver.arg("withNewFile", "contents"))
        else:
            # The SBOM is syft's scan of the tarball of that platform's build.
            sbom_file = call.receiver.arg("withMountedFile", "source")
            scan = sbom_file.arg("withMountedFile", "source")
            assert scan.fields[-1] == "asTarball"
            platform = {platform_digest(i, p): p for i in (REPO, GATEWAY) for p in BOTH}[
                argv[-1].split("@")[1]
            ]
            assert scan.arg("container", "platform") == platform
    # Each platform's bases are resolved for that platform: the double answers one digest per
    # address and platform; distroless is pinned by its index digest, rust and uv run on the
    # engine's own platform, so only python differs between the two.
    for image, differing in ((REPO, set()), (GATEWAY, {"python"})):
        bases = {}
        for platform in BOTH:
            doc = attested[f"{image}@{platform_digest(image, platform)}"]
            assert doc["buildDefinition"]["externalParameters"]["platform"] == platform
            bases[platform] = {
                d["name"]: d["digest"]["sha256"]
                for d in doc["buildDefinition"]["resolvedDependencies"]
                if "name" in d
            }
        amd64, arm64 = bases["linux/amd64"], bases["linux/arm64"]
        assert amd64.keys() == arm64.keys()
        assert {name for name in amd64 if amd64[name] != arm64[name]} == differing


async def test_a_failing_platform_is_named_and_nothing_moves_nor_is_the_index_signed(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    arm64 = f"{REPO}@{platform_digest(REPO, 'linux/arm64')}"
    tools.fail_on = arm64
    with pytest.raises(PublishError) as err:
        await publish(secret, platforms=BOTH)
    headline = str(err.value).splitlines()[0]
    assert headline == (
        f"signing failed: binance-provider linux/arm64 ({arm64.split('@')[1]}): sign of {arm64} "
        "failed (exit 1): Error: signing: UNAUTHORIZED: authentication required; the index "
        f"{REPO}@{digest_for(REPO + ':x')} was not signed"
    )
    assert "no moving tag (branch, X.Y, X, pr-N, latest) was changed" in str(err.value)
    index = f"{REPO}@{digest_for(REPO + ':x')}"
    assert not [argv for argv in tools.ran if argv[0] == "cosign" and argv[-1] == index]
    assert not [argv for argv in tools.ran if argv[0] == "cosign" and GATEWAY in argv[-1]]
    assert [argv[1] for argv in tools.ran if argv[0] == "push"] == [
        f"{REPO}:sha-1a2b3c4",
        f"{GATEWAY}:sha-1a2b3c4",
    ]


async def test_a_multi_platform_rerun_keeps_the_index_and_a_new_platform_set_is_refused(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    first = await publish(secret, platforms=BOTH)
    for listed in tools.indexes.values():
        for _, digest in listed:
            tools.revisions[digest] = SHA
    tools.ran.clear()
    tools.serve_publish(engine, lambda address: "sha256:" + "f" * 64)
    again = await publish(secret, platforms=BOTH, created="2026-06-06T06:06:06Z")
    assert again == first and not [argv for argv in tools.ran if argv[0] == "push"]
    signed = [argv[-1] for argv in tools.ran if argv[:2] == ["cosign", "sign"]]
    assert f"{REPO}@{digest_for(REPO + ':x')}" in signed  # the kept index, signed again
    # The same commit for amd64 alone would need a new digest for sha-1a2b3c4: refused.
    tools.ran.clear()
    with pytest.raises(
        PublishError,
        match=r"binance-provider:sha-1a2b3c4 already exists \(sha256:\w+\) for linux/amd64, "
        r"linux/arm64, and this publish asks for linux/amd64: an immutable tag never changes",
    ):
        await publish(secret, platforms=["linux/amd64"])
    assert not [argv for argv in tools.ran if argv[0] in ("push", "cosign")]


async def test_adding_a_platform_to_a_published_commit_is_refused_before_building(
    engine: EngineDouble, secret: dict[str, dagger.Secret]
) -> None:
    tools = ToolsDouble(engine)
    tools.serve_publish(engine, digest_for)
    await publish(secret)  # linux/amd64 alone: one image manifest per tag
    for digest in set(tools.tags.values()):
        tools.revisions[digest] = SHA
    tools.ran.clear()
    builds_before = len(engine.calls("publish"))
    with pytest.raises(
        PublishError,
        match=r"binance-provider:sha-1a2b3c4 already exists \(sha256:\w+\) for linux/amd64, and "
        r"this publish asks for linux/amd64, linux/arm64",
    ):
        await publish(secret, platforms=BOTH)
    assert [argv[:2] for argv in tools.ran] == [
        ["crane", "digest"],
        ["crane", "manifest"],
        ["crane", "config"],
    ]
    assert len(engine.calls("publish")) == builds_before
