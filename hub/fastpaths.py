"""The one door to other libraries' internals: every fast path, what it assumes, and its check.

The hub's fast paths (hub.transport, hub/_fanout.c) reach below the public interfaces of
uvicorn, websockets, asyncio and uvloop; the Redis backend leans on a few of redis-py's. Each
such assumption is a row of :data:`TABLE`: the library, the versions the suite passed on,
what it touches, what depends on it, and a check. :func:`configure` runs the checks once at
start-up (``hub serve``, and the app's lifespan, mounted or not): a failed check turns its
fast path off with one warning line naming the check, and the hub runs the plain path there
(uvicorn's own protocol classes, the ASGI ``send``, the Python send loop). No socket ever
fails for it. ``HUB_FAST_PATHS=off`` turns them all off.

What is on shows in ``hub serve``'s log (one line) and in ``GET /v1/stats`` (``fast_paths``).
``scripts/test --newest`` prints every check's result against the newest releases.
"""

from __future__ import annotations

import dis
import importlib
import inspect
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

__all__ = [
    "TABLE", "FastPath", "check_all", "check_one", "compiled_send_each", "configure",
    "markdown_table", "on", "selector_loop", "socket_transport", "state_attribute", "status",
    "summary",
]  # fmt: skip

log = logging.getLogger("hub.fastpaths")


@dataclass(frozen=True)
class FastPath:
    """One assumption about another library's internals.

    ``check()`` returns None when the assumption holds here, else why not (one line).
    ``required``: not a fast path but something the hub cannot do without (redis-py's): a
    failed check is reported the same way, and the code runs as it is. ``needs``: the fast
    paths this one only works beside."""

    name: str
    library: str
    tested: str
    touches: str
    used_by: str
    check: Callable[[], str | None]
    needs: tuple[str, ...] = ()
    required: bool = False


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _stores(*functions: Any) -> set[str]:
    """The attribute names the given functions assign (``self.x = ...``)."""
    names: set[str] = set()
    for function in functions:
        code = getattr(function, "__code__", None)
        if code is not None:
            names |= {i.argval for i in dis.get_instructions(code) if i.opname == "STORE_ATTR"}
    return names


def _missing(obj: Any, names: tuple[str, ...]) -> str | None:
    absent = [name for name in names if not hasattr(obj, name)]
    if absent:
        return f"{getattr(obj, '__qualname__', type(obj).__qualname__)} has no {', '.join(absent)}"
    return None


def _params(function: Any) -> tuple[str, ...]:
    try:
        return tuple(inspect.signature(function).parameters) if callable(function) else ()
    except (TypeError, ValueError):
        return ()


# -- uvicorn ----------------------------------------------------------------------------------

# What HubHttpProtocol reads of uvicorn's h11 protocol (set by its __init__/connection_made).
_H11_ATTRIBUTES = (
    "app_state", "client", "config", "conn", "connections", "cycle", "loop", "scheme", "server",
    "server_state", "transport", "ws_protocol_class",
)  # fmt: skip
_H11_METHODS = ("connection_made", "connection_lost", "data_received", "on_response_complete")


def _check_http_protocol() -> str | None:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    absent = _missing(H11Protocol, _H11_METHODS)
    if absent:
        return absent
    stored = _stores(H11Protocol.__init__, H11Protocol.connection_made)
    lost = [name for name in _H11_ATTRIBUTES if name not in stored]
    if lost:
        return f"H11Protocol no longer sets {', '.join(lost)}"
    import h11

    return _missing(h11.Connection, ("trailing_data", "their_state", "our_state"))


# What HubWebSocketProtocol overrides or calls of uvicorn's websockets-sansio protocol.
_WS_METHODS = (
    "connection_made", "data_received", "handle_connect", "keepalive_timeout", "send",
    "send_receive_event_to_app",
)  # fmt: skip


def _check_ws_protocol() -> str | None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    from hub.transport import HubWebSocketProtocol

    absent = _missing(WebSocketsSansIOProtocol, _WS_METHODS)
    if absent:
        return absent
    if _params(WebSocketsSansIOProtocol.__init__)[:4] != (
        "self",
        "config",
        "server_state",
        "app_state",
    ):
        return "WebSocketsSansIOProtocol.__init__ takes other parameters"
    # Every attribute uvicorn's methods set is one of the slots re-declared (a new one would
    # still work, in a dict of its own, but the class is no longer the one measured).
    stored: set[str] = set()
    for value in vars(WebSocketsSansIOProtocol).values():
        stored |= _stores(value)
    extra = sorted(stored - set(HubWebSocketProtocol.__slots__))
    if extra:
        return (
            f"WebSocketsSansIOProtocol sets {', '.join(extra)}, not in HubWebSocketProtocol's slots"
        )
    return None


