"""Start the scale-out topology from local binaries: Redis, N hub processes, nginx in front.

The same shape as docker-compose.yml, for demos and tests on a machine without Docker:

    redis-server (spawned on --redis-port, or --redis-url to use a running one)
    hub serve x --nodes, each on a free port, HUB_REDIS_URL and HUB_DATABASE_URL shared
    nginx (Debian's) on --port, from deploy/nginx.conf.template

Sessions go to --database-url (default: $HUB_DATABASE_URL, else the local PostgreSQL at
postgresql://postgres@127.0.0.1:5432/test when it answers, else a SQLite file shared by the
nodes). Prints one line ``ready http://127.0.0.1:PORT`` when every part answers; Ctrl-C or
SIGTERM stops every part. ``--print-nginx-config`` prints the rendered nginx config and exits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from string import Template

from bench import free_port  # scripts/ is on sys.path: these run as scripts

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "nginx.conf.template"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def nginx_config(upstreams: list[str], port: int) -> str:
    """The template with the hub addresses filled in (nginx's own $variables are kept)."""
    text = TEMPLATE.read_text()
    servers = "".join(f"        server {u} max_fails=1 fail_timeout=2s;\n" for u in upstreams)
    # The template names two upstreams (as compose runs two); any number works here.
    lines = [ln for ln in text.splitlines(keepends=True) if "${HUB_UPSTREAM_2}" not in ln]
    text = "".join(lines).replace(
        "        server ${HUB_UPSTREAM_1} max_fails=1 fail_timeout=2s;\n", servers
    )
    return Template(text).safe_substitute(LISTEN_PORT=str(port))


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wait_for(url: str, procs: list[subprocess.Popen[bytes]], what: str) -> None:
    deadline = time.monotonic() + 20
    while not answers(url):
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"{what} exited with {p.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer at {url}")
        time.sleep(0.1)


def database_url(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("HUB_DATABASE_URL"):
        return os.environ["HUB_DATABASE_URL"]
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return LOCAL_POSTGRES
    except OSError:
        print("no PostgreSQL on 127.0.0.1:5432: sessions in ./cluster.db", file=sys.stderr)
        return f"sqlite:///{Path('cluster.db').resolve()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="nginx port (default 8000)")
    parser.add_argument("--nodes", type=int, default=2, help="hub processes (default 2)")
    parser.add_argument("--redis-url", help="use this Redis instead of spawning one")
    parser.add_argument("--redis-port", type=int, default=0, help="port of the spawned Redis")
    parser.add_argument("--database-url", help="sessions store shared by the nodes")
    parser.add_argument("--print-nginx-config", action="store_true")
    args, hub_args = parser.parse_known_args(argv)
    hub_ports = [free_port() for _ in range(args.nodes)]
    config = nginx_config([f"127.0.0.1:{p}" for p in hub_ports], args.port)
    if args.print_nginx_config:
        print(config)
        return 0
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit("nginx is not installed (apt-get install nginx-light)")
    procs: list[subprocess.Popen[bytes]] = []
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with tempfile.TemporaryDirectory(prefix="hub-cluster-") as tmp:
        try:
            redis_url = args.redis_url
            if redis_url is None:
                redis_port = args.redis_port or free_port()
                procs.append(subprocess.Popen(
                    ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no"],
                    stdout=subprocess.DEVNULL,
                ))  # fmt: skip
                redis_url = f"redis://127.0.0.1:{redis_port}/0"
            env = {
                **os.environ,
                "HUB_REDIS_URL": redis_url,
                "HUB_DATABASE_URL": database_url(args.database_url),
            }
            env.setdefault(
                "HUB_ALLOWED_ORIGINS", f"http://127.0.0.1:{args.port},http://localhost:{args.port}"
            )
            hubs = [
                subprocess.Popen(
                    [sys.executable, "-m", "hub", "serve", "--port", str(p), *hub_args],
                    env=env,
                    stdout=sys.stderr,  # stdout carries only the "ready" line
                )
                for p in hub_ports
            ]
            procs += hubs
            for p in hub_ports:
                wait_for(f"http://127.0.0.1:{p}/v1/ready", procs, f"hub on port {p}")
            conf = Path(tmp) / "nginx.conf"
            conf.write_text(config)
            procs.append(subprocess.Popen(
                [nginx, "-p", tmp, "-c", str(conf), "-g", "daemon off;"]
            ))  # fmt: skip
            url = f"http://127.0.0.1:{args.port}"
            wait_for(f"{url}/v1/ready", procs, "nginx")
            print(f"ready {url}  (nodes on ports {', '.join(map(str, hub_ports))}; "
                  f"redis {redis_url})", flush=True)  # fmt: skip
            while not stop and all(p.poll() is None for p in procs):
                time.sleep(0.2)
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in reversed(procs):
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
    failed = [p.args for p in procs if p.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stop else 0


if __name__ == "__main__":
    sys.exit(main())
