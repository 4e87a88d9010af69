"""Build, test, publish and deploy mcp-trader.

mcp-trader is a Rust gRPC market-data provider and a Python MCP gateway. The same functions run
on a laptop (`dagger call build-all`) and in GitHub Actions.
"""

from .main import McpTrader as McpTrader
