"""A test double of the Dagger engine's GraphQL session endpoint (docs/testing.md).

The module's functions run unmodified through the SDK's normal connection
(`DAGGER_SESSION_PORT` / `DAGGER_SESSION_TOKEN`, basic auth, schema introspection at connect).
The double serves the engine API exactly as the installed dagger-io sees it (SDL derived from
`dagger/client/gen.py`, see `schema.py`), validates and executes every query with graphql-core,
answers well-typed placeholders, and records what was asked:

- object fields return objects that keep resolving; an object's ID (`Container#12`) names the
  exact chain of calls that built it, and objects passed as arguments are decoded back, so
  `call.args["cache"]` is the `Obj` built by `cacheVolume(key: ...)`;
- scalars: `id`/`sync` return the receiver's ID, String "" , Int 0, Boolean false, Platform
  "linux/amd64" (a Container's `platform`: the one its chain asked for, as the engine answers for
  a multi-platform base image), lists [], nullable scalars null;
- unknown fields, unknown arguments and wrongly typed values are rejected as the engine would,
  and the SDK raises `dagger.QueryError`.

Example (the `engine` fixture in tests/conftest.py starts a double and connects `dag` to it)::

    async def test_build_uses_cargo_cache(engine: EngineDouble) -> None:
        engine.answer("Container.stdout", "ok")                      # choose a value
        engine.fail("withExec", when=lambda s: "clippy" in s.args["args"],
                    exit_code=101, stderr="error: unused variable")  # fail one exec
        await McpTrader(source=dag.directory()).build_provider()    # or any function
        mounts = engine.calls("withMountedCache")                   # distinct calls, in order
        assert mounts[0].args["cache"].arg("cacheVolume", "key") == "mcp-trader-cargo-registry"
        execs = [c.args["args"] for c in engine.calls("withExec")]
        base = engine.calls("from")[0].args["address"]
        print(engine.calls("withExec")[0].receiver)  # the chain: container.from(...).with...

Hooks: `answer(field, value | fn(call))`, `fail(field, when=fn(step), exit_code=...,
stdout=..., stderr=...)` (engine-shaped EXEC_ERROR -> `dagger.ExecError`) or `message=`
(-> `dagger.QueryError`). Failures surface lazily, like the engine's: only when something that
depends on the failing step is evaluated (`sync`, `stdout`, `publish`, ...), including through
objects passed as arguments; a Container's config fields (`platform`, `user`, `labels`, ...)
evaluate nothing, as in the engine. Records: `queries` (text + parsed document + response),
`calls(field, type=None)`, `objects(type)`, `obj(id)`, `chain_of(obj)`, `depends_on(obj)`,
`evaluated` ((object, leaf field) in order).
"""

from .double import Call, EngineDouble, Obj, QueryRecord, Step, built, called, sdk_connection
from .schema import schema, sdl

__all__ = [
    "Call",
    "EngineDouble",
    "Obj",
    "QueryRecord",
    "Step",
    "built",
    "called",
    "schema",
    "sdk_connection",
    "sdl",
]
