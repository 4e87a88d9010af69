"""Regenerate the committed provider.v1 stubs from ../providers/proto.

Run from mcp-gateway/: ``uv run python scripts/generate_proto.py``. The stubs are committed (so the
runtime image needs no protoc); ``tests/test_proto_stubs.py`` fails when they no longer match the
.proto. ``--out DIR`` writes the tree somewhere else (the test uses a temporary directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

GATEWAY_DIR = Path(__file__).resolve().parent.parent
PROTO_ROOT = GATEWAY_DIR.parent / "providers" / "proto"
PROTO_FILE = PROTO_ROOT / "provider" / "v1" / "provider.proto"
# The virtual import path maps the .proto into our package, so the generated `_grpc` module
# imports `mcp_gateway._proto.provider.v1.provider_pb2` instead of a top-level `provider`.
VIRTUAL_ROOT = "mcp_gateway/_proto"
# Files protoc writes, relative to the output root (besides the hand-written __init__.py files).
GENERATED = tuple(
    f"{VIRTUAL_ROOT}/provider/v1/{name}"
    for name in (
        "provider_pb2.py",
        "provider_pb2.pyi",
        "provider_pb2_grpc.py",
        "provider_pb2_grpc.pyi",
    )
)


def generate(out_root: Path) -> None:
    """Run protoc (from grpcio-tools) with the mypy-protobuf plugins into ``out_root``."""
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={VIRTUAL_ROOT}={PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        str(PROTO_FILE),
    ]
    code = protoc.main(args)
    if code != 0:
        raise RuntimeError(f"protoc failed with exit code {code} on {PROTO_FILE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=GATEWAY_DIR / "src",
        help="output root (default: mcp-gateway/src)",
    )
    generate(parser.parse_args().out)
    print(f"generated {len(GENERATED)} files under {parser.parse_args().out}", file=sys.stderr)


if __name__ == "__main__":
    main()
