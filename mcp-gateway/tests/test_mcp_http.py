"""The gateway over streamable HTTP with a real MCP client and a real gRPC provider."""

from __future__ import annotations

import json
import logging
import time

import anyio
import httpx
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError

from mcp_gateway._proto.provider.v1 import provider_pb2
from mcp_gateway.config import ProviderConfig
from tests.conftest import GatewayFactory
from tests.support import (
    ECHO_OUTPUT_SCHEMA,
    ECHO_SCHEMA,
    FakeProvider,
    Mode,
    Notifications,
    RunningGateway,
    free_port,
    mcp_session,
    wait_until,
)


def _texts(result: types.CallToolResult) -> list[str]:
    return [c.text for c in result.content if isinstance(c, types.TextContent)]


async def test_discovery_exposes_provider_tools_with_their_schemas(gateway: RunningGateway) -> None:
    async with mcp_session(gateway.mcp_url) as session:
        listed = await session.list_tools()
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"fake.echo", "fake.list"}
    assert tools["fake.echo"].description == "Echoes its arguments."
    assert tools["fake.echo"].input_schema == ECHO_SCHEMA


async def test_tool_call_forwards_arguments_and_returns_text_and_json(
    gateway: RunningGateway, provider: FakeProvider
) -> None:
    async with mcp_session(gateway.mcp_url) as session:
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT", "limit": 5})
    assert isinstance(result, types.CallToolResult)
    assert not result.is_error
    assert _texts(result) == [
        "# Echo\n\nsymbol **BTCUSDT**",
        json.dumps({"echo": {"symbol": "BTCUSDT", "limit": 5}}),
    ]
    assert result.structured_content == {"echo": {"symbol": "BTCUSDT", "limit": 5}}
    (call,) = provider.calls
    assert call.tool == "fake.echo"
    assert json.loads(call.arguments_json) == {"symbol": "BTCUSDT", "limit": 5}
    assert len(call.request_id) == 32


async def test_non_object_json_result_is_wrapped_for_structured_content(
    gateway: RunningGateway,
) -> None:
    async with mcp_session(gateway.mcp_url) as session:
        result = await session.call_tool("fake.list", {})
    assert isinstance(result, types.CallToolResult)
    assert not result.is_error
    assert _texts(result) == ["[1, 2, 3]"]
    assert result.structured_content == {"result": [1, 2, 3]}


async def test_provider_tool_error_becomes_mcp_tool_error(
    gateway: RunningGateway, provider: FakeProvider
) -> None:
    provider.mode = "error"
    async with mcp_session(gateway.mcp_url) as session:
        result = await session.call_tool("fake.echo", {"symbol": "NOPE"})
    assert isinstance(result, types.CallToolResult)
    assert result.is_error
    (text,) = _texts(result)
    assert "fake.echo" in text
    assert "'fake'" in text
    assert "UPSTREAM_REJECTED" in text
    assert "-1121" in text
    assert "Invalid symbol." in text


@pytest.mark.parametrize("mode", ["slow", "tonic_deadline"])
async def test_slow_provider_times_out_within_its_deadline(
    gateway_factory: GatewayFactory, provider: FakeProvider, mode: Mode
) -> None:
    provider.mode = mode
    provider.slow_seconds = 20
    gw = gateway_factory([ProviderConfig(name="fake", address=provider.address, timeout_seconds=1)])
    async with mcp_session(gw.mcp_url) as session:
        await session.list_tools()
        started = time.monotonic()
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
        elapsed = time.monotonic() - started
    assert isinstance(result, types.CallToolResult)
    assert result.is_error
    (text,) = _texts(result)
    assert "provider 'fake'" in text
    assert "did not answer within 1 s" in text
    assert "CANCELLED" not in text
    assert 0.9 <= elapsed < 3, elapsed


async def test_provider_down_gives_tool_error_not_a_hang(gateway_factory: GatewayFactory) -> None:
    address = f"127.0.0.1:{free_port()}"
    gw = gateway_factory([ProviderConfig(name="fake", address=address, timeout_seconds=2)])
    async with mcp_session(gw.mcp_url) as session:
        started = time.monotonic()
        listed = await session.list_tools()
        assert listed.tools == []
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
        elapsed = time.monotonic() - started
    assert isinstance(result, types.CallToolResult)
    assert result.is_error
    (text,) = _texts(result)
    assert f"provider 'fake' at {address} is unavailable" in text
    assert elapsed < 10


async def test_provider_that_goes_and_comes_back_is_announced_both_times(
    gateway: RunningGateway, provider: FakeProvider
) -> None:
    notes = Notifications()
    async with mcp_session(gateway.mcp_url, notifications=notes) as session:
        assert len((await session.list_tools()).tools) == 2
        provider.stop()
        result = await session.call_tool("fake.list", {})
        assert isinstance(result, types.CallToolResult)
        assert result.is_error
        assert "is unavailable" in _texts(result)[0]
        # Down: its tools are withdrawn rather than offered and failing, and clients are told.
        await notes.wait_for_more(0, 15)
        assert (await session.list_tools()).tools == []

        provider.start()
        await notes.wait_for_more(1, 15)
        assert len((await session.list_tools()).tools) == 2
        result = await session.call_tool("fake.echo", {"symbol": "ETHUSDT"})
        assert isinstance(result, types.CallToolResult)
        assert not result.is_error, _texts(result)


