"""The engine double: an HTTP GraphQL endpoint that records what the SDK asks for."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from graphql import (
    DocumentNode,
    GraphQLAbstractType,
    GraphQLEnumType,
    GraphQLError,
    GraphQLFormattedError,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    graphql_sync,
    parse,
)

from .schema import schema

#: Container fields the engine answers from the image config alone, running no exec (the base
#: image's config is resolved when `from` is called, not when the rootfs is built).
_CONFIG_FIELDS = frozenset(
    {
        "platform",
        "user",
        "entrypoint",
        "defaultArgs",
        "workdir",
        "label",
        "labels",
        "envVariable",
        "envVariables",
        "exposedPorts",
        "dockerHealthcheck",
    }
)

#: The engine's default platform on the machines this module targets.
DEFAULT_PLATFORM = "linux/amd64"

# Scalars whose value is an object reference (the SDK sends `Container` arguments as IDs).
_ID_SUFFIX = "ID"


def _is_id_scalar(named: GraphQLNamedType) -> bool:
    return isinstance(named, GraphQLScalarType) and named.name.endswith(_ID_SUFFIX)


def _unwrap(t: GraphQLInputType | GraphQLOutputType) -> tuple[GraphQLNamedType, bool, bool]:
    """(named type, nullable, is_list) of a field or argument type."""
    nullable = not isinstance(t, GraphQLNonNull)
    inner: Any = t.of_type if isinstance(t, GraphQLNonNull) else t
    is_list = isinstance(inner, GraphQLList)
    if is_list:
        inner = inner.of_type
        if isinstance(inner, GraphQLNonNull):
            inner = inner.of_type
    return inner, nullable, is_list


@dataclass(frozen=True)
class Step:
    """One field selected on the way to an object, e.g. `withExec(args: [...])`.

    `args` holds the arguments as the engine received them, except that object IDs are replaced
    by the `Obj` they name, so a test sees *what* was passed (`args["cache"].key`).
    """

    field: str
    key: str  # canonical JSON of the raw arguments: identity of the step
    args: Mapping[str, Any] = dc_field(compare=False, hash=False)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}: {_short(v)}" for k, v in self.args.items())
        return f"{self.field}({inner})" if inner else self.field


def _short(value: Any) -> str:
    if isinstance(value, Obj):
        return f"<{value.id}>"
    return (
        json.dumps(value)
        if not isinstance(value, list)
        else "[" + ", ".join(_short(v) for v in value) + "]"
    )


@dataclass(frozen=True)
class Obj:
    """An object the engine would hold: its GraphQL type and the steps that built it from Query.

    `id` is the string the double hands out as its ID (`Container#12`); it names one exact
    chain of calls, so equal chains get equal IDs, as in the engine.
    """

    type: str
    steps: tuple[Step, ...]
    id: str = dc_field(compare=False, hash=False)

    def find(self, field_name: str) -> Step | None:
        """The last step named `field_name` in this object's chain (None when absent)."""
        for step in reversed(self.steps):
            if step.field == field_name:
                return step
        return None

    def find_all(self, field_name: str) -> list[Step]:
        """Every step named `field_name` in this object's chain, in order."""
        return [s for s in self.steps if s.field == field_name]

    def arg(self, field_name: str, arg: str) -> Any:
        """Shortcut: `obj.arg("cacheVolume", "key")` -> the argument of the last such step."""
        step = self.find(field_name)
        if step is None:
            raise KeyError(f"{self.id} has no {field_name!r} step; chain: {self}")
        return step.args.get(arg)

    @property
    def fields(self) -> list[str]:
        """The field names of the chain, in order (`["container", "from", "withExec"]`)."""
        return [s.field for s in self.steps]

    def __str__(self) -> str:
        return ".".join(str(s) for s in self.steps) or "Query"

    def __repr__(self) -> str:
        return f"Obj({self.id}: {self})"


