"""The engine's GraphQL schema, derived from the installed SDK's generated client.

`dagger/client/gen.py` is generated from the engine's schema and is regular enough to be read
back: Scalar / Enum / Input / Protocol / Type classes, and methods that call
`self._select("graphqlField", [Arg("graphqlArg", value, default)])` with typed parameters and a
return annotation. Walking its AST gives SDL that graphql-core accepts, so the double serves the
exact API surface of the SDK version the module is pinned to (dagger-io==0.21.11): a field or
argument the SDK does not know is unknown to the double too.
"""

from __future__ import annotations

import ast
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import dagger.client.gen
from graphql import GraphQLSchema, build_schema

_BUILTIN = {"str": "String", "int": "Int", "bool": "Boolean", "float": "Float"}
# gen.py's Protocol classes are GraphQL interfaces; their fields live on `_<Name>Client`.
_INTERFACES = ("Node", "Syncer", "Exportable")


@dataclass
class _ArgDef:
    name: str
    annotation: ast.expr
    default: str | None = None  # GraphQL literal of the engine's default, when gen.py has one


def _default_literal(node: ast.expr | None) -> str | None:
    """gen.py's `Arg(name, value, default)` default as a GraphQL literal (None: no default).

    The SDK omits an argument equal to its default; the engine then applies the default, and so
    does the double (graphql-core fills it in), so tests see what the engine would use.
    """
    if node is None:
        return None
    if isinstance(node, ast.Constant) and node.value is not None:
        return json.dumps(node.value)  # str, bool, int, float: JSON spelling is GraphQL's
    if isinstance(node, ast.List) and not node.elts:
        return "[]"
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr  # an enum member
    return None


@dataclass
class _FieldDef:
    name: str
    args: list[_ArgDef]
    returns: ast.expr | None
    kind: str  # "select" | "sync" | "object_list"
    list_element: str | None = None
    doc: str | None = None


@dataclass
class _ClassDef:
    name: str
    kind: str  # "scalar" | "enum" | "input" | "type" | "interface"
    doc: str | None
    members: list[str] = field(default_factory=list)  # enum values
    inputs: list[tuple[str, ast.expr]] = field(default_factory=list)
    fields: list[_FieldDef] = field(default_factory=list)


def _annotation_name(node: ast.expr) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.strip()
    return ast.unparse(node)


def _parse_type(text: str) -> tuple[str, bool, bool]:
    """Split `X | None`, `list[X]`, `'X'` into (inner name, nullable, is_list)."""
    text = text.replace("'", "").replace('"', "").strip()
    nullable = False
    if text.endswith("| None"):
        nullable = True
        text = text[: -len("| None")].strip()
    is_list = False
    if text.startswith("list[") and text.endswith("]"):
        is_list = True
        text = text[len("list[") : -1].strip()
    return text, nullable, is_list


def _description(doc: str | None) -> str:
    if not doc:
        return ""
    # Block strings cannot contain a raw triple quote; keep descriptions short and safe.
    first = doc.strip().split("\n\n")[0].replace('"""', "'''").replace("\\", "\\\\")
    return f'"""{first}"""\n'


def _collect(source: str) -> dict[str, _ClassDef]:
    tree = ast.parse(source)
    classes: dict[str, _ClassDef] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [ast.unparse(b) for b in node.bases]
        doc = ast.get_docstring(node)
        name = node.name
        if bases == ["Scalar"]:
            classes[name] = _ClassDef(name, "scalar", doc)
        elif bases == ["Enum"]:
            members = [
                t.id
                for stmt in node.body
                if isinstance(stmt, ast.Assign)
                for t in stmt.targets
                if isinstance(t, ast.Name)
            ]
            classes[name] = _ClassDef(name, "enum", doc, members=members)
        elif bases == ["Input"]:
            inputs = [
                (stmt.target.id, stmt.annotation)
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            ]
            classes[name] = _ClassDef(name, "input", doc, inputs=inputs)
        elif bases == ["Protocol"] and name in _INTERFACES:
            classes[name] = _ClassDef(name, "interface", doc)
        elif bases in (["Type"], ["Root"]):
            gql_name = "Query" if bases == ["Root"] else name
            target = name[1 : -len("Client")] if name.startswith("_") else gql_name
            cls = classes.setdefault(
                target, _ClassDef(target, "interface" if name.startswith("_") else "type", doc)
            )
            cls.fields.extend(_fields_of(node))
    return classes


