# Test image of mcp-gateway: the real package in a venv built for Debian bookworm's python3
# (the same interpreter path as in this image), same port, user and healthcheck command as the
# published image. BROKEN=1 makes the "bad release" of the scenarios: the real gateway started
# on another port than the contract's 3001, so `python -m mcp_gateway.healthcheck` fails.
ARG BASE
FROM ${BASE}
ARG VERSION
ARG REVISION
ARG BROKEN=0
COPY venv /opt/mcp-gateway
LABEL org.opencontainers.image.title="mcp-gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV PATH=/opt/mcp-gateway/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    GATEWAY_PORT=3001 \
    MCP_GATEWAY_BROKEN=${BROKEN}
EXPOSE 3001
USER 10001:10001
ENTRYPOINT ["/bin/sh", "-c", "if [ \"$MCP_GATEWAY_BROKEN\" = 1 ]; then export GATEWAY_PORT=3999; fi; exec mcp-gateway"]
