"""The module's registration through the SDK's own code, as the engine's Python runtime runs it.

The 0.21 runtime (dagger/dagger sdk/python/runtime) starts `/runtime --register`, i.e.
`dagger.mod.cli.app(None, register=True)`, with DAGGER_MODULE, DAGGER_MAIN_OBJECT and
DAGGER_DEFAULT_PYTHON_PACKAGE set and DAGGER_MODULE_FILE naming the output; the SDK reads those
at import time, so the registration runs in a fresh interpreter against the engine double. The
type definitions it sends (module -> objects -> functions -> arguments) are decoded from the
double's IDs. A signature the SDK cannot turn into a type definition fails `register()`.
Tests use the session fixtures `registered` / `registered_functions` (tests/conftest.py).
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.enginedouble import EngineDouble, Obj

REPO = Path(__file__).resolve().parent.parent


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


def register(out: Path) -> dict[str, Any]:
    """Register the module as the runtime does; the decoded objects, by name."""
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
        if proc.returncode != 0:
            raise AssertionError(f"registration failed:\n{proc.stdout}\n{proc.stderr}")
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


def is_optional(arg: dict[str, Any]) -> bool:
    """Whether a registered argument may be omitted (its type is marked optional)."""
    return arg["typeDef"].find("withOptional") is not None


def object_name(arg: dict[str, Any]) -> str | None:
    """The object type of a registered argument (e.g. "Secret"), None for scalars."""
    typedef: Obj = arg["typeDef"]
    return str(typedef.arg("withObject", "name")) if typedef.find("withObject") else None


def required(fn: Function) -> set[str]:
    """The arguments a caller must give: no default and not optional."""
    return {n for n, a in fn.args.items() if a.get("defaultValue") is None and not is_optional(a)}
