"""platforms.py: the platforms asked for, and the platform of the image that comes out."""

import dagger
import pytest
from dagger import dag
from mcp_trader.platforms import (
    DEFAULT,
    SUPPORTED,
    PlatformMismatchError,
    normalize,
    validate_platform,
    validate_platforms,
    verified,
)

from tests.enginedouble import EngineDouble


def test_one_platform() -> None:
    assert validate_platform(None) == DEFAULT == "linux/amd64"
    assert validate_platform("linux/arm64/v8") == "linux/arm64"
    assert normalize("linux/arm64/v8") == "linux/arm64"
    assert normalize("linux/amd64") == "linux/amd64"
    with pytest.raises(ValueError, match="unsupported platform 'linux/s390x': expected one of"):
        validate_platform("linux/s390x")


#: Platform lists every validator (and publish's plan) refuses, with the message's key part.
BAD_PLATFORMS = [
    ([], "no platform given"),
    (["linux/arm/v7"], "unsupported platform 'linux/arm/v7': expected one of linux/amd64"),
    (["linux/amd64", "linux/amd64"], "'linux/amd64' is given more than once"),
    (["amd64"], "unsupported platform 'amd64'"),
    (["Linux/AMD64"], "unsupported platform"),
]


@pytest.mark.parametrize(("platforms", "message"), BAD_PLATFORMS)
def test_bad_platforms_are_refused(platforms: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_platforms(platforms)


def test_platforms() -> None:
    assert validate_platforms(["linux/arm64", "linux/amd64"]) == ("linux/arm64", "linux/amd64")
    assert validate_platforms("linux/arm64") == ("linux/arm64",)
    assert validate_platforms(["linux/arm64/v8"]) == ("linux/arm64",)  # as the builds normalize it
    with pytest.raises(ValueError, match="'linux/arm64/v8' is given more than once"):
        validate_platforms(["linux/arm64", "linux/arm64/v8"])
    assert set(SUPPORTED) == {"linux/amd64", "linux/arm64"}


async def test_an_image_of_the_asked_platform_passes(engine: EngineDouble) -> None:
    image = dag.container(platform=dagger.Platform("linux/arm64")).from_("registry.invalid/x:1")
    assert await verified(image, dagger.Platform("linux/arm64"), what="x") is image


async def test_an_image_of_another_platform_is_refused(engine: EngineDouble) -> None:
    # What the engine answers when the base is a single-platform (amd64) manifest.
    engine.answer("Container.platform", "linux/amd64")
    image = dag.container(platform=dagger.Platform("linux/arm64")).from_("registry.invalid/x:1")
    with pytest.raises(PlatformMismatchError) as err:
        await verified(image, dagger.Platform("linux/arm64"), what="mcp-gateway")
    assert str(err.value).startswith(
        "the mcp-gateway image built for linux/arm64 says it is for linux/amd64"
    )
    assert "multi-platform index" in str(err.value)
