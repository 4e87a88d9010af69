"""Running the module's cosign/syft/crane argv on the host, and the test images they work on.

The `Runner` here is the host twin of the module's tools container: it runs exactly the argv
lists cosign.py builds, with the same tool versions (.ci/setup.d/50-supply-chain.sh), against
the local registry on 127.0.0.1:5000 (plain HTTP on loopback, which cosign, crane and syft
accept without flags).

Test images come from the real binaries, like the deploy scenarios' (tests/deploy/images.py,
whose base image, gateway venv and Dockerfiles are reused): the provider binary is built with
`cargo auditable` so its crates are embedded for the SBOM to find; every build carries a fresh
nonce label, so each session works on digests nobody has signed before.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mcp_trader import cosign, provenance
from mcp_trader.verify import Result

from tests.deploy import images

REPO = images.REPO
PREFIX = f"{images.PREFIX}-supply"
TOOLS = ("cosign", "syft", "crane", "cargo-auditable")
REVISION = "5a5a5a5" + "0" * 33
SOURCE = provenance.Source("https://github.com/acme/mcp-trader", "refs/heads/main", REVISION)
TAG = f"sha-{REVISION[:7]}"


def why_unusable() -> str | None:
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run .ci/setup.d/50-supply-chain.sh)"
    return None


class HostRunner:
    """Runs argv lists on the host, with a private docker config and a cosign key password."""

    def __init__(self, home: Path, password: str = "") -> None:
        self.home = home
        self.env = {
            **os.environ,
            "HOME": str(home),
            "DOCKER_CONFIG": str(home / "docker"),
            "COSIGN_PASSWORD": password,
            # No interactive prompt, no update check, no telemetry: tests run offline.
            "COSIGN_YES": "true",
            "SYFT_CHECK_FOR_APP_UPDATE": "false",
        }
        (home / "docker").mkdir(parents=True, exist_ok=True)
        self.commands: list[list[str]] = []

    async def __call__(self, argv: list[str]) -> Result:
        self.commands.append(list(argv))
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=self.home,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=600)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())

    def sync(self, argv: list[str]) -> Result:
        return asyncio.run(self(argv))

    def ok(self, argv: list[str]) -> str:
        result = self.sync(argv)
        if result.exit_code != 0:
            raise RuntimeError(
                f"{' '.join(argv)} exited {result.exit_code}\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    password: str


def generate_key_pair(directory: Path, password: str) -> KeyPair:
    """`cosign generate-key-pair` (an encrypted private key and its public key)."""
    directory.mkdir(parents=True, exist_ok=True)
    images.run(
        ["cosign", "generate-key-pair"],
        cwd=directory,
        env={**os.environ, "COSIGN_PASSWORD": password, "HOME": str(directory)},
    )
    return KeyPair(directory / "cosign.key", directory / "cosign.pub", password)


@dataclass(frozen=True)
class Pushed:
    """One image in the registry: its tag reference and its digest."""

    service: str
    repository: str
    tag: str
    digest: str

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}"

    @property
    def pinned(self) -> str:
        return f"{self.repository}@{self.digest}"


def digest_of(runner: HostRunner, reference: str) -> str:
    return runner.ok(cosign.digest_argv(reference)).strip()


def push(runner: HostRunner, service: str, context: Path, dockerfile: str, tag: str) -> Pushed:
    """Build one test image with a fresh nonce label, push it, and read its digest back."""
    repository = f"{PREFIX}/{service}"
    ref = f"{repository}:{tag}"
    images.run(
        [
            "docker",
            "build",
            "--quiet",
            "--file",
            str(images.HERE / "images" / dockerfile),
            "--build-arg",
            f"BASE={images.ensure_base_image()}",
            "--build-arg",
            f"VERSION={tag}",
            "--build-arg",
            f"REVISION={REVISION}",
            "--label",
            f"test.nonce={uuid.uuid4().hex}",
            "--tag",
            ref,
            str(context),
        ],
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    images.run(["docker", "push", "--quiet", ref])
    images.run(["docker", "image", "rm", "--no-prune", ref])
    return Pushed(service, repository, tag, digest_of(runner, ref))


@dataclass
class Contexts:
    provider: Path
    gateway: Path


def build_contexts(root: Path) -> Contexts:
    """Docker build contexts holding the auditable provider binary and the gateway venv."""
    provider = root / "provider"
    gateway = root / "gateway"
    provider.mkdir()
    gateway.mkdir()
    shutil.copy2(images.provider_binary(auditable=True), provider / "binance-provider")
    # Debug info only: the `.dep-v0` section cargo auditable adds is not debug info and stays.
    images.run(["strip", "--strip-debug", str(provider / "binance-provider")])
    images.gateway_venv(gateway)
    return Contexts(provider, gateway)


def base_image(runner: HostRunner) -> str:
    """The test base image, pushed so provenance can record it by registry digest."""
    ref = f"{PREFIX}/base:bookworm-python3"
    images.run(["docker", "tag", images.ensure_base_image(), ref])
    images.run(["docker", "push", "--quiet", ref])
    return f"{ref}@{digest_of(runner, ref)}"


def sbom_file(runner: HostRunner, image: Pushed, out: Path) -> Path:
    """syft's SBOM of a pushed image, made as the module makes it: from an OCI archive of the
    image (what Dagger's `Container.as_tarball` gives), via the module's own argv."""
    with tempfile.TemporaryDirectory(prefix="oci-", dir=runner.home) as tmp:
        layout = Path(tmp) / "layout"
        runner.ok(["crane", "pull", "--format=oci", image.pinned, str(layout)])
        archive = Path(tmp) / "image.tar"
        # Entries named like Dagger's tarball (no "./" prefix: syft refuses that as traversal).
        images.run(
            ["tar", "-C", str(layout), "-cf", str(archive), "oci-layout", "index.json", "blobs"]
        )
        runner.ok(
            cosign.sbom_argv(
                f"oci-archive:{archive}", str(out), name=image.repository, version=image.tag
            )
        )
    return out


def provenance_file(image: Pushed, base: str, out: Path, **parameters: str) -> Path:
    predicate = provenance.predicate(
        source=SOURCE,
        parameters={"service": image.service, "platform": "linux/amd64", **parameters},
        base_images={"bookworm-python3": base},
        builder=provenance.local_builder("tests@mcp-trader"),
    )
    out.write_text(json.dumps(predicate))
    return out


def sign_and_attest(
    runner: HostRunner, image: Pushed, key: KeyPair, files: Mapping[str, Path]
) -> None:
    """What publish does for one pushed digest: sign, attest provenance, attest SBOM."""
    from mcp_trader.verify import sign_steps

    signer = cosign.KeySigner(str(key.private))
    runner.env["COSIGN_PASSWORD"] = key.password
    for _, argv in sign_steps(
        image.pinned,
        signer,
        provenance_file=str(files["provenance"]),
        sbom_file=str(files["sbom"]),
    ):
        runner.ok(argv)


def as_platform(runner: HostRunner, image: Pushed, platform: str, tag: str) -> Pushed:
    """`image` with its config saying `platform` (and a fresh nonce label), pushed as `tag`.

    The second platform of the multi-platform tests: no arm64 binary is built on this amd64
    machine (no emulation, no cross toolchain for the test images), and what those tests check
    (which digest is signed and attested, which manifest the index lists for which platform)
    does not read the binaries. The SBOM of it is syft's real scan, like any other image's.
    """
    runner.ok(
        [
            "crane",
            "mutate",
            "--set-platform",
            platform,
            "--label",
            f"test.nonce={uuid.uuid4().hex}",
            "--tag",
            f"{image.repository}:{tag}",
            image.pinned,
        ]
    )
    return Pushed(
        image.service, image.repository, tag, digest_of(runner, f"{image.repository}:{tag}")
    )


def push_index(runner: HostRunner, members: list[Pushed], tag: str) -> Pushed:
    """An OCI index of `members` (each listed under its config's platform), pushed as `tag`."""
    repository = members[0].repository
    manifests = [arg for member in members for arg in ("--manifest", member.pinned)]
    runner.ok(["crane", "index", "append", *manifests, "--tag", f"{repository}:{tag}"])
    return Pushed(members[0].service, repository, tag, digest_of(runner, f"{repository}:{tag}"))


def sign_multi_platform(
    runner: HostRunner,
    index: Pushed,
    platforms: Mapping[str, Pushed],
    key: KeyPair,
    base: str,
    home: Path,
) -> None:
    """What publish does for a multi-platform index: each platform manifest signed and
    attested with its own SBOM and provenance (sign_steps), then the index signed alone."""
    for platform, image in platforms.items():
        name = f"{image.service}-{platform.replace('/', '-')}-{image.digest[7:19]}"
        files = {
            "provenance": provenance_file(
                image, base, home / f"{name}.prov.json", platform=platform
            ),
            "sbom": sbom_file(runner, image, home / f"{name}.spdx.json"),
        }
        sign_and_attest(runner, image, key, files)
    runner.ok(cosign.sign_argv(index.pinned, cosign.KeySigner(str(key.private))))
