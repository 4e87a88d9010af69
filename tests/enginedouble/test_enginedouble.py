"""The engine double itself: it serves the SDK's schema, records faithfully, and can fail."""

import base64

import dagger
import httpx
import pytest
from dagger import dag
from graphql import GraphQLObjectType, validate_schema

from tests.enginedouble import EngineDouble, schema


def test_schema_is_valid_and_matches_the_sdk() -> None:
    s = schema()
    assert validate_schema(s) == []
    container = s.type_map["Container"]
    assert isinstance(container, GraphQLObjectType)
    mount = container.fields["withMountedCache"]
    assert str(mount.args["cache"].type) == "CacheVolumeID!"
    assert str(mount.args["sharing"].type) == "CacheSharingMode"
    assert str(mount.type) == "Container!"
    health = container.fields["withDockerHealthcheck"]
    assert str(health.args["args"].type) == "[String!]!"


def _post(engine: EngineDouble, query: str, token: str | None = None) -> httpx.Response:
    auth = base64.b64encode(f"{token or engine.token}:".encode()).decode()
    return httpx.post(
        f"http://127.0.0.1:{engine.port}/query",
        json={"query": query},
        headers={"Authorization": f"Basic {auth}"},
    )


def test_rejects_unknown_fields_bad_args_and_bad_tokens() -> None:
    with EngineDouble() as engine:
        unknown = _post(engine, '{ container { fromm(address: "x") { id } } }').json()
        assert "Cannot query field 'fromm'" in unknown["errors"][0]["message"]
        wrong_type = _post(engine, "{ container { from(address: 3) { id } } }").json()
        assert "String cannot represent a non string value" in wrong_type["errors"][0]["message"]
        unknown_arg = _post(engine, '{ cacheVolume(key: "k", nope: 1) { id } }').json()
        assert "Unknown argument 'nope'" in unknown_arg["errors"][0]["message"]
        assert _post(engine, "{ defaultPlatform }", token="wrong").status_code == 401
        assert _post(engine, "{ defaultPlatform }").json() == {
            "data": {"defaultPlatform": "linux/amd64"}
        }


def test_rejects_ids_it_never_issued_and_ids_of_the_wrong_type() -> None:
    with EngineDouble() as engine:
        bogus = _post(engine, '{ loadContainerFromID(id: "Container#999") { id } }').json()
        assert "not issued by this session" in bogus["errors"][0]["message"]
        vol = _post(engine, '{ cacheVolume(key: "k") { id } }').json()["data"]["cacheVolume"]["id"]
        wrong = _post(engine, f'{{ loadContainerFromID(id: "{vol}") {{ id }} }}').json()
        assert "is a CacheVolume, expected a Container" in wrong["errors"][0]["message"]


async def test_records_chains_and_decodes_object_arguments(engine: EngineDouble) -> None:
    cache = dag.cache_volume("mcp-trader-cargo-git")
    ctr = (
        dag.container()
        .from_("rust:1.90-slim-bookworm")
        .with_mounted_cache("/usr/local/cargo/git", cache, sharing=dagger.CacheSharingMode.PRIVATE)
        .with_exec(["cargo", "build", "--locked"])
    )
    first = await ctr.id()
    assert first == await ctr.id(), "the same chain must get the same ID"
    (mount,) = engine.calls("withMountedCache")
    assert mount.args["path"] == "/usr/local/cargo/git"
    assert mount.args["sharing"] == "PRIVATE"
    assert mount.args["cache"].arg("cacheVolume", "key") == "mcp-trader-cargo-git"
    assert mount.receiver.arg("from", "address") == "rust:1.90-slim-bookworm"
    (exec_,) = engine.calls("withExec")
    assert exec_.args["args"] == ["cargo", "build", "--locked"]
    assert engine.obj(first).fields == ["container", "from", "withMountedCache", "withExec"]
    # `id` is lazy: nothing was evaluated yet; `sync` evaluates.
    assert engine.evaluated == []
    await ctr.sync()
    assert [(o.id, f) for o, f in engine.evaluated] == [(first, "sync")]


