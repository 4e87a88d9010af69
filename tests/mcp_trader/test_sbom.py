"""Reading SPDX 2.3 SBOMs (sbom.py): pure. A real syft SBOM is read in tests/supply."""

from __future__ import annotations

from typing import Any

import pytest
from mcp_trader import sbom


def package(name: str, version: str, purl: str | None) -> dict[str, Any]:
    refs = [
        {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}
    ]
    return {"name": name, "versionInfo": version, "externalRefs": refs if purl else []}


DOC: dict[str, Any] = {
    "spdxVersion": "SPDX-2.3",
    "name": "ghcr.io/acme/mcp-trader/binance-provider",
    "packages": [
        package("libc6", "2.36-9+deb12u10", "pkg:deb/debian/libc6@2.36-9+deb12u10?arch=amd64"),
        package("tonic", "0.14.2", "pkg:cargo/tonic@0.14.2"),
        package("tokio", "1.47.1", "pkg:cargo/tokio@1.47.1"),
        package("mcp", "1.2.0", "pkg:pypi/mcp@1.2.0"),
        package("stdlib", "go1.24", "pkg:golang/stdlib@go1.24"),
        package("the image itself", "", None),
    ],
}


def test_summary_counts_each_ecosystem() -> None:
    summary = sbom.summarize(DOC)
    assert summary.counts == {"deb": 1, "cargo": 2, "pypi": 1, "golang": 1}
    assert summary.line() == (
        "ghcr.io/acme/mcp-trader/binance-provider: 1 Debian packages, 1 Python distributions, "
        "2 Rust crates, 1 other"
    )


def test_versions_per_ecosystem() -> None:
    assert sbom.versions(DOC, "cargo") == {"tonic": "0.14.2", "tokio": "1.47.1"}
    assert sbom.versions(DOC, "deb") == {"libc6": "2.36-9+deb12u10"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({"spdxVersion": "SPDX-2.2", "packages": []}, "SPDX-2.2"),
        ({"bomFormat": "CycloneDX"}, "spdxVersion is None"),
        ({"spdxVersion": "SPDX-2.3"}, "no `packages` list"),
    ],
)
def test_other_documents_are_refused(document: Any, message: str) -> None:
    with pytest.raises(sbom.SbomError, match=message):
        sbom.summarize(document)