async def test_a_client_that_connected_while_the_provider_was_down_learns_its_tools(
    gateway_factory: GatewayFactory,
) -> None:
    late = FakeProvider()
    late.port = free_port()
    try:
        gw = gateway_factory([ProviderConfig(name="fake", address=late.address)])
        notes = Notifications()
        async with mcp_session(gw.mcp_url, notifications=notes) as session:
            init = session.initialize_result
            assert init is not None and init.capabilities.tools is not None
            assert init.capabilities.tools.list_changed is True
            assert (await session.list_tools()).tools == []
            late.start()
            await notes.wait_for_more(0, 15)
            assert {t.name for t in (await session.list_tools()).tools} == {
                "fake.echo",
                "fake.list",
            }
    finally:
        late.close()


async def test_a_2026_client_hears_of_new_tools_on_its_listen_stream(
    gateway_factory: GatewayFactory,
) -> None:
    late = FakeProvider()
    late.port = free_port()
    try:
        gw = gateway_factory([ProviderConfig(name="fake", address=late.address)])
        # The Python SDK's high-level client at its defaults: 2026-07-28, no session.
        async with Client(gw.mcp_url) as client:
            assert client.protocol_version == "2026-07-28"
            assert (await client.list_tools()).tools == []
            async with client.listen(tools_list_changed=True) as subscription:
                late.start()
                with anyio.fail_after(15):
                    async for _event in subscription:
                        break
            tools = await client.list_tools(cache_mode="bypass")
            assert {t.name for t in tools.tools} == {"fake.echo", "fake.list"}
    finally:
        late.close()


async def test_tools_list_and_ready_answer_at_once_with_a_hung_provider(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    hung = FakeProvider()
    hung.start()
    hung.hang = True
    try:
        gw = gateway_factory(
            [
                ProviderConfig(name="fake", address=provider.address),
                ProviderConfig(name="hung", address=hung.address, timeout_seconds=10),
            ]
        )
        async with mcp_session(gw.mcp_url) as session:

            async def good_tools_known() -> bool:
                return len((await session.list_tools()).tools) == 2

            await wait_until(good_tools_known, 15, "the good provider's tools")
            # Never the 5 s discovery timeout of the hung provider (benchmark: docs/latency.md).
            for _ in range(5):
                started = time.monotonic()
                listed = await session.list_tools()
                assert time.monotonic() - started < 1.0
                assert {t.name for t in listed.tools} == {"fake.echo", "fake.list"}
            async with httpx.AsyncClient() as http:
                started = time.monotonic()
                ready = await http.get(f"{gw.base_url}/ready", timeout=10)
                assert time.monotonic() - started < 1.0
        assert ready.status_code == 503
        by_name = {p["name"]: p for p in ready.json()["providers"]}
        assert by_name["fake"]["status"] == "SERVING"
        assert by_name["hung"]["status"] in ("UNKNOWN", "UNREACHABLE")
    finally:
        hung.hang = False
        hung.close()


async def test_background_refresh_picks_up_a_provider_started_later(
    gateway_factory: GatewayFactory,
) -> None:
    late = FakeProvider()
    late.port = free_port()
    try:
        gw = gateway_factory(
            [ProviderConfig(name="fake", address=late.address)], refresh_interval=0.5
        )
        late.start()
        # A call (not list_tools) right away: it must find the tool via refresh or on demand.
        async with mcp_session(gw.mcp_url) as session:

            async def call_works() -> bool:
                result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
                assert isinstance(result, types.CallToolResult)
                return not result.is_error

            await wait_until(call_works, 15, "the late provider to answer")
    finally:
        late.close()


async def test_unknown_tool_is_a_protocol_error_listing_known_tools(
    gateway: RunningGateway,
) -> None:
    async with mcp_session(gateway.mcp_url) as session:
        await session.list_tools()
        with pytest.raises(MCPError) as caught:
            await session.call_tool("other.thing", {})
    assert caught.value.error.code == types.INVALID_PARAMS
    assert "unknown tool 'other.thing'" in caught.value.error.message
    assert "fake.echo" in caught.value.error.message


async def test_disabled_provider_is_ignored(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = gateway_factory([ProviderConfig(name="fake", address=provider.address, enabled=False)])
    async with mcp_session(gw.mcp_url) as session:
        assert (await session.list_tools()).tools == []
    assert provider.calls == []


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "crash",
            "provider 'fake' at {address} failed the call with gRPC status INTERNAL: panicked",
        ),
        ("garbage", "fake.echo: provider 'fake' sent a result that is not valid JSON"),
    ],
)
async def test_broken_provider_answers_become_tool_errors(
    gateway: RunningGateway, provider: FakeProvider, mode: Mode, expected: str
) -> None:
    provider.mode = mode
    async with mcp_session(gateway.mcp_url) as session:
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
        assert isinstance(result, types.CallToolResult)
        assert result.is_error
        assert expected.format(address=provider.address) in _texts(result)[0]
        # The session survives: the next call works.
        provider.mode = "ok"
        again = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
        assert isinstance(again, types.CallToolResult)
        assert not again.is_error


