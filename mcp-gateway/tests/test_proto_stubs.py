"""The committed provider.v1 stubs are exactly what the .proto generates today."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

GATEWAY_DIR = Path(__file__).resolve().parent.parent


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_proto", GATEWAY_DIR / "scripts" / "generate_proto.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    generator = _load_generator()
    generator.generate(tmp_path)
    stale = []
    for relative in generator.GENERATED:
        fresh = (tmp_path / relative).read_text(encoding="utf-8")
        committed = GATEWAY_DIR / "src" / relative
        if not committed.exists() or committed.read_text(encoding="utf-8") != fresh:
            stale.append(relative)
    assert not stale, (
        f"stale generated stubs: {stale}; run `uv run python scripts/generate_proto.py` in "
        "mcp-gateway/ and commit the result"
    )


def test_stubs_speak_the_provider_v1_wire_names() -> None:
    from mcp_gateway._proto.provider.v1 import provider_pb2

    service = provider_pb2.DESCRIPTOR.services_by_name["Provider"]
    assert service.full_name == "provider.v1.Provider"
    assert {m.name for m in service.methods} == {"ListCapabilities", "Invoke"}
