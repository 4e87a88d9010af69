"""The main object: every function `dagger call` exposes.

Each function is a thin entry point; the work lives in one module per job
(provider.py, gateway.py, checks.py, tags.py, publish.py, pipeline.py, deploy.py).
"""

from typing import Annotated

import dagger
from dagger import DefaultPath, Doc, Ignore, object_type


@object_type
class McpTrader:
    """mcp-trader's pipeline: build both images, test them, publish them to GHCR, deploy them over SSH."""

    source: Annotated[
        dagger.Directory,
        Doc("The repository root. Defaults to the directory holding dagger.json."),
        DefaultPath("/"),
        Ignore([".git", "**/target", "**/.venv", "**/__pycache__", "ci/sdk"]),
    ]
