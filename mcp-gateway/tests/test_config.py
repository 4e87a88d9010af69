"""The providers file and environment: what is accepted, and the errors for what is not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_gateway.config import (
    DEFAULT_TIMEOUT_SECONDS,
    ConfigError,
    ProviderConfig,
    load_settings,
    parse_providers,
)

GOOD = """
providers:
  - name: binance
    address: binance-provider:50053
  - name: other_1
    address: 10.0.0.7:7000
    enabled: false
    timeout_seconds: 2.5
"""


def test_a_valid_file_with_defaults() -> None:
    assert parse_providers(GOOD, "p.yaml") == (
        ProviderConfig(
            name="binance",
            address="binance-provider:50053",
            enabled=True,
            timeout_seconds=DEFAULT_TIMEOUT_SECONDS,
        ),
        ProviderConfig(name="other_1", address="10.0.0.7:7000", enabled=False, timeout_seconds=2.5),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("providers: [\n  - name: x\n", "not valid YAML"),
        ("", "got empty"),
        ("- name: a\n  address: h:1\n", "expected a mapping with a 'providers' list"),
        ("providers: {name: a}\n", "field 'providers': Input should be a valid list"),
        ("provider:\n  - name: a\n", "field 'provider': Extra inputs are not permitted"),
        (
            "providers:\n  - name: a\n    address: h:1\n  - name: b\n",
            "entry 2 ('b'), field 'address': Field required",
        ),
        (
            "providers:\n  - name: a\n    address: nohost\n",
            "entry 1 ('a'), field 'address': 'nohost' is not host:port",
        ),
        (
            "providers:\n  - name: a\n    address: 'h:99999'\n",
            "entry 1 ('a'), field 'address': 'h:99999' has port '99999'",
        ),
        (
            "providers:\n  - name: Binance\n    address: h:1\n",
            "entry 1 ('Binance'), field 'name': 'Binance' is not a valid provider name",
        ),
        (
            "providers:\n  - name: a\n    address: h:1\n    timeout_seconds: 0\n",
            "entry 1 ('a'), field 'timeout_seconds': Input should be greater than 0",
        ),
        (
            "providers:\n  - name: a\n    address: h:1\n    enabled: maybe\n",
            "entry 1 ('a'), field 'enabled': Input should be a valid boolean",
        ),
        (
            "providers:\n  - name: a\n    adress: h:1\n",
            "entry 1 ('a'), field 'adress': Extra inputs are not permitted",
        ),
        (
            "providers:\n  - name: a\n    address: h:1\n  - name: a\n    address: h:2\n",
            "entry 2 ('a'): name 'a' is already used by entry 1",
        ),
    ],
)
def test_invalid_files_name_the_file_the_entry_and_the_problem(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_providers(text, "/etc/gw/providers.yaml")
    message = str(caught.value)
    assert message.startswith("providers file /etc/gw/providers.yaml: "), message
    assert expected in message, message


def test_settings_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD, encoding="utf-8")
    settings = load_settings(
        {"GATEWAY_PORT": "4000", "MCP_PROVIDERS": str(path), "MCP_GATEWAY_TOKEN": "abc"}
    )
    assert settings.port == 4000
    assert settings.token == "abc"
    assert settings.providers_file == str(path)
    assert [p.name for p in settings.enabled_providers] == ["binance"]


def test_network_session_and_drain_settings(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "GATEWAY_HOST": "127.0.0.1",
            "MCP_ALLOWED_HOSTS": "mcp.example.com, Localhost:3001",
            "MCP_ALLOWED_ORIGINS": "*",
            "MCP_SESSION_MODE": "stateless",
            "MCP_SESSION_SECRET": "s" * 32,
            "MCP_SESSION_IDLE_SECONDS": "60",
            "MCP_MAX_SESSIONS": "5",
            "GATEWAY_DRAIN_SECONDS": "4",
            "GATEWAY_SHUTDOWN_GRACE_SECONDS": "12.5",
            "PROVIDER_RETRY_SECONDS": "0",
        }
    )
    assert settings.host == "127.0.0.1"
    assert settings.allowed_hosts.allows_host("MCP.example.com:443")
    assert settings.allowed_hosts.allows_host("localhost:3001")
    assert not settings.allowed_hosts.allows_host("localhost:3002")
    assert settings.allowed_origins.allows_any
    assert settings.session_mode == "stateless"
    assert settings.session_secret == b"s" * 32 and settings.session_secret_shared
    assert (settings.session_idle_seconds, settings.max_sessions) == (60, 5)
    assert (settings.drain_seconds, settings.shutdown_grace_seconds) == (4, 12.5)
    assert settings.provider_retry_seconds == 0
    assert "s" * 32 not in repr(settings)


def test_settings_defaults_use_the_built_in_providers_file() -> None:
    settings = load_settings({})
    assert settings.port == 3001
    assert settings.host == "0.0.0.0"
    assert settings.session_mode == "stateful" and not settings.session_secret_shared
    assert (settings.session_idle_seconds, settings.max_sessions) == (300, 1000)
    assert settings.allowed_hosts.allows_host("localhost:3001")
    assert not settings.allowed_hosts.allows_host("evil.example.com")
    assert settings.allowed_origins.allows_origin("http://127.0.0.1:6274")
    assert not settings.allowed_origins.allows_origin("http://evil.example.com")
    assert settings.token is None
    assert settings.providers == (
        ProviderConfig(name="binance", address="binance-provider:50053", timeout_seconds=15),
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GATEWAY_PORT": "http"}, "GATEWAY_PORT='http' is not a port"),
        ({"GATEWAY_PORT": "0"}, "GATEWAY_PORT='0' is not a port"),
        ({"MCP_PROVIDERS": "/nonexistent/p.yaml"}, "/nonexistent/p.yaml (MCP_PROVIDERS) does not"),
        ({"MCP_GATEWAY_TOKEN": "two words"}, "MCP_GATEWAY_TOKEN contains whitespace"),
        ({"GATEWAY_HOST": "not a host"}, "GATEWAY_HOST='not a host' is not an address to bind"),
        ({"MCP_ALLOWED_HOSTS": "ok.example, bad host"}, "MCP_ALLOWED_HOSTS: 'bad host' is not"),
        ({"MCP_ALLOWED_HOSTS": "h:0"}, "MCP_ALLOWED_HOSTS: 'h:0' has port '0'"),
        ({"MCP_ALLOWED_ORIGINS": "app.example.com"}, "'app.example.com' is not an origin"),
        ({"MCP_SESSION_MODE": "sticky"}, "MCP_SESSION_MODE='sticky' is not a session mode"),
        ({"MCP_SESSION_SECRET": "short"}, "MCP_SESSION_SECRET must be at least 32 characters"),
        ({"MCP_SESSION_IDLE_SECONDS": "0"}, "MCP_SESSION_IDLE_SECONDS='0' is not a number of sec"),
        ({"MCP_MAX_SESSIONS": "1.5"}, "MCP_MAX_SESSIONS='1.5' is not a whole number"),
        ({"MCP_MAX_SESSIONS": "none"}, "MCP_MAX_SESSIONS='none' is not a number of sessions"),
        ({"GATEWAY_DRAIN_SECONDS": "-1"}, "GATEWAY_DRAIN_SECONDS='-1' is not a number of seconds"),
        ({"PROVIDER_RETRY_SECONDS": "nan"}, "PROVIDER_RETRY_SECONDS='nan' is not a number"),
    ],
)
def test_bad_environment_is_refused(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(env)


def test_the_command_refuses_to_start_with_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n  - name: binance\n    address: 'binance:abc'\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "mcp_gateway"],
        env=os.environ | {"MCP_PROVIDERS": str(path), "GATEWAY_PORT": "1"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert (
        f"mcp-gateway: error: providers file {path}: entry 1 ('binance'), field 'address': "
        "'binance:abc' has port 'abc'"
    ) in done.stderr


SECRET = "0123456789abcdef" * 4


def test_the_session_secret_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "session_secret"
    path.write_text(f"  {SECRET}\n\n", encoding="utf-8")  # what `echo` and editors leave
    for env in (
        {"MCP_SESSION_SECRET_FILE": str(path)},
        # compose passes ${MCP_SESSION_SECRET:-}: empty is unset, in either direction
        {"MCP_SESSION_SECRET_FILE": str(path), "MCP_SESSION_SECRET": ""},
    ):
        settings = load_settings(env)
        assert settings.session_secret == SECRET.encode() and settings.session_secret_shared
    settings = load_settings({"MCP_SESSION_SECRET": SECRET, "MCP_SESSION_SECRET_FILE": ""})
    assert settings.session_secret == SECRET.encode() and settings.session_secret_shared
    unset = load_settings({"MCP_SESSION_SECRET": "", "MCP_SESSION_SECRET_FILE": ""})
    assert not unset.session_secret_shared


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("", "must be at least 32 characters"),
        ("short\n", "must be at least 32 characters"),
        (f"{SECRET[:20]} {SECRET[20:]}\n", "without whitespace"),
        (b"\xff" + SECRET.encode(), "cannot be read: not UTF-8 text"),
        ("directory", "cannot be read: Is a directory"),
        ("under a file", "cannot be read: Not a directory"),  # root reads any mode: no chmod 0
    ],
)
def test_a_bad_session_secret_file_is_refused_naming_the_path(
    tmp_path: Path, content: str | bytes | None, expected: str
) -> None:
    path = tmp_path / "session_secret"
    if content == "directory":
        path.mkdir()
    elif content == "under a file":
        path.write_text(SECRET, encoding="utf-8")
        path = path / "secret"
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(expected)) as caught:
        load_settings({"MCP_SESSION_SECRET_FILE": str(path)})
    message = str(caught.value)
    assert f"MCP_SESSION_SECRET_FILE={str(path)!r}" in message
    assert SECRET[:20] not in message and SECRET[20:] not in message


def test_the_secret_and_its_file_together_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "session_secret"
    path.write_text(SECRET, encoding="utf-8")
    with pytest.raises(ConfigError, match="are both set: set one of them") as caught:
        load_settings({"MCP_SESSION_SECRET": "x" * 40, "MCP_SESSION_SECRET_FILE": str(path)})
    assert "x" * 40 not in str(caught.value) and SECRET not in str(caught.value)
