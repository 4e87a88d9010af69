"""``python -m mcp_gateway.healthcheck``: exit 0 only when the local gateway's /health answers 200.

The container healthcheck. Standard library only (slim images have no curl) and a short timeout,
so a hung gateway counts as unhealthy instead of stalling the check.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_SECONDS = 3.0


def check(port: str) -> tuple[bool, str]:
    """GET http://127.0.0.1:<port>/health; return (healthy, what happened)."""
    url = f"http://127.0.0.1:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return False, f"{url} is unreachable: {reason}"
    if status != 200:
        return False, f"{url} answered HTTP {status}"
    return True, f"{url} answered 200"


def main() -> None:
    port = os.environ.get("GATEWAY_PORT", "").strip() or "3001"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        print(f"healthcheck: GATEWAY_PORT={port!r} is not a port (1-65535)", file=sys.stderr)
        raise SystemExit(2)
    healthy, message = check(port)
    print(f"healthcheck: {message}", file=sys.stderr if not healthy else sys.stdout)
    raise SystemExit(0 if healthy else 1)


if __name__ == "__main__":
    main()
