"""labels.py: the OCI image labels."""

import pytest
from mcp_trader.labels import oci_labels


def test_labels_omit_unknown_values_and_default_the_licence() -> None:
    assert oci_labels(title="t", description="d") == {
        "org.opencontainers.image.title": "t",
        "org.opencontainers.image.description": "d",
        "org.opencontainers.image.licenses": "MIT",
    }
    full = oci_labels(
        title="t",
        source="https://github.com/o/r",
        revision="a" * 40,
        version="1.2.3",
        created="2026-11-28T12:00:00Z",
        licenses=None,
    )
    assert set(full) == {
        f"org.opencontainers.image.{k}"
        for k in ("title", "source", "revision", "version", "created")
    }


def test_labels_refuse_empty_values() -> None:
    with pytest.raises(ValueError, match="'revision' is empty"):
        oci_labels(revision="  ")
