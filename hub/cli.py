"""The ``hub`` command. ``main(argv)`` returns the exit status, so tests call it directly.

    hub serve [--host H] [--port P] [--database-url URL] [--create-grace S] ...
    hub token --workspace ID [--client ID] [--admin] [--ttl SECONDS]

Every flag of ``serve`` is also read from its ``HUB_*`` environment variable; a flag wins. A bad
value ends the command with one line naming the setting and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from types import FrameType
from typing import Any

import uvicorn

from hub.auth import Auth
from hub.errors import ConfigError, InvalidClientId
from hub.logs import log_config
from hub.protocol import check_client_id
from hub.settings import SETTINGS_HELP, Settings, parse_seconds
from hub.transport import MAX_HEAD_BYTES, HubWebSocketProtocol

__all__ = ["main", "uvicorn_config"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Presence hub: live viewer counts.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the hub (embedded defaults, no set-up)")
    for f in fields(Settings):
        if f.name == "auth_secret":
            continue  # a secret on a command line shows in `ps`: the environment only
        env = "HUB_" + f.name.upper()
        serve.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=f.name.split("_")[-1].upper(),
            help=f"{SETTINGS_HELP[f.name]} (env {env}, default {f.default})",
        )
    token = commands.add_parser("token", help="mint an access token (needs HUB_AUTH_SECRET)")
    token.add_argument(
        "--workspace",
        action="append",
        required=True,
        metavar="ID",
        help='a workspace id the token grants (repeat for more; "*" for all)',
    )
    token.add_argument("--client", metavar="ID", help="the only client id it may act as")
    token.add_argument("--admin", action="store_true", help="allow the operator routes")
    token.add_argument("--ttl", default="3600", metavar="SECONDS", help="lifetime (3600)")
    token.add_argument("--secret", help="the secret (default: HUB_AUTH_SECRET)")
    return parser


def startup_warnings(settings: Settings) -> list[str]:
    """What ``hub serve`` should say before it starts."""
    warnings = []
    if settings.auth_secret is None and not _is_loopback(settings.host):
        warnings.append(
            f"listening on {settings.host} with no HUB_AUTH_SECRET: anyone who can reach this "
            "port can read and change presence and sessions (see docs/security.md)"
        )
    return warnings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mint(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = Settings.from_env(environ, auth_secret=args.secret)
    if settings.auth_secret is None:
        raise ConfigError("HUB_AUTH_SECRET: not set (or pass --secret)")
    client = check_client_id(args.client) if args.client is not None else None
    ttl = parse_seconds("--ttl", args.ttl)
    print(Auth(settings.auth_secret).mint(args.workspace, client=client, admin=args.admin, ttl=ttl))
    return 0


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
    config = uvicorn_config(
        settings, log_config=log_config(settings.log_level, settings.log_format)
    )
    for warning in startup_warnings(settings):
        logging.getLogger("hub").warning(warning)
    server = uvicorn.Server(config)
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
        if args.command == "token":
            return mint(args, env)
        settings = Settings.from_env(env, **vars(args))
    except (ConfigError, InvalidClientId) as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)
