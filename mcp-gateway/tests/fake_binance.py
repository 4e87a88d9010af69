"""A fake of Binance's public spot REST API: the four market-data endpoints the provider calls.

Response shapes follow binance-spot-api-docs ``rest-api.md`` exactly (decimals as strings,
klines as 12-element arrays, ``{code, msg}`` errors with HTTP 400). Data is deterministic so
tests can check that figures travel unchanged from "Binance" to the MCP client.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SYMBOL = "BTCUSDT"
LAST_PRICE = "67012.34000000"
BASE_TIME_MS = 1_764_288_000_000  # 2025-11-28T00:00:00Z
INTERVAL_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "1d": 86_400_000}


def ticker_24hr(symbol: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "priceChange": "1012.34000000",
        "priceChangePercent": "1.534",
        "weightedAvgPrice": "66500.12000000",
        "prevClosePrice": "66000.00000000",
        "lastPrice": LAST_PRICE,
        "lastQty": "0.01500000",
        "bidPrice": "67012.33000000",
        "bidQty": "1.20000000",
        "askPrice": "67012.35000000",
        "askQty": "0.80000000",
        "openPrice": "66000.00000000",
        "highPrice": "67500.00000000",
        "lowPrice": "65800.00000000",
        "volume": "12345.67800000",
        "quoteVolume": "821234567.12000000",
        "openTime": BASE_TIME_MS - 86_400_000,
        "closeTime": BASE_TIME_MS,
        "firstId": 5_000_000,
        "lastId": 5_123_456,
        "count": 123_457,
    }


def depth(limit: int) -> dict[str, Any]:
    return {
        "lastUpdateId": 1_027_024,
        # Best first: bids descending, asks ascending; [PRICE, QTY] strings.
        "bids": [[f"{67012.33 - i * 0.5:.8f}", f"{1.2 + i * 0.1:.8f}"] for i in range(limit)],
        "asks": [[f"{67012.35 + i * 0.5:.8f}", f"{0.8 + i * 0.1:.8f}"] for i in range(limit)],
    }


def klines(interval: str, limit: int) -> list[list[Any]]:
    step = INTERVAL_MS[interval]
    rows: list[list[Any]] = []
    for i in range(limit):
        open_time = BASE_TIME_MS - (limit - i) * step
        close = 66000 + 40 * i + (25 if i % 2 else -25)
        rows.append(
            [
                open_time,
                f"{66000 + 40 * i:.8f}",
                f"{close + 60:.8f}",
                f"{close - 80:.8f}",
                f"{close:.8f}",
                f"{100 + i:.8f}",
                open_time + step - 1,
                f"{(100 + i) * close:.8f}",
                1000 + i,
                f"{50 + i / 2:.8f}",
                f"{(50 + i / 2) * close:.8f}",
                "0",
            ]
        )
    return rows


def trades(limit: int) -> list[dict[str, Any]]:
    return [
        {
            "id": 5_123_456 - limit + i + 1,
            "price": f"{67000 + (i % 7):.8f}",
            "qty": f"{0.01 * (1 + i % 5):.8f}",
            "quoteQty": f"{(67000 + (i % 7)) * 0.01 * (1 + i % 5):.8f}",
            "time": BASE_TIME_MS - (limit - i) * 1000,
            "isBuyerMaker": i % 3 == 0,
            "isBestMatch": True,
        }
        for i in range(limit)
    ]


@dataclass
class FakeBinance:
    """Serves the fake and records each request."""

    # Where it listens: by default loopback, a port chosen by the OS (a deployed stack's
    # provider reaches the host on a Docker bridge address instead).
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    # Seconds each answer waits (a slow upstream).
    delay_seconds: float = 0.0
    # Seconds the answers for one path wait (e.g. a slow order book), on top of delay_seconds.
    path_delay_seconds: dict[str, float] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as Binance's API: the provider's connection pool reuses connections.
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: without TCP_NODELAY the body waits ~40 ms for
            # the client's delayed ACK on every kept-alive request.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json;charset=UTF-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller gave up (a timeout test): nothing to answer

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                fake.requests.append((url.path, query))
                delay = fake.delay_seconds + fake.path_delay_seconds.get(url.path, 0.0)
                if delay:
                    time.sleep(delay)
                status, body = fake.answer(url.path, query)
                self._send(status, body)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        """Binance's answer to one GET: (HTTP status, JSON body)."""
        if path not in ("/api/v3/ticker/24hr", "/api/v3/depth", "/api/v3/klines", "/api/v3/trades"):
            return 404, {"code": -1000, "msg": f"Unknown path {path}"}
        symbol = query.get("symbol")
        if symbol is None:
            return 400, {
                "code": -1102,
                "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            }
        if symbol != SYMBOL:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        try:
            limit = int(query.get("limit", "100"))
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in parameter 'limit'."}
        if path == "/api/v3/ticker/24hr":
            return 200, ticker_24hr(symbol)
        if path == "/api/v3/depth":
            return 200, depth(min(limit, 5000))
        if path == "/api/v3/klines":
            interval = query.get("interval", "")
            if interval not in INTERVAL_MS:
                return 400, {"code": -1120, "msg": "Invalid interval."}
            return 200, klines(interval, min(limit, 1000))
        return 200, trades(min(limit, 1000))