# -- websockets -------------------------------------------------------------------------------


def _check_ws_server_protocol() -> str | None:
    from websockets.datastructures import Headers
    from websockets.http11 import Request
    from websockets.protocol import Protocol, Side
    from websockets.server import ServerProtocol

    probe = ServerProtocol()
    absent = _missing(
        probe,
        (
            "accept", "reject", "recv_frame", "parser", "reader", "origins",
            "available_extensions", "available_subprotocols", "accept_called", "handshake_exc",
            "current_size", "extensions", "subprotocol",
        ),
    )  # fmt: skip
    if absent:
        return absent
    if not hasattr(Headers, "set_insecure"):
        return "websockets Headers has no set_insecure"
    fields = getattr(Request, "__dataclass_fields__", {})
    if not all(name in fields for name in ("method", "protocol")):
        return "websockets Request has no method/protocol fields"
    if not inspect.isgeneratorfunction(Protocol.parse):
        return "websockets Protocol.parse is not a generator"
    if getattr(probe.reader, "buffer", None) is None or not hasattr(probe.reader, "eof"):
        return "websockets StreamReader has no buffer/eof"
    if probe.current_size is not None:
        return "websockets Protocol.current_size is not None between messages"
    del Side
    return None


def state_attribute() -> str:
    """How a send path reads a websockets connection's state: ``_state`` where
    ``Protocol.state`` is a property over it (no property call per socket), else ``state``."""
    from websockets.protocol import Protocol, Side

    probe = Protocol(Side.SERVER)
    return "_state" if getattr(probe, "_state", None) is probe.state else "state"


_PROTOCOL_NEEDED = ("transport", "writable", "close_sent", "conn", "queue", "loop", "read_paused")


def _check_direct_writer() -> str | None:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.server import ServerProtocol

    stored: set[str] = set()
    for value in vars(WebSocketsSansIOProtocol).values():
        stored |= _stores(value)
    lost = [name for name in _PROTOCOL_NEEDED if name not in stored]
    if lost:
        return f"WebSocketsSansIOProtocol no longer sets {', '.join(lost)}"
    return _missing(ServerProtocol(), ("extensions", "send_close", "data_to_send", "state"))


# -- asyncio ----------------------------------------------------------------------------------


def socket_transport() -> Any:
    import asyncio.selector_events

    return getattr(asyncio.selector_events, "_SelectorSocketTransport", None)


def _check_raw_send() -> str | None:
    transport = socket_transport()
    if transport is None:
        return "asyncio.selector_events has no _SelectorSocketTransport"
    stored = _stores(transport.__init__, *(vars(c).get("__init__") for c in transport.__mro__))
    lost = [name for name in ("_buffer", "_closing") if name not in stored]
    if lost:
        return f"_SelectorSocketTransport no longer sets {', '.join(lost)}"
    if state_attribute() != "_state":
        return "websockets Protocol.state is not a property over _state"
    return None


_ACCEPT_PARAMS = (
    "self", "protocol_factory", "sock", "sslcontext", "server", "backlog",
    "ssl_handshake_timeout", "ssl_shutdown_timeout",
)  # fmt: skip
_ACCEPT2_PARAMS = (
    "self", "protocol_factory", "conn", "extra", "sslcontext", "server",
    "ssl_handshake_timeout", "ssl_shutdown_timeout",
)  # fmt: skip


def selector_loop() -> Any:
    """asyncio's selector loop class (private module), or None."""
    import asyncio.selector_events

    return getattr(asyncio.selector_events, "BaseSelectorEventLoop", None)


def _check_accept_guard() -> str | None:
    loop = selector_loop()
    if loop is None:
        return "asyncio.selector_events has no BaseSelectorEventLoop"
    for name, params in (
        ("_accept_connection", _ACCEPT_PARAMS),
        ("_start_serving", _ACCEPT_PARAMS),
        ("_accept_connection2", _ACCEPT2_PARAMS),
    ):
        if _params(getattr(loop, name, None)) != params:
            return f"BaseSelectorEventLoop.{name} takes other parameters"
    if not callable(getattr(loop, "_remove_reader", None)):
        return "BaseSelectorEventLoop has no _remove_reader"
    return None


# -- uvloop -----------------------------------------------------------------------------------