async def test_answers_chosen_values(engine: EngineDouble) -> None:
    engine.answer("Container.stdout", lambda call: " ".join(call.receiver.arg("withExec", "args")))
    engine.answer("Container.platform", "linux/arm64")
    out = await dag.container().with_exec(["echo", "hi"]).stdout()
    assert out == "echo hi"
    assert await dag.container().platform() == "linux/arm64"
    assert await dag.container().stderr() == ""


async def test_exec_failure_is_an_sdk_exec_error_through_dependent_objects(
    engine: EngineDouble,
) -> None:
    engine.fail(
        "withExec",
        when=lambda step: step.args["args"][:2] == ["cargo", "build"],
        exit_code=101,
        stdout="Compiling binance-provider",
        stderr="error[E0425]: cannot find value `x`",
    )
    builder = dag.container().with_exec(["cargo", "build"])
    runtime = dag.container().with_file("/bin/app", builder.file("/out/app"))
    await runtime.id()  # building the chain is lazy and never fails
    with pytest.raises(dagger.ExecError) as info:
        await runtime.sync()
    assert info.value.exit_code == 101
    assert info.value.command == ["cargo", "build"]
    assert "E0425" in info.value.stderr
    assert 'process "cargo build" did not complete successfully' in str(info.value)
    # Another exec is untouched.
    await dag.container().with_exec(["cargo", "test"]).sync()


async def test_plain_failure_is_a_query_error(engine: EngineDouble) -> None:
    engine.fail("Container.publish", message="push denied: unauthorized")
    with pytest.raises(dagger.QueryError) as info:
        await dag.container().publish("ghcr.io/o/r:1")
    assert not isinstance(info.value, dagger.ExecError)
    assert "unauthorized" in str(info.value)


async def test_every_request_is_recorded_parsed(engine: EngineDouble) -> None:
    before = len(engine.queries)
    await dag.container().from_("debian:bookworm-slim").sync()
    new = engine.queries[before:]
    assert new, "the SDK's query must be recorded"
    assert any("from" in q.text and "debian:bookworm-slim" in q.text for q in new)
    assert all(q.errors is None for q in new)
    assert new[-1].document.definitions


async def test_omitted_arguments_get_the_engines_defaults(engine: EngineDouble) -> None:
    # The SDK leaves out an argument equal to its default; the engine applies it, so does the
    # double (read from gen.py's Arg defaults), so a test sees the mode the engine would use.
    await dag.container().with_mounted_cache("/c", dag.cache_volume("k")).id()
    (mount,) = engine.calls("withMountedCache")
    assert mount.args["sharing"] == "SHARED"
    assert mount.args["owner"] == ""
    assert "source" not in mount.args  # no default: absent, as in the engine


async def test_finds_concurrent_execs_that_share_a_serialized_volume(engine: EngineDouble) -> None:
    import anyio

    def job(volume: str, sharing: dagger.CacheSharingMode, command: str) -> dagger.Container:
        return (
            dag.container()
            .from_("registry.invalid/base:1")
            .with_mounted_cache("/cache", dag.cache_volume(volume), sharing=sharing)
            .with_exec([command])
        )

    locked, shared = dagger.CacheSharingMode.LOCKED, dagger.CacheSharingMode.SHARED
    async with anyio.create_task_group() as tg:
        tg.start_soon(job("one", locked, "a").sync)
        tg.start_soon(job("one", dagger.CacheSharingMode.PRIVATE, "b").sync)
        tg.start_soon(job("two", locked, "c").sync)
        tg.start_soon(job("three", shared, "d").sync)
        tg.start_soon(job("three", shared, "e").sync)
        # One exec on top of another on the same volume: ordered, not concurrent.
        tg.start_soon(job("four", locked, "f").with_exec(["g"]).sync)
    conflicts = engine.serialized_conflicts()
    found = {
        (key, frozenset((a.steps[-1].args["args"][0], b.steps[-1].args["args"][0])))
        for key, a, b in conflicts
    }
    assert found == {("one", frozenset({"a", "b"}))}
