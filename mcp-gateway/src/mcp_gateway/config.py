"""Gateway configuration: the providers file and the environment.

The providers file (``MCP_PROVIDERS``) is YAML with one top-level key::

    providers:
      - name: binance                  # lowercase; its tools are named "binance.*"
        address: binance-provider:50053  # host:port of the provider's gRPC server
        enabled: true                  # optional, default true
        timeout_seconds: 15            # optional, default 15: deadline of each tool call

Anything else (unknown keys, a bad address, duplicate names...) is refused at start-up with an
error that names the file, the entry and the problem.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from mcp_gateway.security import DEFAULT_ALLOWED_HOSTS, DEFAULT_ALLOWED_ORIGINS, AllowList

DEFAULT_HOST = "0.0.0.0"  # noqa: S104 - a container service: compose publishes the port
DEFAULT_PORT = 3001
SESSION_MODES = ("stateful", "stateless")
DEFAULT_SESSION_IDLE_SECONDS = 300.0
DEFAULT_MAX_SESSIONS = 1000
DEFAULT_DRAIN_SECONDS = 1.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 10.0
DEFAULT_PROVIDER_RETRY_SECONDS = 10.0
MIN_SESSION_SECRET_LENGTH = 32
DEFAULT_TIMEOUT_SECONDS = 15.0
MAX_TIMEOUT_SECONDS = 600.0
# Shipped in the package: the compose stack's provider, used when MCP_PROVIDERS is unset.
DEFAULT_PROVIDERS_RESOURCE = "providers.default.yaml"

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)$")


class ConfigError(Exception):
    """The gateway cannot start: the message says which setting or file entry is wrong and why."""


class ProviderConfig(BaseModel):
    """One provider entry of the providers file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(description="short lowercase name, the prefix of its tool names")]
    address: Annotated[str, Field(description="host:port of the provider's gRPC server")]
    enabled: bool = True
    timeout_seconds: Annotated[float, Field(gt=0, le=MAX_TIMEOUT_SECONDS)] = DEFAULT_TIMEOUT_SECONDS

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a valid provider name: use lowercase letters, digits, "
                "'_' or '-', starting with a letter (e.g. 'binance')"
            )
        return value

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not _HOST_RE.fullmatch(host):
            raise ValueError(f"{value!r} is not host:port (e.g. 'binance-provider:50053')")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{value!r} has port {port!r}; a port is a number from 1 to 65535")
        return value


