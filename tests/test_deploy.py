"""The deployment files: docker-compose.yml and the nginx config validated by the real tools
(there is no Docker engine here), and scripts/cluster started for real: Redis, two hub
processes and nginx, driven through nginx with real WebSocket clients."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Viewer, free_port, new_client_id
from tests.services import Database, missing

ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> str:
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )
    if found is None:
        missing(name)
    assert found is not None
    return found


def test_the_compose_file_is_valid() -> None:
    compose = tool("docker-compose")
    result = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config", "-q"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = subprocess.run(
        [compose, "-f", "docker-compose.yml", "config", "--services"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert sorted(services) == ["hub1", "hub2", "nginx", "postgres", "redis"]


def test_the_nginx_config_is_valid(tmp_path: Path) -> None:
    nginx = tool("nginx")
    rendered = subprocess.run(
        [sys.executable, "scripts/cluster.py", "--print-nginx-config", "--port", "8000"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "${" not in rendered and "proxy_read_timeout 3600s" in rendered
    conf = tmp_path / "nginx.conf"
    conf.write_text(rendered)
    result = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_dockerfile_is_slim_non_root_and_checks_health() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "\nUSER hub\n" in text and "useradd --system" in text
    assert "HEALTHCHECK" in text and "/v1/ready" in text
    assert '".[redis,postgres]"' in text
    assert "setup.py" in text and 'python -c "import hub._fanout"' in text  # built, compiled


@pytest.fixture
def cluster_script() -> Iterator[tuple[subprocess.Popen[str], str]]:
    tool("nginx")
    tool("redis-server")
    database = Database()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "scripts/cluster.py", "--port", str(port),
         "--database-url", database.url, "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    try:
        assert line.startswith("ready "), line
        yield proc, f"127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        proc.stdout.close()
        database.drop()


async def test_scripts_cluster_serves_through_nginx(
    cluster_script: tuple[subprocess.Popen[str], str],
) -> None:
    proc, address = cluster_script
    async with httpx.AsyncClient(base_url=f"http://{address}", timeout=5) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/via-nginx"})).json()["id"]
        viewers = []
        for _ in range(4):  # round robin: sockets on both nodes
            client = new_client_id()
            url = f"ws://{address}/v1/workspaces/{w}/ws?client_id={client}"
            viewers.append(await Viewer.open(url, client))
        for v in viewers[:3]:
            await v.send({"type": "set_session", "session_id": "S1"})
        for v in viewers:
            await v.until(lambda v: v.counts == {"S1": 3} and v.online == 4)
        answers = [(await http.get(f"/v1/workspaces/{w}/presence")).json() for _ in range(4)]
        assert all(a["counts"] == {"S1": 3} for a in answers)
        for v in viewers:
            await v.close()
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert time.monotonic() - started < 30
