"""Reading an SPDX 2.3 JSON SBOM (syft's `spdx-json@2.3`): what a verifier shows a user.

Pure functions over the parsed document. Each package syft finds carries a package URL (purl)
whose type names its ecosystem: `pkg:deb/debian/libc6@2.36-9`, `pkg:pypi/mcp@1.2.0`,
`pkg:cargo/tonic@0.14.2`; the summary counts packages by that type, so "the binary's crates are
listed" is a number a user (and a test) can read.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

SPDX_VERSION: Final = "SPDX-2.3"
#: The ecosystems our images hold, in the order a summary lists them, with a reader's name.
ECOSYSTEMS: Final = {
    "deb": "Debian packages",
    "pypi": "Python distributions",
    "cargo": "Rust crates",
}

_PURL = re.compile(
    r"pkg:(?P<type>[a-z0-9.+-]+)/(?:[^@?#]*/)?(?P<name>[^/@?#]+)(?:@(?P<version>[^?#]+))?"
)


class SbomError(ValueError):
    """The document is not an SPDX 2.3 SBOM this module can read."""


@dataclass(frozen=True)
class Package:
    ecosystem: str
    name: str
    version: str


@dataclass(frozen=True)
class Summary:
    """What an SBOM lists: its subject and the number of packages per ecosystem."""

    subject: str
    counts: dict[str, int]

    def line(self) -> str:
        parts = [f"{self.counts.get(kind, 0)} {label}" for kind, label in ECOSYSTEMS.items()]
        others = sum(n for kind, n in self.counts.items() if kind not in ECOSYSTEMS)
        if others:
            parts.append(f"{others} other")
        return f"{self.subject}: " + ", ".join(parts)


def check(document: Any) -> dict[str, Any]:
    """The document, refused unless it is SPDX 2.3 JSON with a package list."""
    if not isinstance(document, dict):
        raise SbomError(f"an SBOM is a JSON object, got {type(document).__name__}")
    version = document.get("spdxVersion")
    if version != SPDX_VERSION:
        raise SbomError(f"SBOM spdxVersion is {version!r}, expected {SPDX_VERSION!r}")
    if not isinstance(document.get("packages"), list):
        raise SbomError("SBOM has no `packages` list")
    return document


def packages(document: Any) -> list[Package]:
    """Every package with a package URL, as (ecosystem, name, version)."""
    found: list[Package] = []
    for package in check(document)["packages"]:
        if not isinstance(package, dict):
            continue
        for ref in package.get("externalRefs") or []:
            if not isinstance(ref, dict) or ref.get("referenceType") != "purl":
                continue
            match = _PURL.match(str(ref.get("referenceLocator", "")))
            if match is None:
                continue
            found.append(
                Package(
                    ecosystem=match["type"],
                    name=str(package.get("name") or match["name"]),
                    version=str(package.get("versionInfo") or match["version"] or ""),
                )
            )
            break
    return found


def summarize(document: Any) -> Summary:
    """The subject (the image the SBOM was made from) and package counts per ecosystem."""
    checked = check(document)
    counts = Counter(p.ecosystem for p in packages(checked))
    return Summary(subject=str(checked.get("name") or "unnamed SBOM"), counts=dict(counts))


def versions(document: Any, ecosystem: str) -> dict[str, str]:
    """name -> version of the packages of one ecosystem (`deb`, `pypi`, `cargo`)."""
    return {p.name: p.version for p in packages(document) if p.ecosystem == ecosystem}
