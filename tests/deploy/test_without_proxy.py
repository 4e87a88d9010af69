"""The stack without the proxy, as README "The proxy" > "Without the proxy" sets it up: one line in
the server's .env chooses deploy/compose.no-proxy.yml, the gateway publishes the port itself, and
the deploy script, seeing no `proxy` service, removes the running proxy and replaces the gateway
in place. The same directory sets its own MCP_SESSION_SECRET in .env, which wins over the
generated secret file.

One scenario: a failed first pull, a deploy behind the proxy, the switch to no proxy, an automatic
rollback and a rollback, each health-gated.
"""

from __future__ import annotations

import pytest

from tests.deploy import images
from tests.deploy.conftest import Server
from tests.deploy.helpers import (
    BAD,
    SECRET_FILE,
    V1,
    V2,
    G,
    P,
    both,
    container_ids,
    open_session,
    other_lines,
    pinned,
    secret_leaks,
    session_answered,
    signed_with,
)

pytestmark = pytest.mark.docker

# The README's line, exactly.
WITHOUT_PROXY = "COMPOSE_FILE=compose.yml:deploy/compose.no-proxy.yml"
OWN_SECRET = "own-session-secret-" + "5e" * 16


def test_without_the_proxy_the_gateway_is_replaced_in_place(server: Server) -> None:
    *settings, last = server.env_lines
    server.env_file.write_text("\n".join([*settings, f"MCP_SESSION_SECRET={OWN_SECRET}", last]))
    env_before = server.env_file.read_bytes()
    # A failed pull on a fresh directory changes nothing: no containers, no secret file made.
    outputs = [server.run("deploy", tag=images.MISSING_TAG)]
    assert outputs[-1].returncode == 3, outputs[-1].output
    assert server.containers() == {}
    assert not (server.path / SECRET_FILE.parent).exists()
    assert server.env_file.read_bytes() == env_before

    outputs.append(server.run("deploy", tag=V1))
    assert outputs[-1].returncode == 0, outputs[-1].output
    assert set(server.containers()) == {P, G, "proxy"}
    # .env's own secret signs the sessions (the generated file is made, and unused).
    session = open_session(server)
    assert signed_with(session, OWN_SECRET)
    assert not signed_with(session, (server.path / SECRET_FILE).read_text().strip())

    # The README's one line, then a deploy: the proxy goes, the gateway publishes the port.
    text = server.env_file.read_text()
    server.env_file.write_text(text.replace(last, f"{WITHOUT_PROXY}\n{last}"))
    env_before = other_lines(server)  # from now on every byte but the two tag lines stays
    outputs.append(server.run("deploy", tag=V2))
    assert outputs[-1].returncode == 0, outputs[-1].output
    assert "removing the proxy container" in outputs[-1].output
    assert "replacing mcp-gateway in place" in outputs[-1].output
    assert server.running_tags() == both(V2)
    assert set(server.containers()) == {P, G}
    assert server.gateway_health() == 200
    assert set(server.compose("config", "--services").stdout.split()) == {P, G}
    # Another gateway container, the same secret: the session goes on.
    assert session_answered(server, session) == 200

    # An unhealthy version replaced the gateway in place, so the rollback starts the previous
    # one again: exit 4, recorded, healthy.
    gateway_v2 = container_ids(server)[G]
    outputs.append(server.run("deploy", tag=BAD))
    assert outputs[-1].returncode == 4, outputs[-1].output
    assert "rolled back" in outputs[-1].output
    assert server.running_tags() == both(V2)
    assert container_ids(server)[G] != gateway_v2
    assert server.gateway_health() == 200
    assert session_answered(server, session) == 200

    outputs.append(server.run("rollback"))
    assert outputs[-1].returncode == 0, outputs[-1].output
    assert server.running_tags() == both(V1)
    assert set(server.containers()) == {P, G}
    assert pinned(server) == (V1, V1)
    assert session_answered(server, session) == 200
    assert [(e["action"], e["to"]["gateway"], e["result"]) for e in server.log()] == [
        ("deploy", images.MISSING_TAG, "pull-failed"),
        ("deploy", V1, "ok"),
        ("deploy", V2, "ok"),
        ("deploy", BAD, "unhealthy-rolled-back"),
        ("rollback-previous", V1, "ok"),
    ]
    assert other_lines(server) == env_before
    outputs.append(server.run("status"))
    assert outputs[-1].returncode == 0, outputs[-1].output
    assert "secret:    MCP_SESSION_SECRET from .env" in outputs[-1].stdout
    leaks = secret_leaks(server, OWN_SECRET, *(r.output for r in outputs), home=server.env_file)
    assert leaks == []