def _check_uvloop_transport() -> str | None:
    try:
        uvloop = importlib.import_module("uvloop.loop")
    except ImportError:
        return None  # nothing to check: the hub runs on asyncio
    transport = getattr(uvloop, "TCPTransport", None)
    if transport is None:
        return "uvloop.loop has no TCPTransport"
    absent = _missing(transport, ("get_write_buffer_size", "is_closing", "get_extra_info"))
    if absent:
        return absent
    return _missing(uvloop.TimerHandle, ("when",))


# -- the compiled send loop -------------------------------------------------------------------

_compiled: Callable[..., Any] | None = None


def _check_compiled_loop() -> str | None:
    global _compiled
    _compiled = None
    try:
        from hub import _fanout
    except ImportError:
        return "hub._fanout was not built (no C compiler or Python headers at install)"
    from websockets.protocol import State

    from hub.connection import Connection
    from hub.transport import DirectWriter, HubWebSocketProtocol, Watched, _Flag

    try:
        _fanout.setup(
            Connection,
            DirectWriter,
            HubWebSocketProtocol,
            Watched,
            _Flag,
            State.OPEN,
            state_attribute(),
        )
    except TypeError as exc:  # a slot it reads at its offset is not one
        return f"hub._fanout.setup: {exc}"
    _compiled = _fanout.send_each
    return None


# -- event streams (uvicorn's h11 cycle) ------------------------------------------------------

_CYCLE_ATTRIBUTES = (
    "transport", "flow", "disconnected", "response_complete", "conn", "message_event",
)  # fmt: skip


def _check_event_writer() -> str | None:
    import h11
    from uvicorn.protocols.http.h11_impl import RequestResponseCycle

    stored = _stores(RequestResponseCycle.__init__)
    lost = [name for name in _CYCLE_ATTRIBUTES if name not in stored]
    if lost:
        return f"RequestResponseCycle no longer sets {', '.join(lost)}"
    if "_writer" not in _stores(*vars(h11.Connection).values()):
        return "h11 Connection no longer sets _writer"
    writers = importlib.import_module("h11._writers")
    return _missing(writers, ("ChunkedWriter", "Http10Writer"))


def _check_stream_shutdown() -> str | None:
    from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

    absent = _missing(H11Protocol, ("shutdown",))
    if absent:
        return absent
    if "message_event" not in _stores(RequestResponseCycle.__init__):
        return "RequestResponseCycle no longer sets message_event"
    return None


# -- TCP_CORK ---------------------------------------------------------------------------------


def _check_cork() -> str | None:
    if getattr(socket, "TCP_CORK", None) is None:
        return "socket.TCP_CORK is not available on this platform"
    return None


# -- redis-py (no plain path: reported, not switched) -----------------------------------------


def _redis() -> Any:
    try:
        return importlib.import_module("redis.asyncio")
    except ImportError:
        return None


def _check_redis_sentinel_pool() -> str | None:
    aioredis = _redis()
    if aioredis is None:
        return None
    from redis.asyncio.sentinel import SentinelConnectionPool

    try:
        type("Probe", (SentinelConnectionPool, aioredis.BlockingConnectionPool), {})
    except TypeError as exc:
        return f"SentinelConnectionPool with BlockingConnectionPool: {exc}"
    return None


def _check_redis_cluster_nodes() -> str | None:
    aioredis = _redis()
    if aioredis is None:
        return None
    from redis.asyncio.cluster import NodesManager

    if "nodes_manager" not in _stores(inspect.unwrap(aioredis.RedisCluster.__init__)):
        return "RedisCluster no longer has nodes_manager"
    return _missing(NodesManager, ("initialize",))


def _check_redis_pool_disconnect() -> str | None:
    aioredis = _redis()
    if aioredis is None:
        return None
    if "inuse_connections" not in _params(aioredis.ConnectionPool.disconnect):
        return "ConnectionPool.disconnect takes no inuse_connections"
    return None


