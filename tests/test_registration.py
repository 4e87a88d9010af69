"""The module registers through the SDK's own code, as the engine's Python runtime runs it.

The 0.21 runtime (dagger/dagger sdk/python/runtime) starts `/runtime --register`, i.e.
`dagger.mod.cli.app(None, register=True)`, with DAGGER_MODULE, DAGGER_MAIN_OBJECT and
DAGGER_DEFAULT_PYTHON_PACKAGE set and DAGGER_MODULE_FILE naming the output; the SDK reads those
at import time, so the registration runs in a fresh interpreter against the engine double. The
type definitions it sends (module -> objects -> functions -> arguments) are decoded from the
double's IDs. A signature the SDK cannot turn into a type definition fails here.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp_trader.sources import SOURCE_IGNORE

from tests.enginedouble import EngineDouble, Obj

REPO = Path(__file__).resolve().parent.parent

#: The functions this area owns (issue 7), by Python name.
BUILD_AND_TEST = {
    "build_provider",
    "build_gateway",
    "build_all",
    "test",
    "provider_builder",
    "gateway_builder",
}
CHECKS = {
    "provider_format",
    "provider_lint",
    "provider_tests",
    "gateway_lint",
    "gateway_types",
    "gateway_tests",
}
#: Functions with side effects must never be cached (DESIGN.md §3), whoever adds them.
SIDE_EFFECTS = {"publish", "deploy", "rollback", "ci"}


@dataclass
class Function:
    name: str
    description: str = ""
    args: dict[str, dict[str, Any]] = field(default_factory=dict)
    check: bool = False
    cache_policy: str | None = None
    return_type: str = ""


def typedef_name(obj: Obj) -> str:
    for step in reversed(obj.steps):
        if step.field in ("withObject", "withScalar", "withKind", "withListOf", "withEnum"):
            return f"{step.field}:{step.args.get('name') or step.args.get('kind') or ''}"
    return "?"


def decode_function(obj: Obj) -> Function:
    head = obj.steps[0]
    assert head.field == "function", obj
    fn = Function(head.args["name"], return_type=typedef_name(head.args["returnType"]))
    for step in obj.steps[1:]:
        if step.field == "withDescription":
            fn.description = step.args["description"]
        elif step.field == "withArg":
            fn.args[step.args["name"]] = dict(step.args)
        elif step.field == "withCheck":
            fn.check = True
        elif step.field == "withCachePolicy":
            fn.cache_policy = step.args["policy"]
    return fn


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("register") / "module.json"
    with EngineDouble() as engine:
        env = {
            **os.environ,
            **engine.env,
            "DAGGER_MODULE": "mcp-trader",
            "DAGGER_MAIN_OBJECT": "McpTrader",
            "DAGGER_DEFAULT_PYTHON_PACKAGE": "mcp_trader",
            "DAGGER_MODULE_FILE": str(out),
            "PYTHONPATH": str(REPO / "ci" / "src"),
        }
        # runtime.py of the 0.21 runtime, verbatim in effect.
        code = "import sys; from dagger.mod.cli import app; sys.exit(app(None, True))"
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=REPO / "ci",
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"registration failed:\n{proc.stdout}\n{proc.stderr}"
        module = engine.obj(json.loads(out.read_text()))
        assert module.steps[0].field == "module"
        objects: dict[str, Any] = {}
        for step in module.find_all("withObject"):
            typedef = step.args["object"]
            (decl,) = [s for s in typedef.steps if s.field == "withObject"]
            functions = {
                fn.name: fn
                for s in typedef.find_all("withFunction")
                for fn in [decode_function(s.args["function"])]
            }
            ctor = typedef.find("withConstructor")
            objects[decl.args["name"]] = {
                "description": decl.args.get("description"),
                "functions": functions,
                "constructor": decode_function(ctor.args["function"]) if ctor else None,
            }
        return {"module": module, "objects": objects}


def test_main_object_registers_with_every_build_and_test_function(
    registered: dict[str, Any],
) -> None:
    main = registered["objects"]["McpTrader"]
    assert main["description"]
    names = set(main["functions"])
    assert names >= BUILD_AND_TEST | CHECKS, sorted(BUILD_AND_TEST | CHECKS - names)


def test_every_function_and_argument_is_documented(registered: dict[str, Any]) -> None:
    for obj_name, obj in registered["objects"].items():
        fns: list[Function] = list(obj["functions"].values())
        if obj["constructor"] is not None:
            fns.append(obj["constructor"])
        for fn in fns:
            assert fn.description.strip() or fn.name == "", f"{obj_name}.{fn.name} has no Doc"
            for arg, spec in fn.args.items():
                assert str(spec.get("description") or "").strip(), f"{obj_name}.{fn.name}({arg})"


def test_checks_are_flagged_for_dagger_check(registered: dict[str, Any]) -> None:
    functions = registered["objects"]["McpTrader"]["functions"]
    assert {n for n, f in functions.items() if f.check} == CHECKS


def test_builds_return_containers_and_take_an_optional_platform(
    registered: dict[str, Any],
) -> None:
    functions = registered["objects"]["McpTrader"]["functions"]
    for name in ("build_provider", "build_gateway", "provider_builder", "gateway_builder"):
        fn = functions[name]
        assert fn.return_type == "withObject:Container", (name, fn.return_type)
        platform = fn.args["platform"]
        assert platform["typeDef"].find("withOptional") is not None
        assert typedef_name(platform["typeDef"]) == "withScalar:Platform"
    assert functions["build_all"].return_type == "withKind:STRING_KIND"


def test_side_effect_functions_are_never_cached(registered: dict[str, Any]) -> None:
    functions = registered["objects"]["McpTrader"]["functions"]
    for name in SIDE_EFFECTS & set(functions):
        assert functions[name].cache_policy == "Never", name
    for name in BUILD_AND_TEST:
        assert functions[name].cache_policy is None, f"{name} is pure: let the engine cache it"


def test_source_defaults_to_the_repo_root_with_the_allowlist(registered: dict[str, Any]) -> None:
    ctor = registered["objects"]["McpTrader"]["constructor"]
    source = ctor.args["source"]
    assert source["defaultPath"] == "/"
    assert source["ignore"] == SOURCE_IGNORE
    assert typedef_name(source["typeDef"]) == "withObject:Directory"


def test_dagger_json_pins_the_engine_the_sdk_was_tested_with() -> None:
    from importlib.metadata import version

    config = json.loads((REPO / "dagger.json").read_text())
    assert config["name"] == "mcp-trader"  # -> package mcp_trader, main object McpTrader
    assert config["sdk"] == {"source": "python"}
    assert config["source"] == "ci"
    assert config["engineVersion"] == f"v{version('dagger-io')}"
    assert (REPO / "ci" / "src" / "mcp_trader" / "__init__.py").exists()
