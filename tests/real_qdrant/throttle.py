"""A loopback TCP forwarder in front of real Qdrant that can slow what Qdrant sends, so a snapshot download lasts
long enough for a test to act while it runs (cancel it, restart Qdrant under it). The bytes are Qdrant's own; only
their pace changes. The rate limiting is the proxy's job, not a test waiting for something."""

from __future__ import annotations

import socket
import time

from tests.faults.netproxy import TcpProxy


class ThrottledProxy(TcpProxy):
    """:class:`TcpProxy` whose upstream -> client direction runs at most ``rate`` bytes per second (None: no
    limit). The rate may be changed while connections are open."""

    chunk = 64 * 1024

    def __init__(self, target_host: str, target_port: int, rate: int | None = None, *,
                 both_ways: bool = False) -> None:
        super().__init__(target_host, target_port)
        self.rate = rate
        #: Pace what clients send too (a peer's p2p traffic: a shard transfer is sent by the client side).
        self.both_ways = both_ways
        self._paced: dict[socket.socket, tuple[float, int]] = {}  # per upstream socket: (since, bytes since)

    def throttle(self, rate: int | None) -> None:
        self.rate = rate

    def bytes_sent(self) -> int:
        """Bytes Qdrant has sent through the proxy so far, over every connection (while the rate is set)."""
        return sum(sent for _since, sent in list(self._paced.values()))

    def _forwarded(self, src: socket.socket, count: int) -> None:
        try:
            if src.getpeername() != self.target and not self.both_ways:
                return  # client -> Qdrant: not paced
        except OSError:
            return
        now = time.monotonic()
        rate = self.rate
        if not rate:
            self._paced[src] = (now, 0)
            return
        started, sent = self._paced.get(src, (now, 0))
        sent += count
        self._paced[src] = (started, sent)
        ahead = sent / rate - (now - started)
        if ahead > 0:
            time.sleep(ahead)  # pacing the stream, not waiting for a condition