TABLE: tuple[FastPath, ...] = (
    FastPath(
        "http_protocol",
        "uvicorn",
        "0.54, 0.55",
        "subclass of H11Protocol (uvicorn.protocols.http.h11_impl): data_received, "
        "connection_made, connection_lost, on_response_complete; its attributes conn, cycle, "
        "ws_protocol_class, connections, transport, config, server_state, app_state, loop, "
        "server, client, scheme; h11 Connection.trailing_data",
        "HubHttpProtocol: a presence handshake handed to the WebSocket protocol without h11; "
        "HUB_HANDSHAKE_TIMEOUT and HUB_MAX_PENDING_CONNECTIONS (hub.admission)",
        _check_http_protocol,
    ),
    FastPath(
        "ws_protocol",
        "uvicorn",
        "0.54, 0.55",
        "subclass of WebSocketsSansIOProtocol (websockets_sansio_impl): its 37 attributes "
        "re-declared as __slots__, queue and writable replaced, send_receive_event_to_app, "
        "keepalive_timeout, handle_connect, data_received, send overridden",
        "HubWebSocketProtocol: memory per socket, keepalive close 4408, 431 for large heads, "
        "reads paused only when 4 messages wait",
        _check_ws_protocol,
    ),
    FastPath(
        "ws_server_protocol",
        "websockets",
        "17.4",
        "conn.__class__ swapped from ServerProtocol; ServerProtocol.accept/reject/recv_frame, "
        "accept_called, handshake_exc, current_size; Headers.set_insecure; Request fields; "
        "Protocol.parse generator (conn.parser, reader.buffer, gi_yieldfrom)",
        "_ServerProtocol: handshakes without websockets' header parsers, 426 for another "
        "version, close between fragments echoed; the handshake's request dropped",
        _check_ws_server_protocol,
        needs=("ws_protocol",),
    ),
    FastPath(
        "direct_writer",
        "uvicorn, websockets",
        "0.54, 0.55; 17.4",
        "ASGI send.__self__ (the protocol): transport, writable, close_sent, conn, queue, loop, "
        "read_paused; conn.extensions, send_close, data_to_send",
        "DirectWriter: a flush's frame encoded once and written to every socket's transport "
        "(else the ASGI send, a frame per socket)",
        _check_direct_writer,
    ),
    FastPath(
        "raw_send",
        "asyncio, websockets",
        "CPython 3.11-3.13; 17.4",
        "asyncio.selector_events._SelectorSocketTransport and its _buffer, _closing; "
        "websockets Protocol._state",
        "DirectWriter._send_now and the compiled loop: the transport's buffer and state read, "
        "not asked",
        _check_raw_send,
        needs=("direct_writer",),
    ),
    FastPath(
        "compiled_loop",
        "CPython, hub._fanout",
        "CPython 3.11-3.13",
        "hub/_fanout.c reads Connection, DirectWriter, HubWebSocketProtocol (close_sent, "
        "writable), Watched and _Flag at their slots' offsets (setup())",
        "hub.connection.send_each: the fan-out's loop over a room's sockets, compiled",
        _check_compiled_loop,
        needs=("direct_writer",),
    ),
    FastPath(
        "uvloop_transport",
        "uvloop",
        "0.23",
        "uvloop's TCPTransport: get_write_buffer_size() 0 means nothing waits in libuv, so the "
        "socket's descriptor is written to directly; its timers' when()",
        "DirectWriter._send_now on uvloop (HUB_LOOP=uvloop)",
        _check_uvloop_transport,
        needs=("direct_writer",),
    ),
    FastPath(
        "event_writer",
        "uvicorn, h11",
        "0.55; 0.16",
        "ASGI send.__self__ of an HTTP response (uvicorn's RequestResponseCycle): transport, "
        "flow, disconnected, response_complete, conn, message_event; h11 Connection._writer "
        "(ChunkedWriter, Http10Writer)",
        "EventWriter: an event stream's events written straight to the transport, framed "
        "once (else the ASGI send)",
        _check_event_writer,
    ),
    FastPath(
        "stream_shutdown",
        "uvicorn",
        "0.55",
        "the server's send found behind a parent app's wrappers (send.__self__, closures' "
        "cells); H11Protocol.shutdown replaced on the instance",
        "event streams closed with 1012 when the server shuts down (else they end when "
        "uvicorn closes their connection)",
        _check_stream_shutdown,
    ),
    FastPath(
        "cork",
        "Linux, uvicorn",
        "Linux 5-6; 0.54, 0.55",
        "socket.TCP_CORK on the socket of send.__self__.transport",
        "Cork: a new socket's 101 and snapshot in one TCP segment",
        _check_cork,
    ),
    FastPath(
        "accept_guard",
        "asyncio",
        "CPython 3.11-3.13",
        "asyncio.selector_events.BaseSelectorEventLoop._accept_connection, "
        "_accept_connection2, _start_serving, _remove_reader (their parameters)",
        "guard_accepts: out of descriptors, one log line per 10 s and a retry in 0.1 s "
        "(else asyncio's own accept, its log folded by a filter)",
        _check_accept_guard,
    ),
    FastPath(
        "redis_sentinel_pool",
        "redis-py",
        "8.2",
        "SentinelConnectionPool combined with BlockingConnectionPool by inheritance",
        "RedisBackend on Sentinel: a bounded pool that waits for a free connection",
        _check_redis_sentinel_pool,
        required=True,
    ),
    FastPath(
        "redis_cluster_nodes",
        "redis-py",
        "8.2",
        "RedisCluster.nodes_manager.initialize()",
        "RedisBackend on a Cluster: the topology re-read before the feed reconnects",
        _check_redis_cluster_nodes,
        required=True,
    ),
    FastPath(
        "redis_pool_disconnect",
        "redis-py",
        "8.2",
        "ConnectionPool.disconnect(inuse_connections=False)",
        "RedisBackend: idle connections dropped after one died without a word",
        _check_redis_pool_disconnect,
        required=True,
    ),
)

