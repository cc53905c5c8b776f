"""A TCP proxy of the tests' own, between one hub node and Redis, that can misbehave the way
networks do: delay every byte, stall (hold everything, then let it through), reset every
connection, or silently drop the connections it has (a NAT or firewall that forgot them: no FIN,
no RST, nothing more gets through either way, while new connections work).

It can also record the exchanges it carries (``exchanges``, off by default): on each
connection, a burst of bytes from the client up to the server's first reply is one exchange,
one round trip (what ``tests/roundtrips.py`` counts).

It runs on the test's event loop, on a free loopback port; ``url`` is what the node is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from dataclasses import dataclass, field

__all__ = ["Exchange", "FaultProxy"]

_LINK_IDS = itertools.count(1)


@dataclass
class Exchange:
    """One round trip on one connection: what the client sent (a command, or a pipeline sent
    at once) from when it arrived at the proxy until the server's reply began to."""

    link: int  # which connection
    started: float  # loop time the request's first byte arrived
    request: bytearray = field(default_factory=bytearray)
    replied: float | None = None  # loop time the reply's first byte arrived


class _Link:
    """One proxied connection: two pumps, one per direction."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.dropped = False  # silently dropped: read and discard, forever
        self.tasks: list[asyncio.Task[None]] = []
        self.id = next(_LINK_IDS)
        self.open: Exchange | None = None  # the exchange of this link awaiting its reply

    def _record(self, data: bytes, from_client: bool, now: float) -> None:
        """Note a chunk in the proxy's exchanges (when it records them)."""
        exchanges = self.proxy.exchanges
        if exchanges is None:
            return
        if from_client:
            if self.open is None:
                self.open = Exchange(self.id, now)
                exchanges.append(self.open)
            self.open.request += data
        elif self.open is not None:  # else a push (pub/sub): no request of its own
            self.open.replied = now
            self.open = None

    async def pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool
    ) -> None:
        """Forward one direction: each chunk leaves ``delay`` after it arrived (a link's
        latency, not a queue's), in order, and only while the proxy is flowing."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def read() -> None:
            try:
                while data := await reader.read(65536):
                    self._record(data, from_client, loop.time())
                    chunks.put_nowait((loop.time(), data))
            except (ConnectionError, OSError):
                pass
            chunks.put_nowait((loop.time(), b""))

        reading = asyncio.ensure_future(read())
        try:
            while True:
                arrived, data = await chunks.get()
                if not data:
                    break
                if self.proxy.delay:
                    await asyncio.sleep(max(0.0, arrived + self.proxy.delay - loop.time()))
                await self.proxy.flowing.wait()
                if self.dropped:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            if not self.dropped:
                with contextlib.suppress(Exception):
                    writer.close()

    def reset(self) -> None:
        """Close both sides with an RST."""
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.delay = 0.0  # seconds added to every chunk, each way (order kept)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.links: set[_Link] = set()
        self.exchanges: list[Exchange] | None = None  # a list to record them in
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> FaultProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for link in list(self.links):
            link.reset()
            for task in link.tasks:
                task.cancel()
        if self.server is not None:
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(self, writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        link.upstream = up_writer
        self.links.add(link)
        link.tasks = [
            asyncio.ensure_future(link.pump(reader, up_writer, True)),
            asyncio.ensure_future(link.pump(up_reader, writer, False)),
        ]
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self.links.discard(link)
            # Both ways have ended (each peer closed, or the proxy did): a dropped link's
            # pumps close nothing (it says nothing), so its sockets are let go of here.
            for end in (writer, up_writer):
                if not end.transport.is_closing():
                    end.transport.abort()

    # -- faults -------------------------------------------------------------------------------

    def stall(self) -> None:
        """Hold every byte, both ways, on every connection (until :meth:`resume`)."""
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def drop_silently(self) -> None:
        """The connections open now carry nothing more, and say nothing; new ones work."""
        for link in self.links:
            link.dropped = True

    def reset(self) -> None:
        """Every connection open now is reset (RST)."""
        for link in list(self.links):
            link.reset()