def _fields_of(node: ast.ClassDef) -> list[_FieldDef]:
    out: list[_FieldDef] = []
    for fn in node.body:
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) or fn.name.startswith("_"):
            continue
        params = {a.arg: a.annotation for a in fn.args.args + fn.args.kwonlyargs if a.annotation}
        gql_field: str | None = None
        kind = "select"
        element: str | None = None
        args: list[_ArgDef] = []
        for sub in ast.walk(fn):
            if not isinstance(sub, ast.Call):
                continue
            callee = sub.func
            if isinstance(callee, ast.Name) and callee.id == "Arg":
                gql_arg = sub.args[0]
                py_arg = sub.args[1]
                # The value is the parameter itself or an expression of it
                # (`[] if ignore is None else ignore`).
                names = [
                    n.id for n in ast.walk(py_arg) if isinstance(n, ast.Name) and n.id in params
                ]
                default = _default_literal(sub.args[2] if len(sub.args) > 2 else None)
                if isinstance(gql_arg, ast.Constant) and names:
                    args.append(_ArgDef(str(gql_arg.value), params[names[0]], default))
                elif isinstance(gql_arg, ast.Constant):
                    raise ValueError(f"{node.name}.{fn.name}: cannot type Arg {gql_arg.value!r}")
            elif isinstance(callee, ast.Attribute):
                if callee.attr == "_select" and sub.args:
                    first = sub.args[0]
                    if isinstance(first, ast.Constant):
                        gql_field = str(first.value)
                elif callee.attr == "execute_sync" and len(sub.args) >= 2:
                    second = sub.args[1]
                    if isinstance(second, ast.Constant):
                        gql_field = str(second.value)
                        kind = "sync"
                elif callee.attr == "execute_object_list" and sub.args:
                    kind = "object_list"
                    element = ast.unparse(sub.args[0])
        if gql_field is None:
            continue  # helpers such as `with_(callable)` never reach the engine
        out.append(_FieldDef(gql_field, args, fn.returns, kind, element, doc=ast.get_docstring(fn)))
    return out


class _Printer:
    def __init__(self, classes: dict[str, _ClassDef]) -> None:
        self.classes = classes

    def _named(self, name: str, *, as_input: bool, owner: str) -> str:
        if name == "Self":
            name = owner
        if name in _BUILTIN:
            return _BUILTIN[name]
        if name == "Type":  # Query.node(id:) takes any object's ID
            return "ID"
        cls = self.classes.get(name)
        if cls is None:
            raise ValueError(f"gen.py annotation {name!r} names no known GraphQL type")
        if as_input and cls.kind in ("type", "interface"):
            # Objects travel as their ID scalar (`Container` -> `ContainerID`).
            return f"{name}ID" if f"{name}ID" in self.classes else "ID"
        return name

    def ref(self, annotation: ast.expr | None, *, as_input: bool, owner: str = "") -> str:
        if annotation is None:
            return "Void"
        inner, nullable, is_list = _parse_type(_annotation_name(annotation))
        if inner == "None":
            return "Void"
        named = self._named(inner, as_input=as_input, owner=owner)
        text = f"[{named}!]" if is_list else named
        return text if nullable else f"{text}!"

    def return_type(self, owner: str, fld: _FieldDef) -> str:
        if fld.name == "id" or fld.kind == "sync":
            # gen.py types these as `str` / `Self` and documents them as the builtin `ID`
            # scalar; one type for all keeps Node / Syncer implementable (IDs are strings).
            return "ID!"
        if fld.kind == "object_list" and fld.list_element:
            return f"[{fld.list_element}!]!"
        if fld.returns is not None and _annotation_name(fld.returns) == "Self":
            return f"{owner}!"
        if fld.returns is not None and _annotation_name(fld.returns) == "None":
            return "Void"
        return self.ref(fld.returns, as_input=False, owner=owner)

    def print(self) -> str:
        parts: list[str] = []
        field_names = {c.name: {f.name for f in c.fields} for c in self.classes.values()}
        for cls in self.classes.values():
            desc = _description(cls.doc)
            if cls.kind == "scalar":
                parts.append(f"{desc}scalar {cls.name}")
            elif cls.kind == "enum":
                parts.append(f"{desc}enum {cls.name} {{ {' '.join(cls.members)} }}")
            elif cls.kind == "input":
                body = "\n".join(f"  {n}: {self.ref(a, as_input=True)}" for n, a in cls.inputs)
                parts.append(f"{desc}input {cls.name} {{\n{body}\n}}")
            else:
                implements = ""
                if cls.kind == "type":
                    names = field_names[cls.name]
                    ifaces = [i for i in _INTERFACES if i in self.classes and self._fits(i, names)]
                    if ifaces:
                        implements = " implements " + " & ".join(ifaces)
                lines = []
                seen: set[str] = set()
                for fld in cls.fields:
                    if fld.name in seen:
                        continue
                    seen.add(fld.name)
                    args = ", ".join(
                        f"{a.name}: {self.ref(a.annotation, as_input=True, owner=cls.name)}"
                        + (f" = {a.default}" if a.default is not None else "")
                        for a in fld.args
                    )
                    arglist = f"({args})" if args else ""
                    desc_line = _description(fld.doc)
                    lines.append(
                        (f"  {desc_line}" if desc_line else "") + f"  {fld.name}{arglist}: "
                        f"{self.return_type(cls.name, fld)}"
                    )
                keyword = "interface" if cls.kind == "interface" else "type"
                parts.append(
                    f"{desc}{keyword} {cls.name}{implements} {{\n" + "\n".join(lines) + "\n}"
                )
        return "\n\n".join(parts) + "\n"

    def _fits(self, iface: str, names: set[str]) -> bool:
        # An object implements an interface when it has all of the interface's fields; the
        # engine's Exportable.export(path:) is met by every `export` whose other args are optional.
        return all(f.name in names for f in self.classes[iface].fields)


def gen_py_path() -> Path:
    """The generated client the schema is derived from."""
    return Path(dagger.client.gen.__file__)


@functools.cache
def sdl() -> str:
    """SDL of the engine API as the installed SDK sees it."""
    return _Printer(_collect(gen_py_path().read_text())).print()


@functools.cache
def schema() -> GraphQLSchema:
    """The graphql-core schema (built once per process: gen.py is ~16k lines)."""
    return build_schema(sdl())
