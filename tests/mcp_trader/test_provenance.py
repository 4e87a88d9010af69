"""The SLSA v1 provenance builder and reader (provenance.py): pure."""

from __future__ import annotations

import json

import pytest
from mcp_trader import provenance
from mcp_trader.cosign import PROVENANCE_TYPE, VerificationError

SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
DIGEST = "sha256:" + "ab" * 32
RUST = "docker.io/library/rust:1.95.0-slim-bookworm@sha256:" + "01" * 32
DISTROLESS = "gcr.io/distroless/cc-debian12:nonroot@sha256:" + "02" * 32
SOURCE = provenance.Source("https://github.com/acme/mcp-trader", "refs/heads/main", SHA)
ACTIONS = provenance.github_builder(
    server_url="https://github.com",
    repository="acme/mcp-trader",
    workflow_ref="acme/mcp-trader/.github/workflows/ci.yml@refs/heads/main",
    run_id="123456",
    run_attempt="2",
)


def build(**overrides: object) -> dict[str, object]:
    args: dict[str, object] = {
        "source": SOURCE,
        "parameters": {"service": "binance-provider", "platform": "linux/amd64"},
        "base_images": {"rust": RUST, "distroless": DISTROLESS},
        "builder": ACTIONS,
        "builder_version": {"dagger": "v0.21.11"},
        "started": "2026-01-02T03:04:05Z",
    }
    args.update(overrides)
    return provenance.predicate(**args)  # type: ignore[arg-type]


def test_github_builder_is_the_workflow_at_its_ref_and_the_run() -> None:
    assert (
        ACTIONS.id == "https://github.com/acme/mcp-trader/.github/workflows/ci.yml@refs/heads/main"
    )
    assert ACTIONS.invocation == "https://github.com/acme/mcp-trader/actions/runs/123456/attempts/2"


def test_local_builder_names_the_user() -> None:
    local = provenance.local_builder("alice@example.com")
    assert (local.id, local.invocation) == ("local", "local:alice@example.com")
    with pytest.raises(ValueError, match="invalid builder identity 'alice smith'"):
        provenance.local_builder("alice smith")


def test_predicate_records_source_parameters_bases_and_builder() -> None:
    doc = build()
    definition = doc["buildDefinition"]
    assert definition["buildType"] == provenance.BUILD_TYPE  # type: ignore[index]
    assert definition["externalParameters"] == {  # type: ignore[index]
        "source": {"repository": SOURCE.repository, "ref": "refs/heads/main", "commit": SHA},
        "service": "binance-provider",
        "platform": "linux/amd64",
    }
    assert definition["resolvedDependencies"] == [  # type: ignore[index]
        {
            "uri": "git+https://github.com/acme/mcp-trader@refs/heads/main",
            "digest": {"gitCommit": SHA},
        },
        {
            "name": "distroless",
            "uri": "oci://gcr.io/distroless/cc-debian12:nonroot",
            "digest": {"sha256": "02" * 32},
        },
        {
            "name": "rust",
            "uri": "oci://docker.io/library/rust:1.95.0-slim-bookworm",
            "digest": {"sha256": "01" * 32},
        },
    ]
    assert doc["runDetails"] == {
        "builder": {"id": ACTIONS.id, "version": {"dagger": "v0.21.11"}},
        "metadata": {"invocationId": ACTIONS.invocation, "startedOn": "2026-01-02T03:04:05Z"},
    }
    json.dumps(doc)  # serializable as is


def test_unresolved_base_image_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"base image rust resolved to 'rust:1.95', not image@sha256"
    ):
        build(base_images={"rust": "rust:1.95"})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (("https://github.com/a/b", "refs/heads/main", "XYZ"), "invalid commit 'XYZ'"),
        (("github.com/a/b", "refs/heads/main", SHA), "invalid source repository"),
        (("https://github.com/a/b", "main", SHA), "invalid ref 'main'"),
    ],
)
def test_bad_source_is_refused(source: tuple[str, str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        provenance.Source(*source)


def test_bad_github_run_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid GitHub run 'x'"):
        provenance.github_builder(
            server_url="https://github.com",
            repository="a/b",
            workflow_ref="a/b/.github/workflows/ci.yml@refs/heads/main",
            run_id="x",
            run_attempt="1",
        )
    with pytest.raises(ValueError, match="invalid workflow ref"):
        provenance.github_builder(
            server_url="https://github.com",
            repository="a/b",
            workflow_ref="ci.yml",
            run_id="1",
            run_attempt="1",
        )


def test_statement_binds_the_digest_and_facts_read_it_back() -> None:
    statement = provenance.statement("ghcr.io/acme/mcp-trader/binance-provider", DIGEST, build())
    assert statement["_type"] == "https://in-toto.io/Statement/v0.1"  # what cosign 2.6 writes
    assert statement["predicateType"] == PROVENANCE_TYPE
    assert statement["subject"] == [
        {"name": "ghcr.io/acme/mcp-trader/binance-provider", "digest": {"sha256": "ab" * 32}}
    ]
    facts = provenance.facts([statement])
    assert (facts.repository, facts.ref, facts.commit) == (SOURCE.repository, SOURCE.ref, SHA)
    assert (facts.builder, facts.invocation) == (ACTIONS.id, ACTIONS.invocation)
    assert facts.base_images == (
        f"distroless: {DISTROLESS}",
        f"rust: {RUST}",
    )
    assert facts.lines()[0] == f"source: {SOURCE.repository} refs/heads/main @ {SHA}"


def test_facts_read_the_invocation_as_cosign_re_encodes_it() -> None:
    statement = provenance.statement("ghcr.io/a/b", DIGEST, build())
    metadata = statement["predicate"]["runDetails"]["metadata"]
    metadata["invocationID"] = metadata.pop("invocationId")
    assert provenance.facts([statement]).invocation == ACTIONS.invocation


def test_incomplete_provenance_is_refused() -> None:
    with pytest.raises(VerificationError, match="lacks 'runDetails'"):
        provenance.facts([{"predicate": {"buildDefinition": build()["buildDefinition"]}}])
    with pytest.raises(VerificationError, match="no provenance statement"):
        provenance.facts([])