class ProvidersFile(BaseModel):
    """The whole providers file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: list[ProviderConfig]


@dataclass(frozen=True)
class Settings:
    """Everything the gateway reads from its environment, validated (see the README's table)."""

    port: int
    providers_file: str
    providers: tuple[ProviderConfig, ...]
    token: str | None
    host: str = DEFAULT_HOST
    allowed_hosts: AllowList = field(default_factory=lambda: AllowList.hosts(DEFAULT_ALLOWED_HOSTS))
    allowed_origins: AllowList = field(
        default_factory=lambda: AllowList.origins(DEFAULT_ALLOWED_ORIGINS)
    )
    session_mode: str = "stateful"
    # Signs session ids so that every replica sharing it accepts them; random when not configured.
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    session_secret_shared: bool = False
    session_idle_seconds: float = DEFAULT_SESSION_IDLE_SECONDS
    max_sessions: int = DEFAULT_MAX_SESSIONS
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    shutdown_grace_seconds: float = DEFAULT_SHUTDOWN_GRACE_SECONDS
    provider_retry_seconds: float = DEFAULT_PROVIDER_RETRY_SECONDS

    @property
    def enabled_providers(self) -> tuple[ProviderConfig, ...]:
        """The providers the gateway talks to (``enabled: true``)."""
        return tuple(p for p in self.providers if p.enabled)


def _describe_location(loc: tuple[int | str, ...], raw: Any) -> str:
    """Turn a pydantic error location into 'entry 2 (name 'x'), field 'address''."""
    if len(loc) >= 2 and loc[0] == "providers" and isinstance(loc[1], int):
        index = loc[1]
        entry = f"entry {index + 1}"
        entries = raw.get("providers") if isinstance(raw, dict) else None
        if isinstance(entries, list) and index < len(entries) and isinstance(entries[index], dict):
            name = entries[index].get("name")
            if isinstance(name, str):
                entry += f" ({name!r})"
        rest = loc[2:]
        return entry + (f", field {'.'.join(map(str, rest))!r}" if rest else "")
    return "field " + repr(".".join(map(str, loc))) if loc else "top level"


def parse_providers(text: str, source: str) -> tuple[ProviderConfig, ...]:
    """Parse and validate providers YAML; ``source`` names the file in error messages."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"providers file {source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise ConfigError(
            f"providers file {source}: expected a mapping with a 'providers' list at the top "
            f"level, got {kind}"
        )
    try:
        parsed = ProvidersFile.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{_describe_location(tuple(err['loc']), raw)}: "
            + str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        ]
        raise ConfigError(f"providers file {source}: " + "; ".join(problems)) from exc
    seen: dict[str, int] = {}
    for index, provider in enumerate(parsed.providers, start=1):
        if provider.name in seen:
            raise ConfigError(
                f"providers file {source}: entry {index} ({provider.name!r}): name "
                f"{provider.name!r} is already used by entry {seen[provider.name]}; names must be "
                "unique because they prefix the tool names"
            )
        seen[provider.name] = index
    return tuple(parsed.providers)


def load_providers(path: str | None) -> tuple[str, tuple[ProviderConfig, ...]]:
    """Read the providers file at ``path`` (or the packaged default when ``None``).

    Returns the file's name (for logs and /ready) and its validated entries.
    """
    if path is None:
        text = (
            resources.files("mcp_gateway")
            .joinpath(DEFAULT_PROVIDERS_RESOURCE)
            .read_text(encoding="utf-8")
        )
        source = f"(built-in {DEFAULT_PROVIDERS_RESOURCE})"
        return source, parse_providers(text, source)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"providers file {path} (MCP_PROVIDERS) does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"providers file {path} (MCP_PROVIDERS) cannot be read: {exc}") from exc
    return path, parse_providers(text, path)


def parse_port(value: str | None) -> int:
    """Validate GATEWAY_PORT (default 3001)."""
    if value is None or value.strip() == "":
        return DEFAULT_PORT
    if not value.strip().isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"GATEWAY_PORT={value!r} is not a port: use a number from 1 to 65535")
    return int(value)


def parse_host(value: str | None) -> str:
    """Validate GATEWAY_HOST: an IP address (``::`` for all IPv6) or a host name."""
    if value is None or value.strip() == "":
        return DEFAULT_HOST
    host = value.strip()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_RE.fullmatch(host) or host.startswith("["):
            raise ConfigError(
                f"GATEWAY_HOST={value!r} is not an address to bind: use an IP address "
                "(127.0.0.1 for this machine only, 0.0.0.0 or :: for every interface) "
                "or a host name"
            ) from None
    return host


def _number(
    env: dict[str, str],
    name: str,
    default: float,
    minimum: float,
    maximum: float,
    unit: str = "number of seconds",
) -> float:
    raw = env.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not minimum <= value <= maximum:  # also false for nan
        raise ConfigError(f"{name}={raw!r} is not a {unit} from {minimum:g} to {maximum:g}")
    return value


def _allow_list(env: dict[str, str], name: str, default: str, origins: bool) -> AllowList:
    raw = env.get(name, "").strip() or default
    try:
        return AllowList.origins(raw) if origins else AllowList.hosts(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _check_session_secret(value: str, source: str) -> bytes:
    if any(c.isspace() for c in value) or len(value) < MIN_SESSION_SECRET_LENGTH:
        raise ConfigError(
            f"{source} must be at least {MIN_SESSION_SECRET_LENGTH} characters without "
            "whitespace (e.g. the output of `openssl rand -hex 32`); it is not echoed here"
        )
    return value.encode()


def _session_secret(env: dict[str, str]) -> bytes | None:
    """MCP_SESSION_SECRET, or the content of MCP_SESSION_SECRET_FILE; None when neither is set.

    Empty values count as unset (compose passes ``${MCP_SESSION_SECRET:-}``). The file's trailing
    newline and surrounding whitespace are dropped, as ``echo … > file`` and editors add them.
    """
    value = env.get("MCP_SESSION_SECRET") or ""
    path = env.get("MCP_SESSION_SECRET_FILE") or ""
    if value and path:
        raise ConfigError(
            "MCP_SESSION_SECRET and MCP_SESSION_SECRET_FILE are both set: set one of them "
            f"(MCP_SESSION_SECRET_FILE={path!r})"
        )
    if value:
        return _check_session_secret(value, "MCP_SESSION_SECRET")
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"MCP_SESSION_SECRET_FILE={path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        # The OS error names the path and the reason, never the file's content.
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"MCP_SESSION_SECRET_FILE={path!r} cannot be read: {reason}") from None
    return _check_session_secret(text.strip(), f"the secret in MCP_SESSION_SECRET_FILE={path!r}")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read the gateway's environment (the README's table); raise ConfigError when invalid."""
    env = dict(os.environ) if environ is None else environ
    port = parse_port(env.get("GATEWAY_PORT"))
    host = parse_host(env.get("GATEWAY_HOST"))
    providers_path = env.get("MCP_PROVIDERS") or None
    source, providers = load_providers(providers_path)
    token = env.get("MCP_GATEWAY_TOKEN") or None
    if token is not None and (token != token.strip() or any(c.isspace() for c in token)):
        raise ConfigError(
            "MCP_GATEWAY_TOKEN contains whitespace; a bearer token is one word "
            "(e.g. the output of `openssl rand -hex 32`)"
        )
    mode = env.get("MCP_SESSION_MODE", "").strip() or "stateful"
    if mode not in SESSION_MODES:
        raise ConfigError(
            f"MCP_SESSION_MODE={mode!r} is not a session mode: use 'stateful' (session ids any "
            "replica with the same MCP_SESSION_SECRET accepts) or 'stateless'"
        )
    secret = _session_secret(env)
    max_sessions = _number(
        env, "MCP_MAX_SESSIONS", DEFAULT_MAX_SESSIONS, 1, 1_000_000, unit="number of sessions"
    )
    if max_sessions != int(max_sessions):
        raise ConfigError(f"MCP_MAX_SESSIONS={env['MCP_MAX_SESSIONS']!r} is not a whole number")
    return Settings(
        port=port,
        providers_file=source,
        providers=providers,
        token=token,
        host=host,
        allowed_hosts=_allow_list(env, "MCP_ALLOWED_HOSTS", DEFAULT_ALLOWED_HOSTS, origins=False),
        allowed_origins=_allow_list(
            env, "MCP_ALLOWED_ORIGINS", DEFAULT_ALLOWED_ORIGINS, origins=True
        ),
        session_mode=mode,
        session_secret=secret if secret is not None else secrets.token_bytes(32),
        session_secret_shared=secret is not None,
        session_idle_seconds=_number(
            env, "MCP_SESSION_IDLE_SECONDS", DEFAULT_SESSION_IDLE_SECONDS, 1, 7 * 86400
        ),
        max_sessions=int(max_sessions),
        drain_seconds=_number(env, "GATEWAY_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS, 0, 600),
        shutdown_grace_seconds=_number(
            env, "GATEWAY_SHUTDOWN_GRACE_SECONDS", DEFAULT_SHUTDOWN_GRACE_SECONDS, 0.1, 600
        ),
        provider_retry_seconds=_number(
            env, "PROVIDER_RETRY_SECONDS", DEFAULT_PROVIDER_RETRY_SECONDS, 0, MAX_TIMEOUT_SECONDS
        ),
    )
