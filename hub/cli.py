"""The ``hub`` command. ``main(argv)`` returns the exit status, so tests call it directly.

    hub serve [--host H] [--port P] [--database-url URL] [--create-grace S] ...
    hub token --workspace ID [--client ID] [--admin] [--scope viewers] [--user U]
              [--profile JSON] [--ttl SECONDS]
    hub watch URL --workspace ID [--session S] [--json] [--count N] [--transport sse]
    hub sessions URL --workspace ID [--json]
    hub presence URL --workspace ID
    hub viewers URL --workspace ID --session S [--limit N] [--json]

Every flag of ``serve`` is also read from its ``HUB_*`` environment variable; a flag wins. A bad
value ends the command with one line naming the setting and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields
from types import FrameType
from typing import Any

import httpx
import orjson
import uvicorn

from hub import fastpaths
from hub.admission import default_pending_cap
from hub.auth import Auth
from hub.connection import send_loop
from hub.errors import ConfigError, HubError, InvalidClientId, InvalidProfile, InvalidUserId
from hub.logs import log_config
from hub.protocol import check_client_id, check_profile, check_user_id
from hub.settings import SETTINGS_HELP, Settings, parse_seconds
from hub.transport import (
    MAX_HEAD_BYTES,
    HubServer,
    HubWebSocketProtocol,
    http_protocol,
    listening_socket,
)

__all__ = ["main", "uvicorn_config"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Presence hub: live viewer counts.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the hub (embedded defaults, no set-up)")
    for f in fields(Settings):
        if f.name in ("auth_secret", "auth_check_secret", "webhook_secret"):
            continue  # a secret on a command line shows in `ps`: the environment only
        env = "HUB_" + f.name.upper()
        serve.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            metavar=f.name.split("_")[-1].upper(),
            help=f"{SETTINGS_HELP[f.name]} (env {env}, default {_shown_default(f.default)})",
        )
    for name, text in (
        ("watch", "show live counts of a workspace"),
        ("sessions", "list a workspace's sessions with their counts"),
        ("presence", "print a workspace's presence snapshot"),
        ("viewers", "list who views a session (needs the viewers scope with auth on)"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("url", help="the hub, e.g. http://127.0.0.1:8000")
        command.add_argument("--workspace", required=True, metavar="ID")
        command.add_argument("--token", help="access token (default: HUB_TOKEN)")
        command.add_argument("--json", action="store_true", help="JSON output")
        if name == "watch":
            command.add_argument("--session", help="follow this session only")
            command.add_argument("--count", type=int, help="stop after this many updates")
            command.add_argument(
                "--transport",
                choices=["websocket", "sse"],
                default="websocket",
                help="sse: the event stream, where a proxy breaks WebSockets",
            )
        if name == "viewers":
            command.add_argument(
                "--session", required=True, metavar="S", help='the session ("" for none)'
            )
            command.add_argument("--limit", type=int, help="at most this many (1..1000, 100)")
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
    token.add_argument(
        "--scope",
        action="append",
        default=[],
        choices=["viewers", "admin"],
        help="a scope to grant (repeat for more): viewers lists who views a session",
    )
    token.add_argument("--user", metavar="U", help="the user its sockets belong to")
    token.add_argument("--profile", metavar="JSON", help="the user's profile, a JSON object")
    token.add_argument("--ttl", default="3600", metavar="SECONDS", help="lifetime (3600)")
    token.add_argument("--secret", help="the secret (default: HUB_AUTH_SECRET)")
    return parser


def _shown_default(value: Any) -> Any:
    """A default as it is written: a switch's is on or off."""
    return ("on" if value else "off") if isinstance(value, bool) else value


