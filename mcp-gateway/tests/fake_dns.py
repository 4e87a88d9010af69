"""A DNS server on 127.0.0.1 (UDP) that answers A and AAAA queries from a table a test edits.

It stands for Docker's embedded DNS, which answers a Compose service name with the address of
every container of the service: during a deploy, the old and the new one. The machine's own
resolver has no name with two loopback addresses (``localhost`` may have only 127.0.0.1), and
/etc/hosts is not the tests' to edit, so a test points gRPC's resolver here through the target's
authority, ``dns://127.0.0.1:PORT/name:port`` (gRPC's c-ares resolver; the default in grpcio).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading

_A, _AAAA = 1, 28
_NXDOMAIN = 3
# What Docker's embedded DNS sends: a resolver that cached answers would miss a new container.
_TTL = 600


class FakeDns:
    """``records[name]`` lists the addresses (IPv4 or IPv6 text) the name resolves to, in order.

    A name absent from ``records`` is NXDOMAIN; ``queries`` records every (name, type) asked.
    """

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries: list[tuple[str, int]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, name="fake-dns", daemon=True)
        self._thread.start()

    def target(self, name: str, port: int) -> str:
        """The gRPC target that resolves ``name`` with this server."""
        return f"dns://127.0.0.1:{self.port}/{name}:{port}"

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self._sock.recvfrom(4096)
            except OSError:  # closed
                return
            answer = self._answer(query)
            if answer is not None:
                try:
                    self._sock.sendto(answer, peer)
                except OSError:  # closed meanwhile
                    return

    def _answer(self, query: bytes) -> bytes | None:
        if len(query) < 17:
            return None
        qid, _flags, qdcount = struct.unpack(">HHH", query[:6])
        if qdcount != 1:
            return None
        labels: list[str] = []
        i = 12
        while i < len(query) and query[i]:
            length = query[i]
            labels.append(query[i + 1 : i + 1 + length].decode("ascii", "replace"))
            i += length + 1
        if i + 5 > len(query):
            return None
        qtype = struct.unpack(">H", query[i + 1 : i + 3])[0]
        question = query[12 : i + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        records = self.records.get(name)
        answers = b""
        count = 0
        for text in records or []:
            address = ipaddress.ip_address(text)
            kind = _A if address.version == 4 else _AAAA
            if kind == qtype:
                # Name as a pointer to the question's name (offset 12), class IN, _TTL.
                answers += b"\xc0\x0c" + struct.pack(">HHIH", kind, 1, _TTL, len(address.packed))
                answers += address.packed
                count += 1
        # Response, recursion desired + available, NXDOMAIN for an unknown name.
        flags = 0x8180 | (_NXDOMAIN if records is None else 0)
        return struct.pack(">HHHHHH", qid, flags, 1, count, 0, 0) + question + answers
