"""Operations: /metrics, /v1/health and /v1/ready, JSON log lines."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.harness import HubProcess, ServerThread, Viewer, eventually, new_client_id, no_sockets

MakeServer = Callable[..., ServerThread]


def metric(text: str, name: str, labels: str = "") -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_metrics_show_sockets_claims_frames_and_fanout(make_server: MakeServer) -> None:
    server = make_server(rate_limit=2, rate_burst=2)
    async with httpx.AsyncClient(base_url=server.url) as http:
        w = (await http.post("/v1/workspaces", json={"path": "/metrics"})).json()["id"]
        await http.post("/v1/workspaces", json={"path": "/metrics", "client_id": new_client_id()})
        a, b = new_client_id(), new_client_id()
        va = await Viewer.open(server.ws_url(w, a), a)
        vb = await Viewer.open(server.ws_url(w, b), b)
        await va.send({"type": "set_session", "session_id": "S1", "ref": 1})
        await va.expect("ack")
        await vb.until(lambda v: v.counts == {"S1": 1})
        await va.send("not json")
        await va.send({"type": "ping"})  # over the rate of 2: rate_limited
        await va.expect("error")
        await va.expect("error")
        response = await http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        text = response.text
        names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
        assert names and all(n.startswith("hub_") for n in names), names
        assert metric(text, "hub_sockets_open") == 2
        assert metric(text, "hub_claims", '{state="attached"}') == 2
        assert metric(text, "hub_claims", '{state="held"}') == 1
        assert metric(text, "hub_frames_in_total", '{type="set_session"}') == 1
        assert metric(text, "hub_frames_in_total", '{type="invalid"}') == 1
        assert metric(text, "hub_frames_in_total", '{type="rate_limited"}') == 1
        assert metric(text, "hub_frames_out_total", '{type="snapshot"}') == 2
        assert metric(text, "hub_frames_out_total", '{type="ack"}') == 1
        assert metric(text, "hub_frames_out_total", '{type="counts"}') >= 2
        assert metric(text, "hub_fanout_seconds_count") >= 1
        for v in (va, vb):
            await v.close()


def test_a_tally_is_exposed_as_a_counter_is() -> None:
    """Frames in and out are plain ints (hub.metrics.Tally): the same exposition as a
    prometheus_client Counter with the same label values and increments, its ``_created``
    samples included (their values are times and differ)."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    from hub.metrics import Tally

    def exposed(registry: CollectorRegistry) -> list[str]:
        return [
            line.rsplit(" ", 1)[0] if "_created{" in line else line
            for line in generate_latest(registry).decode().splitlines()
        ]

    by_counter, by_tally = CollectorRegistry(), CollectorRegistry()
    counter = Counter("hub_x", "frames, by type", ["type"], registry=by_counter)
    tally = Tally("hub_x", "frames, by type", "type", by_tally)
    counts = tally.track(["a", "b", "c"])
    for value, n in (("a", 1), ("b", 5), ("c", 0)):
        counter.labels(value).inc(n)
        counts[value] += n
    assert exposed(by_tally) == exposed(by_counter)
    assert metric(generate_latest(by_tally).decode(), "hub_x_total", '{type="b"}') == 5
    assert tally.track(["a", "d"]) is counts and counts == {"a": 1, "b": 5, "c": 0, "d": 0}


async def test_health_reports_dependencies_and_ready_follows_them(make_server: MakeServer) -> None:
    server = make_server()
    async with httpx.AsyncClient(base_url=server.url) as http:
        health = await http.get("/v1/health")
        assert (health.status_code, health.json()) == (
            200,
            {"status": "ok", "store": "ok", "backend": "ok"},
        )
        assert (await http.get("/v1/ready")).json() == {
            "ready": True,
            "store": "ok",
            "backend": "ok",
        }
        # The store goes away: still alive (200), but not ready (503).
        store = server.services.store
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(store.close(), server.loop))  # type: ignore[arg-type]
        health = await http.get("/v1/health")
        assert health.status_code == 200 and health.json()["store"].startswith("error")
        ready = await http.get("/v1/ready")
        assert ready.status_code == 503 and ready.json()["ready"] is False
        # A route that needs it answers 500 internal_error (no traceback to the peer), counted.
        # (A fresh connection: uvicorn closes a kept-alive one after an application error.)
        async with httpx.AsyncClient(base_url=server.url) as fresh:
            failed = await fresh.get("/v1/workspaces")
        assert failed.status_code == 500 and failed.json()["error"] == "internal_error"
        async with httpx.AsyncClient(base_url=server.url) as fresh:
            assert "hub_backend_errors_total 1.0" in (await fresh.get("/metrics")).text
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(store.open(), server.loop))  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=server.url) as fresh:
            assert (await fresh.get("/v1/ready")).status_code == 200


async def test_json_log_lines_carry_the_connection_id(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub.db", HUB_LOG_FORMAT="json", HUB_LOG_LEVEL="info")
    try:
        async with httpx.AsyncClient(base_url=hub.url) as http:
            w = (await http.post("/v1/workspaces", json={"path": "/json"})).json()["id"]
        client = new_client_id()
        v = await Viewer.open(
            f"ws://127.0.0.1:{hub.port}/v1/workspaces/{w}/ws?client_id={client}", client
        )
        await v.close()
        await eventually(lambda: no_sockets(hub, None))  # its "left" line is out
    finally:
        log = hub.stop()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    joined = [line for line in lines if " joined " in line["message"]]
    assert len(joined) == 1 and joined[0]["conn"].startswith("c")
    left = [line for line in lines if line["message"].endswith(" left")]
    assert [line["conn"] for line in left] == [joined[0]["conn"]]


def test_the_start_up_log_names_the_backends_without_passwords() -> None:
    from hub.app import _shown

    assert _shown("postgresql://hub:s3cret@db:5432/hub") == "postgresql://hub:***@db:5432/hub"
    assert _shown("redis://:pw@redis:6379/0") == "redis://:***@redis:6379/0"
    assert _shown("sqlite:///hub.db") == "sqlite:///hub.db"
