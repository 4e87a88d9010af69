"""The module registers through the SDK's own code (tests/registration.py): every function,
its arguments and docs, as `dagger functions` would list them."""

import json
from typing import Any

from mcp_trader.sources import SOURCE_IGNORE

from tests.registration import REPO, Function, typedef_name

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
