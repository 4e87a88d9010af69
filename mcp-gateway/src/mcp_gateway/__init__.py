"""mcp-gateway: an MCP server exposing the tools of provider.v1 gRPC providers.

Run ``mcp-gateway`` (or ``python -m mcp_gateway``) for streamable HTTP at ``/mcp``, or with
``--stdio`` for local MCP clients. Settings come from the environment: ``GATEWAY_PORT``,
``MCP_PROVIDERS`` and ``MCP_GATEWAY_TOKEN`` (see :mod:`mcp_gateway.config`).
"""