def _client_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``hub watch|sessions|presence``: one clear line and exit 1 on any error."""
    try:
        return asyncio.run(_client_main(args, args.token or environ.get("HUB_TOKEN")))
    except KeyboardInterrupt:
        return 0
    except (HubError, httpx.HTTPError, OSError) as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return 1


async def _client_main(args: argparse.Namespace, token: str | None) -> int:
    from hub.client import HubClient

    async with HubClient(args.url, token=token) as hub:
        if args.command == "presence":
            print(orjson.dumps(await hub.presence(args.workspace)).decode())
        elif args.command == "sessions":
            _print_sessions(await hub.sessions(args.workspace), args.json)
        elif args.command == "viewers":
            found = await hub.viewers(args.workspace, args.session, args.limit)
            _print_viewers(found, args.json)
        else:
            await _watch(hub, args)
    return 0


def _print_sessions(sessions: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for session in sessions:
            print(orjson.dumps(session).decode())
        return
    print(f"{'SESSION':38} {'VIEWING':>7} {'BUSY':>4}  TITLE")
    for s in sessions:
        busy = "yes" if s["is_busy"] else ""
        print(f"{s['id'][:38]:38} {s['attached_clients']:>7} {busy:>4}  {s['title']}")


def _print_viewers(found: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(found).decode())
        return
    print(f"{found['total']} viewing ({found['anonymous']} anonymous), seq {found['seq']}")
    for v in found["viewers"]:
        name = (v["profile"] or {}).get("name", "")
        print(f"{v['user_id'][:40]:40} {v['clients']:>3} tab(s)  {name}")


async def _watch(hub: Any, args: argparse.Namespace) -> None:
    """Live counts: JSON lines when piped (or --json), else one refreshing line."""
    as_json = args.json or not sys.stdout.isatty()
    seen = 0
    async with hub.connect(args.workspace, transport=args.transport) as stream:
        async for update in stream:
            counts = update.counts
            if args.session is not None:
                counts = {args.session: counts.get(args.session, 0)}
            if as_json:
                line = {"seq": update.seq, "online": update.online, "counts": counts}
                print(orjson.dumps(line).decode(), flush=True)
            else:
                shown = "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "-"
                print(
                    f"\r\033[Kseq {update.seq}  online {update.online}  {shown}", end="", flush=True
                )
            seen += 1
            if args.count is not None and seen >= args.count:
                return


def _table(seq: int, online: int, counts: dict[str, int]) -> str:
    """The terminal view of ``hub watch``: the screen cleared, then one row per session."""
    rows = [f"workspace seq {seq}   online {online}", "", f"{'SESSION':40} {'VIEWING':>7}"]
    rows += [f"{sid[:40]:40} {n:>7}" for sid, n in sorted(counts.items())] or ["(nobody)"]
    return "\033[H\033[2J" + "\n".join(rows) + "\n"


def startup_warnings(settings: Settings) -> list[str]:
    """What ``hub serve`` should say before it starts."""
    warnings = []
    if not Auth.from_settings(settings).enabled and not _is_loopback(settings.host):
        warnings.append(
            f"listening on {settings.host} with no HUB_AUTH_SECRET, HUB_AUTH_JWKS_URL or "
            "HUB_AUTH_PUBLIC_KEY: anyone who can reach this "
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
    user = check_user_id(args.user) if args.user is not None else None
    profile = None
    if args.profile is not None:
        try:
            profile = check_profile(orjson.loads(args.profile))
        except orjson.JSONDecodeError:
            raise InvalidProfile("--profile: not valid JSON") from None
    token = Auth(settings.auth_secret).mint(
        args.workspace,
        client=client,
        admin=args.admin,
        scopes=args.scope,
        user=user,
        profile=profile,
        ttl=ttl,
    )
    print(token)
    return 0


def uvicorn_config(settings: Settings, app: Any = None, **overrides: Any) -> uvicorn.Config:
    """How the hub runs under uvicorn: uvicorn's ``websockets-sansio`` implementation (the one
    the direct send path is written for) with the hub's keepalive close code, permessage-deflate
    off, the hub's frame limit and keepalive, and the hub's HTTP protocol (connections that must
    finish: ``HUB_HANDSHAKE_TIMEOUT``, ``HUB_MAX_PENDING_CONNECTIONS``). ``app`` defaults to
    ``create_app(settings)``; tests override ``port``, ``ws``...

    The hub's protocol classes are fast paths (hub.fastpaths, checked here): with
    ``HUB_FAST_PATHS=off``, or where their check fails, uvicorn's own classes run."""
    from hub.app import create_app

    fastpaths.configure(settings.fast_paths)
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        # h11, with presence handshakes straight to "ws", and request heads bounded in time
        # and in number waiting (hub.admission)
        "http": http_protocol(
            settings.handshake_timeout,
            settings.max_pending_connections or default_pending_cap(),
        )
        if fastpaths.on("http_protocol")
        else "h11",
        # A request head that arrives in pieces is refused past this (400); one that arrives
        # whole is bounded by the socket's read size, and on the WebSocket route by the
        # protocol's own 8 KiB check (hub.transport).
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "ws": HubWebSocketProtocol if fastpaths.on("ws_protocol") else "websockets-sansio",
        "loop": settings.loop,
        "ws_ping_interval": settings.ping_interval or None,
        "ws_ping_timeout": settings.ping_timeout or None,
        "ws_per_message_deflate": False,
        "ws_max_size": settings.max_frame_bytes,
        "lifespan": "on",
        "interface": "asgi3",  # hub.app's __call__ returns its coroutine (not detectable)
        "log_level": settings.log_level,
    }
    return uvicorn.Config(app or create_app(settings), **{**options, **overrides})


# The garbage collector's thresholds in ``hub serve``: the hub's objects are freed by reference
# counting, the collector only finds cycles, and with Python's defaults a connect storm spends
# much of its CPU in collections of a growing heap; a large young generation scans a storm's
# survivors fewer times (the figures: docs/performance.md, "Knobs").
GC_THRESHOLDS = (50_000, 50, 1_000)


def serve(settings: Settings) -> int:
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()  # what start-up made lives as long as the process: never scanned again
    config = uvicorn_config(
        settings, log_config=log_config(settings.log_level, settings.log_format)
    )
    for warning in startup_warnings(settings):
        logging.getLogger("hub").warning(warning)
    logging.getLogger("hub").info(
        "%s (HUB_FAST_PATHS); fan-out send loop: %s", fastpaths.summary(), send_loop()
    )
    server = HubServer(config)  # out of descriptors: one log line per interval
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the captured signal to the
    # handler that was there before it: these turn that into a clean exit instead of a
    # traceback (Ctrl-C) or a death by signal (SIGTERM from a service manager).
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        server.run(sockets=[listening_socket(config)])
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
    if args.command in ("watch", "sessions", "presence", "viewers"):
        return _client_command(args, env)
    try:
        if args.command == "token":
            return mint(args, env)
        settings = Settings.from_env(env, **vars(args))
    except (ConfigError, InvalidClientId, InvalidUserId, InvalidProfile) as exc:
        print(f"hub: error: {exc}", file=sys.stderr)
        return 2
    return serve(settings)
