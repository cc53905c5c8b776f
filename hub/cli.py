"""The ``hub`` command. ``main(argv)`` returns the exit status, so tests call it directly.

    hub serve [--host H] [--port P] [--database-url URL] [--create-grace S] ...

Every flag of ``serve`` is also read from its ``HUB_*`` environment variable; a flag wins. A bad
value ends the command with one line naming the setting and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from types import FrameType
from typing import Any

import uvicorn

from hub.errors import ConfigError
from hub.settings import SETTINGS_HELP, Settings
from hub.transport import MAX_HEAD_BYTES, HubWebSocketProtocol

__all__ = ["main", "uvicorn_config"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Presence hub: live viewer counts.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the hub (embedded defaults, no set-up)")
    for f in fields(Settings):
        env = "HUB_" + f.name.upper()
        serve.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=f.name.split("_")[-1].upper(),
            help=f"{SETTINGS_HELP[f.name]} (env {env}, default {f.default})",
        )
    return parser


def uvicorn_config(settings: Settings, app: Any = None, **overrides: Any) -> uvicorn.Config:
    """How the hub runs under uvicorn: uvicorn's ``websockets-sansio`` implementation (the one
    the direct send path is written for) with the hub's keepalive close code, permessage-deflate
    off, the hub's frame limit and keepalive. ``app`` defaults to ``create_app(settings)``;
    tests override ``port``, ``ws``..."""
    from hub.app import create_app

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": "h11",
        # A request head that arrives in pieces is refused past this (400); one that arrives
        # whole is bounded by the socket's read size, and on the WebSocket route by the
        # protocol's own 8 KiB check (hub.transport).
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "ws": HubWebSocketProtocol,
        "loop": settings.loop,
        "ws_ping_interval": settings.ping_interval or None,
        "ws_ping_timeout": settings.ping_timeout or None,
        "ws_per_message_deflate": False,
        "ws_max_size": settings.max_frame_bytes,
        "lifespan": "on",
        "log_level": settings.log_level,
    }
    return uvicorn.Config(app or create_app(settings), **{**options, **overrides})


def serve(settings: Settings) -> int:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    server = uvicorn.Server(uvicorn_config(settings))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the captured signal to the
    # handler that was there before it: these turn that into a clean exit instead of a
    # traceback (Ctrl-C) or a death by signal (SIGTERM from a service manager).
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        server.run()
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    # uvicorn leaves a failed start-up (port taken, lifespan error) with started False.
    return 0 if server.started else 1


class _Terminated(Exception):
    """SIGTERM arrived (uvicorn has already shut down gracefully when this is raised)."""


def _terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = Settings.from_env(env, **vars(args))
    except ConfigError as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)
