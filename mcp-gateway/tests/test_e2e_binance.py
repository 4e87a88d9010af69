"""End to end: MCP client → gateway → the real ``binance-provider`` binary → a fake Binance.

The binary is ``$BINANCE_PROVIDER_BIN`` when set (e.g. a container that received the built
binary), else it is built from ../providers/binance-rs with cargo (``make test`` builds it first in
test-provider, so this is usually a no-op). A missing binary or a failed build fails these tests:
they never skip. Marked ``e2e`` so a toolchain-less run can deselect them explicitly
(``pytest -m "not e2e"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from jsonschema import Draft202012Validator

from mcp_gateway.config import ProviderConfig
from tests.conftest import GatewayFactory
from tests.fake_binance import LAST_PRICE, SYMBOL, FakeBinance
from tests.support import free_port, mcp_session, provider_process, wait_until

BINANCE_TOOLS = {
    "binance.get_ticker",
    "binance.get_order_book",
    "binance.get_klines",
    "binance.get_recent_trades",
    "binance.market_report",
}


@pytest.fixture
def binance_provider(
    provider_binary: Path, fake_binance: FakeBinance, tmp_path: Path
) -> Iterator[str]:
    """The real binary on a loopback port, talking to the fake Binance; yields its address."""
    address = f"127.0.0.1:{free_port()}"
    log = tmp_path / "provider.log"
    with provider_process(provider_binary, address, fake_binance.base_url, log):
        yield address


@pytest.mark.e2e
async def test_mcp_client_gets_ticker_and_market_report_through_the_real_provider(
    binance_provider: str, fake_binance: FakeBinance, gateway_factory: GatewayFactory
) -> None:
    gw = gateway_factory(
        [ProviderConfig(name="binance", address=binance_provider, timeout_seconds=20)]
    )
    async with httpx.AsyncClient() as http:

        async def ready() -> bool:
            return (await http.get(f"{gw.base_url}/ready", timeout=10)).status_code == 200

        await wait_until(ready, 15, "/ready to answer 200")
        body = (await http.get(f"{gw.base_url}/ready", timeout=10)).json()
    assert body["providers"] == [
        {
            "name": "binance",
            "address": binance_provider,
            "status": "SERVING",
            "tools": len(BINANCE_TOOLS),
            "upstream": {"status": "unknown"},
        }
    ]

    async with mcp_session(gw.mcp_url) as session:
        listed = await session.list_tools()
        tools = {t.name: t for t in listed.tools}
        assert set(tools) >= BINANCE_TOOLS
        assert tools["binance.get_ticker"].input_schema["required"] == ["symbol"]

        ticker = await session.call_tool("binance.get_ticker", {"symbol": SYMBOL})
        assert isinstance(ticker, types.CallToolResult)
        assert not ticker.is_error, ticker.content
        assert isinstance(ticker.structured_content, dict)
        assert ticker.structured_content["symbol"] == SYMBOL
        assert ticker.structured_content["last_price"] == float(LAST_PRICE)

        report = await session.call_tool("binance.market_report", {"symbol": SYMBOL})
        assert isinstance(report, types.CallToolResult)
        assert not report.is_error, report.content
        markdown = report.content[0]
        assert isinstance(markdown, types.TextContent)
        assert markdown.text.lstrip().startswith("#")
        assert SYMBOL in markdown.text
        assert isinstance(report.structured_content, dict)

        rejected = await session.call_tool("binance.get_ticker", {"symbol": "NOPEUSDT"})
        assert isinstance(rejected, types.CallToolResult)
        assert rejected.is_error
        message = rejected.content[0]
        assert isinstance(message, types.TextContent)
        assert "provider 'binance'" in message.text
        assert "-1121" in message.text

    paths = {path for path, _ in fake_binance.requests}
    assert paths == {"/api/v3/ticker/24hr", "/api/v3/depth", "/api/v3/klines", "/api/v3/trades"}
    assert ("/api/v3/ticker/24hr", {"symbol": SYMBOL}) in fake_binance.requests


def _arguments(tool: types.Tool) -> dict[str, Any]:
    """Valid arguments for a Binance tool, from its own input schema."""
    arguments: dict[str, Any] = {}
    properties = tool.input_schema.get("properties", {})
    for name in tool.input_schema.get("required", []):
        spec = properties.get(name, {})
        if name == "symbol":
            arguments[name] = SYMBOL
        elif "enum" in spec:
            arguments[name] = "1h" if "1h" in spec["enum"] else spec["enum"][0]
        else:
            raise AssertionError(f"{tool.name}: no test value for required argument {name!r}")
    return arguments


@pytest.mark.e2e
async def test_every_tool_result_validates_against_its_published_output_schema(
    binance_provider: str, gateway_factory: GatewayFactory
) -> None:
    gw = gateway_factory([ProviderConfig(name="binance", address=binance_provider)])
    async with mcp_session(gw.mcp_url) as session:
        tools = (await session.list_tools()).tools
        assert {t.name for t in tools} >= BINANCE_TOOLS
        missing = sorted(t.name for t in tools if t.output_schema is None)
        assert not missing, f"the provider publishes no output_schema_json for {missing}"
        for tool in tools:
            assert tool.annotations is not None and tool.annotations.read_only_hint is True
            assert tool.output_schema is not None
            result = await session.call_tool(tool.name, _arguments(tool))
            assert isinstance(result, types.CallToolResult)
            assert not result.is_error, (tool.name, result.content)
            validator = Draft202012Validator(tool.output_schema)
            errors = [e.message[:200] for e in validator.iter_errors(result.structured_content)]
            assert not errors, (tool.name, errors)


@pytest.mark.e2e
async def test_the_gateway_timeout_and_bounded_errors_with_the_real_provider(
    binance_provider: str, fake_binance: FakeBinance, gateway_factory: GatewayFactory
) -> None:
    gw = gateway_factory(
        [ProviderConfig(name="binance", address=binance_provider, timeout_seconds=1)]
    )
    async with mcp_session(gw.mcp_url) as session:
        await session.list_tools()
        huge = await session.call_tool("binance.get_ticker", {"symbol": "B" * 1_000_000})
        assert isinstance(huge, types.CallToolResult) and huge.is_error
        (text,) = [c.text for c in huge.content if isinstance(c, types.TextContent)]
        assert len(text) < 2000, len(text)
        # tonic answers an expired deadline with CANCELLED a moment before the caller's fires:
        # the gateway's own timer decides, and says so.
        fake_binance.delay_seconds = 3
        slow = await session.call_tool("binance.get_ticker", {"symbol": SYMBOL})
    assert isinstance(slow, types.CallToolResult) and slow.is_error
    (text,) = [c.text for c in slow.content if isinstance(c, types.TextContent)]
    assert f"provider 'binance' at {binance_provider} did not answer within 1 s" in text, text
    assert "CANCELLED" not in text
