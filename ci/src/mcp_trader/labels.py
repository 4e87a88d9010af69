"""OCI image labels (the `org.opencontainers.image.*` keys of the image-spec's annotations.md).

The builds set what is known from the source alone (title, description, licenses); publishing
adds what depends on the commit and the registry (source, revision, version, created), because
those change on every push and would otherwise invalidate the build cache for nothing.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "org.opencontainers.image."
#: The repository's licence (LICENSE), an SPDX expression as the spec asks.
LICENSES: Final = "MIT"


def oci_labels(
    *,
    title: str | None = None,
    description: str | None = None,
    source: str | None = None,
    revision: str | None = None,
    version: str | None = None,
    created: str | None = None,
    licenses: str | None = LICENSES,
) -> dict[str, str]:
    """The OCI label dict for the given values, omitting the unknown (None) ones.

    An empty string is refused rather than published as a blank label: it is always a caller's
    mistake (an unset CI variable, typically).
    """
    values = {
        "title": title,
        "description": description,
        "source": source,
        "revision": revision,
        "version": version,
        "created": created,
        "licenses": licenses,
    }
    labels: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if not value.strip():
            raise ValueError(f"OCI label {key!r} is empty: pass a value or None to omit it")
        labels[PREFIX + key] = value
    return labels