@dataclass(frozen=True)
class Call:
    """One field the SDK selected: `receiver.field(args)` and what it produced."""

    type: str  # the GraphQL type the field belongs to
    field: str
    args: Mapping[str, Any]  # IDs decoded to Obj, as in Step.args
    receiver: Obj
    result: Obj | None  # the object for object-typed fields


@dataclass
class QueryRecord:
    """One HTTP request the SDK sent: its text, parsed document, and the response."""

    text: str
    document: DocumentNode
    variables: dict[str, Any] | None
    data: Any
    errors: list[GraphQLFormattedError] | None


Answer = Any | Callable[[Call], Any]


@dataclass
class _Failure:
    field: str
    type: str | None
    when: Callable[[Step], bool] | None
    message: str | None
    exit_code: int | None
    stdout: str
    stderr: str


class EngineDouble:
    """A fake Dagger engine session: serve the schema, answer placeholders, record everything.

    Use as a context manager (starts/stops the HTTP server on 127.0.0.1:<free port>).
    """

    def __init__(self) -> None:
        self.token = secrets.token_hex(16)
        self.schema = schema()
        self.queries: list[QueryRecord] = []
        self.evaluated: list[tuple[Obj, str]] = []
        self._lock = threading.RLock()
        self._objs: dict[tuple[str, tuple[Step, ...]], Obj] = {}
        self._by_id: dict[str, Obj] = {}
        self._by_steps: dict[tuple[Step, ...], Obj] = {}
        self._calls: dict[tuple[str, str, str], Call] = {}
        self._answers: list[tuple[str | None, str, Answer]] = []
        self._failures: list[_Failure] = []
        self.root = self._intern("Query", ())
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> EngineDouble:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None, "engine double not started"
        return int(self._server.server_address[1])

    @property
    def env(self) -> dict[str, str]:
        """What an engine session gives a module process: the session port and token."""
        return {"DAGGER_SESSION_PORT": str(self.port), "DAGGER_SESSION_TOKEN": self.token}

    # ----------------------------------------------------------------------------- hooks
    def answer(self, field_name: str, value: Answer) -> None:
        """Answer `field_name` (or "Type.field") with `value`, or `value(call)` if callable.

        For scalar fields (and lists of scalars). Later answers win over earlier ones. A callable
        runs in the server's request thread, so it may block (e.g. on a barrier).
        """
        type_name, _, name = field_name.rpartition(".")
        with self._lock:
            self._answers.insert(0, (type_name or None, name, value))

    def fail(
        self,
        field_name: str,
        *,
        when: Callable[[Step], bool] | None = None,
        message: str | None = None,
        exit_code: int | None = None,
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        """Make evaluation fail wherever a matching step is part of what is evaluated.

        Like the engine, building a chain is lazy: the error surfaces when something that
        depends on the step is evaluated (`sync`, `stdout`, `publish`, any non-`id` scalar),
        through every object that consumed it (a failed exec inside a builder fails the
        runtime image that copies its file). `field_name` may be "Type.field"; `when` narrows
        by the step's decoded args. With `exit_code`, the error is shaped like the engine's exec
        error (extensions `_type: EXEC_ERROR`, cmd, exitCode, stdout, stderr) so the SDK raises
        `dagger.ExecError`; otherwise it is a plain `dagger.QueryError` with `message`.
        """
        type_name, _, name = field_name.rpartition(".")
        with self._lock:
            self._failures.append(
                _Failure(name, type_name or None, when, message, exit_code, stdout, stderr)
            )

    # ----------------------------------------------------------------------------- queries
    def calls(self, field_name: str, type_name: str | None = None) -> list[Call]:
        """Every distinct `field_name` selection (per receiver and args), in first-seen order."""
        with self._lock:
            return [
                c
                for c in self._calls.values()
                if c.field == field_name and (type_name is None or c.type == type_name)
            ]

    def objects(self, type_name: str) -> list[Obj]:
        """Every distinct object of a type the SDK built, in first-seen order."""
        with self._lock:
            return [o for o in self._objs.values() if o.type == type_name]

    def obj(self, id_: str) -> Obj:
        """The object an ID names (KeyError for an ID this double never issued)."""
        with self._lock:
            return self._by_id[id_]

    def chain_of(self, obj_or_id: Obj | str) -> list[Step]:
        """The steps that built an object, from Query down."""
        obj = self.obj(obj_or_id) if isinstance(obj_or_id, str) else obj_or_id
        return list(obj.steps)

    def depends_on(self, obj: Obj) -> list[Obj]:
        """Every object `obj` is built from: its chain's prefixes and, recursively, any object
        passed as an argument along the way (what the engine would have to evaluate)."""
        seen: dict[str, Obj] = {}

        def visit(o: Obj) -> None:
            for i in range(len(o.steps), 0, -1):
                prefix = self._lookup(o.steps[:i])
                if prefix is None or prefix.id in seen:
                    continue
                seen[prefix.id] = prefix
                for v in prefix.steps[-1].args.values():
                    for item in v if isinstance(v, list) else [v]:
                        if isinstance(item, Obj):
                            visit(item)

        visit(obj)
        return list(seen.values())

    def serialized_volumes(self) -> set[str]:
        """The keys of every cache volume mounted PRIVATE or LOCKED (serialized in 0.21)."""
        return {
            str(call.args["cache"].arg("cacheVolume", "key"))
            for call in self.calls("withMountedCache")
            if call.args.get("sharing") in ("PRIVATE", "LOCKED")
        }

    def serialized_conflicts(self) -> list[tuple[str, Obj, Obj]]:
        """Pairs of evaluated execs that mount the same PRIVATE or LOCKED cache volume while
        neither depends on the other: the engine (0.21) would run them one after the other,
        each holding the volume for its whole duration. (key, exec, exec) per pair."""
        evaluated: dict[str, Obj] = {}
        for obj, _ in list(self.evaluated):
            for dep in self.depends_on(obj):
                if dep.type == "Container" and dep.steps and dep.steps[-1].field == "withExec":
                    evaluated[dep.id] = dep
        execs = list(evaluated.values())
        conflicts: list[tuple[str, Obj, Obj]] = []
        for i, first in enumerate(execs):
            for second in execs[i + 1 :]:
                if _is_prefix(first.steps, second.steps) or _is_prefix(second.steps, first.steps):
                    continue  # one runs on top of the other: ordered, not concurrent
                for key in sorted(_serialized_keys(first) & _serialized_keys(second)):
                    conflicts.append((key, first, second))
        return conflicts

    # ----------------------------------------------------------------------------- internals
    def _lookup(self, steps: tuple[Step, ...]) -> Obj | None:
        with self._lock:
            return self._by_steps.get(steps)

    def _intern(self, type_name: str, steps: tuple[Step, ...]) -> Obj:
        with self._lock:
            key = (type_name, steps)
            if key not in self._objs:
                obj = Obj(type_name, steps, f"{type_name}#{len(self._objs)}")
                self._objs[key] = obj
                self._by_id[obj.id] = obj
                self._by_steps.setdefault(steps, obj)
            return self._objs[key]

    def _decode_arg(self, value: Any, named: GraphQLNamedType) -> Any:
        if value is None or (not _is_id_scalar(named) and named.name != "ID"):
            return value
        if isinstance(value, list):
            return [self._decode_arg(v, named) for v in value]
        try:
            obj = self.obj(str(value))
        except KeyError:
            raise GraphQLError(f"invalid ID {value!r}: not issued by this session") from None
        want = named.name[: -len(_ID_SUFFIX)]
        if named.name != "ID" and obj.type != want:
            raise GraphQLError(f"ID {value!r} is a {obj.type}, expected a {want}")
        return obj

    def _resolve(self, *positional: Any, **args: Any) -> Any:
        # graphql-core calls resolver(source, info, **args); engine args may be named `source`.
        parent: Obj = positional[0]
        info: GraphQLResolveInfo[Any] = positional[1]
        fdef = info.parent_type.fields[info.field_name]
        decoded = {
            name: self._decode_arg(val, _unwrap(fdef.args[name].type)[0])
            for name, val in args.items()
        }
        step = Step(info.field_name, json.dumps(args, sort_keys=True, default=str), decoded)
        named, nullable, is_list = _unwrap(info.return_type)
        result: Obj | None = None
        value: Any
        if isinstance(named, GraphQLObjectType | GraphQLAbstractType) and not is_list:
            if info.field_name == "node" or info.field_name.startswith("load"):
                result = decoded["id"]
                if (
                    isinstance(named, GraphQLObjectType)
                    and result is not None
                    and result.type != named.name
                ):
                    raise GraphQLError(f"ID {result.id} is a {result.type}, not {named.name}")
            else:
                result = self._intern(named.name, (*parent.steps, step))
            value = result
        else:
            call = Call(info.parent_type.name, info.field_name, decoded, parent, None)
            if info.field_name != "id" and not (
                info.parent_type.name == "Container" and info.field_name in _CONFIG_FIELDS
            ):
                self._evaluate(parent, step, info.parent_type.name)
            value = self._answer(call, named, nullable, is_list, parent, step)
        with self._lock:
            key = (parent.id, info.field_name, step.key)
            self._calls.setdefault(
                key, Call(info.parent_type.name, info.field_name, decoded, parent, result)
            )
        return value

    def _answer(
        self,
        call: Call,
        named: GraphQLNamedType,
        nullable: bool,
        is_list: bool,
        parent: Obj,
        step: Step,
    ) -> Any:
        with self._lock:
            answers = list(self._answers)
        for type_name, name, ans in answers:
            if name == call.field and type_name in (None, call.type):
                value = ans(call) if callable(ans) else ans
                if is_list and isinstance(named, GraphQLObjectType) and isinstance(value, int):
                    # An object list answered with a count: n distinct objects.
                    return [
                        self._intern(named.name, (*parent.steps, step, _index(i)))
                        for i in range(value)
                    ]
                return value
        if call.field in ("id", "sync"):
            return parent.id
        if call.field == "platform" and call.type == "Container":
            # Like the engine with multi-platform base images: the platform asked for.
            return _requested_platform(parent)
        if is_list:
            return []
        if nullable:
            return None
        return _placeholder(named)

    def _evaluate(self, parent: Obj, leaf: Step, parent_type: str) -> None:
        with self._lock:
            self.evaluated.append((parent, leaf.field))
            failures = list(self._failures)
        if not failures:
            return
        candidates: list[tuple[str, Step]] = [(parent_type, leaf)]
        for obj in self.depends_on(parent):
            owner = self._lookup(obj.steps[:-1])
            candidates.append((owner.type if owner else "Query", obj.steps[-1]))
        for f in failures:
            for owner_type, step in candidates:
                if step.field != f.field or f.type not in (None, owner_type):
                    continue
                if f.when is not None and not f.when(step):
                    continue
                raise _engine_error(f, step)


def _is_prefix(short: tuple[Step, ...], long: tuple[Step, ...]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


def _serialized_keys(exec_: Obj) -> set[str]:
    """The PRIVATE/LOCKED cache volumes mounted where an exec runs (its chain's last mount per
    path, unless unmounted since)."""
    mounts: dict[str, tuple[str, str]] = {}
    for step in exec_.steps[:-1]:
        if step.field == "withMountedCache":
            cache = step.args["cache"]
            key = str(cache.arg("cacheVolume", "key")) if isinstance(cache, Obj) else str(cache)
            mounts[str(step.args["path"])] = (key, str(step.args.get("sharing") or "SHARED"))
        elif step.field == "withoutMount":
            mounts.pop(str(step.args["path"]), None)
    return {key for key, sharing in mounts.values() if sharing in ("PRIVATE", "LOCKED")}


def _requested_platform(container: Obj) -> str:
    for step in reversed(container.steps):
        if step.field == "container" and step.args.get("platform"):
            return str(step.args["platform"])
    return DEFAULT_PLATFORM


def _index(i: int) -> Step:
    return Step(f"[{i}]", str(i), {})


def _placeholder(named: GraphQLNamedType) -> Any:
    if isinstance(named, GraphQLEnumType):
        return next(iter(named.values))
    return {
        "String": "",
        "Int": 0,
        "Float": 0.0,
        "Boolean": False,
        "Platform": DEFAULT_PLATFORM,
        "JSON": "null",
        "Void": None,
    }.get(named.name, "")


def _engine_error(f: _Failure, step: Step) -> GraphQLError:
    if f.exit_code is None:
        return GraphQLError(f.message or f"{step.field} failed (engine double)")
    cmd = [str(a) for a in step.args.get("args", [])] if step.field == "withExec" else [step.field]
    message = f.message or (
        f'process "{" ".join(cmd)}" did not complete successfully: exit code: {f.exit_code}'
    )
    return GraphQLError(
        message,
        extensions={
            "_type": "EXEC_ERROR",
            "cmd": cmd,
            "exitCode": f.exit_code,
            "stdout": f.stdout,
            "stderr": f.stderr,
        },
    )


def _resolve_type(value: Any, info: GraphQLResolveInfo[Any], _abstract: Any) -> str | None:
    return value.type if isinstance(value, Obj) else None


def _make_handler(double: EngineDouble) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{double.token}:".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep pytest output clean; queries are recorded instead

        def _reply(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            # A client that went away (a module process exiting) is not the double's failure.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.path != "/query":
                self._reply(404, {"errors": [{"message": f"no such endpoint {self.path}"}]})
                return
            if self.headers.get("Authorization") != expected:
                self._reply(401, {"errors": [{"message": "invalid session token"}]})
                return
            try:
                payload = json.loads(raw)
                text = payload["query"]
            except (ValueError, KeyError, TypeError):
                self._reply(400, {"errors": [{"message": "body must be JSON with a query"}]})
                return
            result = graphql_sync(
                double.schema,
                text,
                root_value=double.root,
                variable_values=payload.get("variables"),
                operation_name=payload.get("operationName"),
                field_resolver=double._resolve,
                type_resolver=_resolve_type,
            )
            body: dict[str, Any] = {"data": result.data}
            errors = [e.formatted for e in result.errors] if result.errors else None
            if errors:
                body["errors"] = errors
            with contextlib.suppress(GraphQLError):
                document = parse(text)
                with double._lock:
                    double.queries.append(
                        QueryRecord(text, document, payload.get("variables"), result.data, errors)
                    )
            self._reply(200, body)

    return Handler


@contextlib.asynccontextmanager
async def sdk_connection(double: EngineDouble) -> AsyncIterator[None]:
    """Connect the SDK's global client (`dagger.dag`) to the double, as a module process is.

    The environment (DAGGER_SESSION_PORT / DAGGER_SESSION_TOKEN) must already point at the
    double; the shared connection is a process-wide singleton that remembers the parameters it
    first read, so they are cleared here to make each test read its own double's.
    """
    from dagger.client._session import SharedConnection

    conn = SharedConnection()
    conn._params = None
    await conn.connect()
    try:
        yield
    finally:
        await conn.close()
        conn._params = None


@contextlib.contextmanager
def running() -> Iterator[EngineDouble]:
    """Start a double for the duration of a `with` block."""
    with EngineDouble() as double:
        yield double


def ids_in(value: Any) -> Sequence[Obj]:
    """The objects referenced anywhere in a decoded argument value."""
    if isinstance(value, Obj):
        return [value]
    if isinstance(value, list):
        return [o for v in value for o in ids_in(v)]
    return []


async def built(engine: EngineDouble, obj: Any) -> Obj:
    """The double's record of an SDK object (a Container, Directory...): `await obj.id()` decoded.

    Asking for the ID evaluates nothing (as in the engine), so a test can inspect a chain
    without running it.
    """
    return engine.obj(await obj.id())


async def called(result: object) -> Any:
    """Await what an async module function returned.

    dagger-io 0.21.11's `@function` typing loses the coroutine type (mypy sees `R?`), so tests
    await module functions through this one typed place instead of scattering ignores.
    """
    return await cast("Awaitable[Any]", result)