async def test_tools_with_unusable_schemas_are_left_out(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    provider.extra_tools = [
        provider_pb2.Tool(name="fake.bad_json", input_schema_json="{oops"),
        provider_pb2.Tool(name="fake.not_object", input_schema_json="[1, 2]"),
        provider_pb2.Tool(name="fake.no_type", input_schema_json='{"properties": {}}'),
    ]
    gw = gateway_factory([ProviderConfig(name="fake", address=provider.address)])
    async with mcp_session(gw.mcp_url) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"fake.echo", "fake.list", "fake.no_type"}
    # MCP requires an object schema; a schema without "type" gets it.
    assert tools["fake.no_type"].input_schema == {"type": "object", "properties": {}}


async def test_tools_publish_their_output_schema_and_read_only_hint(
    gateway: RunningGateway, provider: FakeProvider
) -> None:
    async with mcp_session(gateway.mcp_url) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert tools["fake.echo"].output_schema == ECHO_OUTPUT_SCHEMA
        assert tools["fake.echo"].annotations is not None
        assert tools["fake.echo"].annotations.read_only_hint is True
        assert tools["fake.list"].output_schema is None
        assert tools["fake.list"].annotations is None
        # A result that breaks the declared schema is the provider's bug: a tool error saying
        # so, rather than a result every MCP client would reject.
        provider.mode = "off_schema"
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
    assert isinstance(result, types.CallToolResult)
    assert result.is_error
    (text,) = _texts(result)
    assert "does not match the tool's outputSchema at echo" in text
    assert "is not of type 'object'" in text


async def test_echoed_values_are_bounded_in_errors_and_logs(
    gateway: RunningGateway, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    huge = "A" * 1_000_000
    provider.mode = "echo_error"
    caplog.set_level(logging.INFO)
    async with mcp_session(gateway.mcp_url) as session:
        result = await session.call_tool("fake.echo", {"symbol": huge})
        assert isinstance(result, types.CallToolResult) and result.is_error
        (text,) = _texts(result)
        assert text.startswith("fake.echo failed in provider 'fake' (INVALID_ARGUMENTS): bad")
        assert len(text) < 2000
        assert "more characters)" in text
        with pytest.raises(MCPError) as caught:
            await session.call_tool("fake." + huge, {})
        assert len(caught.value.error.message) < 2000
        assert "unknown tool 'fake.AAAA" in caught.value.error.message
    gateway_lines = [r.getMessage() for r in caplog.records if r.name.startswith("mcp_gateway")]
    assert gateway_lines
    assert max(len(line) for line in gateway_lines) < 2000


async def test_a_read_only_call_waits_for_a_provider_that_comes_back(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = gateway_factory(
        [ProviderConfig(name="fake", address=provider.address, timeout_seconds=10)],
        provider_retry_seconds=8,
    )
    async with mcp_session(gw.mcp_url) as session:
        await wait_until(
            lambda: _has_tools(session, 2), 15, "the provider's tools to be discovered"
        )
        provider.stop()
        # Not read-only: never sent twice, so it fails at once.
        started = time.monotonic()
        failed = await session.call_tool("fake.list", {})
        assert isinstance(failed, types.CallToolResult) and failed.is_error
        assert time.monotonic() - started < 2
        # Read-only: sent again once the provider is back (a provider swap costs no call).
        async with anyio.create_task_group() as group:
            results: list[types.CallToolResult] = []

            async def call() -> None:
                result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
                assert isinstance(result, types.CallToolResult)
                results.append(result)

            group.start_soon(call)
            await anyio.sleep(1.0)
            provider.start()
        (result,) = results
        assert not result.is_error, _texts(result)
    assert [c.tool for c in provider.calls].count("fake.echo") == 1


async def test_a_read_only_retry_gives_up_after_provider_retry_seconds(
    gateway_factory: GatewayFactory, provider: FakeProvider
) -> None:
    gw = gateway_factory(
        [ProviderConfig(name="fake", address=provider.address, timeout_seconds=10)],
        provider_retry_seconds=1,
    )
    async with mcp_session(gw.mcp_url) as session:
        await wait_until(
            lambda: _has_tools(session, 2), 15, "the provider's tools to be discovered"
        )
        provider.stop()
        started = time.monotonic()
        result = await session.call_tool("fake.echo", {"symbol": "BTCUSDT"})
        elapsed = time.monotonic() - started
    assert isinstance(result, types.CallToolResult) and result.is_error
    (text,) = _texts(result)
    assert "is unavailable" in text
    assert "no connection again within 1 s" in text
    assert 0.9 <= elapsed < 5, elapsed


async def _has_tools(session: ClientSession, count: int) -> bool:
    return len((await session.list_tools()).tools) == count
