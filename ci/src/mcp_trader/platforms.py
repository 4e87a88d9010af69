"""The platforms the images are built for: checked before anything is asked of the engine, and
checked again on the image that comes out.

The second check matters because the engine takes an image's platform from its base image's
config: a base pinned to a single-platform manifest (not a multi-platform index) yields, for
`--platform linux/arm64`, an image whose config says linux/amd64 around a binary built for arm64,
with no error from the engine itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import dagger

#: What both builds can produce without emulation: the provider is cross-compiled on the
#: engine's own platform, and the gateway's virtualenv is resolved for the target platform.
SUPPORTED: Final = ("linux/amd64", "linux/arm64")
DEFAULT: Final = "linux/amd64"


class PlatformMismatchError(Exception):
    """A build for one platform produced an image that says it is for another."""


def normalize(platform: str) -> str:
    """`linux/arm64/v8` -> `linux/arm64` (the variant is implied for arm64); others unchanged."""
    return platform[: -len("/v8")] if platform == "linux/arm64/v8" else platform


def validate_platform(platform: dagger.Platform | str | None) -> dagger.Platform:
    """The requested platform, normalized (the default when None); refused when not supported."""
    if platform is None:
        return dagger.Platform(DEFAULT)
    normalized = normalize(str(platform))
    if normalized not in SUPPORTED:
        raise ValueError(
            f"unsupported platform {str(platform)!r}: expected one of {', '.join(SUPPORTED)}"
        )
    return dagger.Platform(normalized)


def validate_platforms(platforms: Sequence[str]) -> tuple[str, ...]:
    """Several platforms (a multi-platform publish), each validated; refused when none is given
    or one is given twice."""
    if isinstance(platforms, str):
        # A bare string would otherwise be read character by character.
        platforms = [platforms]
    if not platforms:
        raise ValueError(f"no platform given: expected one or more of {', '.join(SUPPORTED)}")
    checked: list[str] = []
    for platform in platforms:
        name = str(validate_platform(platform))
        if name in checked:
            raise ValueError(
                f"platform {platform!r} is given more than once (as {name}): list each once"
            )
        checked.append(name)
    return tuple(checked)


async def verified(
    image: dagger.Container, platform: dagger.Platform, *, what: str
) -> dagger.Container:
    """`image`, once its own platform is known to be `platform`; `PlatformMismatchError` if not.

    Asking for the platform resolves the base image's config, not the build's execs.
    """
    actual = normalize(str(await image.platform()))
    if actual != normalize(str(platform)):
        raise PlatformMismatchError(
            f"the {what} image built for {platform} says it is for {actual}: its base image has "
            f"no {platform} variant (pin base images by the digest of their multi-platform "
            "index, not of one platform's manifest)"
        )
    return image
