"""The platforms the images are built for, checked before anything is asked of the engine."""

from __future__ import annotations

from typing import Final

import dagger

#: What both builds can produce without emulation: the provider is cross-compiled on the
#: engine's own platform, and the gateway's virtualenv is resolved for the target platform.
SUPPORTED: Final = ("linux/amd64", "linux/arm64")
DEFAULT: Final = "linux/amd64"


def normalize(platform: str) -> str:
    """`linux/arm64/v8` -> `linux/arm64` (the variant is implied for arm64); others unchanged."""
    return platform[: -len("/v8")] if platform == "linux/arm64/v8" else platform


def check(platform: dagger.Platform | str | None) -> dagger.Platform:
    """The requested platform (the default when None), refused when not supported."""
    if platform is None:
        return dagger.Platform(DEFAULT)
    normalized = normalize(str(platform))
    if normalized not in SUPPORTED:
        raise ValueError(
            f"unsupported platform {str(platform)!r}: expected one of {', '.join(SUPPORTED)}"
        )
    return dagger.Platform(normalized)