_BY_NAME = {path.name: path for path in TABLE}
# Whether each fast path is on in this process (empty until configure() ran: the first
# question runs it, with every fast path asked for).
_on: dict[str, bool] = {}
_warned: set[str] = set()


def check_one(name: str) -> str | None:
    """The check of the fast path ``name``, run now: None (holds) or why not."""
    try:
        return _BY_NAME[name].check()
    except Exception as exc:  # a library that changed enough to break the check itself
        return f"check failed: {type(exc).__name__}: {exc}"


def check_all() -> dict[str, str | None]:
    """Every check's result, run now: None (holds) or why not. A check that raises fails."""
    return {path.name: check_one(path.name) for path in TABLE}


def configure(enabled: bool = True) -> dict[str, bool]:
    """Run the checks and decide which fast paths this process takes (at start-up): all off
    when ``enabled`` is False (``HUB_FAST_PATHS=off``); else each whose check holds (and
    those it needs). A failed check is logged once, as one warning line naming it."""
    global _compiled
    results = check_all() if enabled else {}
    for path in TABLE:
        why = results.get(path.name)
        if why is not None and path.name not in _warned:
            _warned.add(path.name)
            effect = "used as is" if path.required else "off, the plain path runs instead"
            log.warning("fast path check %s failed (%s): %s", path.name, why, effect)
    state = {
        path.name: enabled and results.get(path.name) is None for path in TABLE if not path.required
    }
    if enabled and os.environ.get("HUB_PURE_PYTHON"):
        state["compiled_loop"] = False  # asked for: no warning
    for name in state:
        state[name] = state[name] and all(state.get(n, True) for n in _BY_NAME[name].needs)
    if not state["compiled_loop"]:
        _compiled = None
    _on.update(state)
    return dict(_on)


def on(name: str) -> bool:
    """Whether the fast path ``name`` is on in this process."""
    if not _on:
        configure()
    return _on[name]


def status() -> dict[str, bool]:
    """Every fast path and whether it is on (``/v1/stats``, ``hub serve``'s log)."""
    if not _on:
        configure()
    return dict(_on)


def compiled_send_each() -> Callable[..., Any] | None:
    """The compiled send loop when its fast path is on (set up by its check), else None."""
    return _compiled if on("compiled_loop") else None


def summary() -> str:
    """One line: which fast paths are on."""
    status()
    on_ = [name for name, value in _on.items() if value]
    off = [name for name, value in _on.items() if not value]
    return f"fast paths on: {', '.join(on_) or 'none'}; off: {', '.join(off) or 'none'}"


def markdown_table() -> str:
    """The table for docs/performance.md (a test holds the two equal)."""
    rows = [
        "| Fast path | Library | Tested | Touches | What depends on it |",
        "|---|---|---|---|---|",
    ]
    for path in TABLE:
        name = f"`{path.name}`" + (" (required)" if path.required else "")
        rows.append(
            f"| {name} | {path.library} | {path.tested} | {path.touches} | {path.used_by} |"
        )
    return "\n".join(rows) + "\n"


def _main(argv: list[str]) -> int:
    """``python -m hub.fastpaths``: every check's result, one line each; exit 1 if one failed.
    ``--table``: the table of docs/performance.md instead."""
    if argv == ["--table"]:
        print(markdown_table(), end="")
        return 0
    print(f"Python {sys.version.split()[0]}")
    for dist in ("uvicorn", "websockets", "starlette", "redis", "hiredis", "uvloop", "orjson"):
        print(f"  {dist} {_version(dist) or '(not installed)'}")
    failed = 0
    for name, why in check_all().items():
        print(f"check {name}: {'ok' if why is None else 'FAILED: ' + why}")
        failed += why is not None
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
