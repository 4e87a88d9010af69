"""The Dagger side of the supply chain (supply.py) against the engine double: the pinned tool
images, secrets by reference only, the login wrapper, a fresh nonce per exec, keyless argv."""

from __future__ import annotations

import json
from typing import Any

import dagger
import pytest
from dagger import dag
from mcp_trader import cosign, supply
from mcp_trader.cosign import KeylessSigner, KeySigner

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
    assert argvs[1] == cosign.verify_argv(PINNED, policy)
    last = engine.calls("exitCode", "Container")[-1].receiver
    assert last.arg("withMountedFile", "path") == supply.PUBLIC_KEY_FILE
