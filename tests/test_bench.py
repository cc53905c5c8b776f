"""``scripts/bench.py --quick`` as a smoke test (its 50 changes at 100/s: ``QUICK``): it runs
against every server (the hub, the ``websockets`` baseline and the Node ``ws`` peer) and nothing
is lost.

Timings are never asserted here (they belong to the benchmark's report); only that every
figure was measured and that no frame was lost or reordered.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# --quick's 50 changes sent at the full benchmark's default rate (100/s) instead of its own 50/s:
# the same frames and figures, the fan-out phase 0.5 s instead of 2 s in each server's run.
QUICK = ["--quick", "--seconds", "0.5", "--rate", "100"]


def test_quick_benchmark_measures_everything_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench.py"), *QUICK, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hub/base" in proc.stdout  # the ratio table was printed
    results = json.loads(out.read_text())
    servers = sorted(r["server"] for r in results)
    if "node" not in servers:  # the Node ws peer needs node and npm
        assert "the Node ws peer is left out" in proc.stdout
        if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
            pytest.fail(f"the Node ws peer is required here: {proc.stdout[:500]}")
    assert servers == ["baseline", "hub", "node"][: len(servers)]
    assert "hub/node" in proc.stdout or "node" not in servers
    for r in results:
        assert r["notes"] == [], r  # e.g. no traceback in the server's log
        assert (r["lost"], r["out_of_order"]) == (0, 0), r
        if r["server"] == "hub":  # every socket was told the final online after the storm
            assert r["wrong_views"] == 0 and r["settled_s"] >= r["connect_s"] > 0, r
        assert r["changes"] == int(r["rate"] * r["seconds"])
        assert r["delivered"] > 0
        for key in ("cpu_per_frame_us", "frames_per_s", "latency_p99_ms",
                    "cpu_per_set_session_us", "cpu_per_lone_set_session_us"):  # fmt: skip
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r)


def test_quick_benchmark_of_the_event_stream_loses_nothing(tmp_path: Path) -> None:
    """``--transport sse``: the hub's viewers on WebSockets and on the event stream, side by
    side in one run."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench.py"), *QUICK, "--transport", "sse",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hub/sse" in proc.stdout
    results = {r["server"]: r for r in json.loads(out.read_text())}
    assert sorted(results) == ["hub", "sse"]
    for r in results.values():
        assert r["notes"] == [] and (r["lost"], r["out_of_order"]) == (0, 0), r
        assert r["wrong_views"] == 0 and r["delivered"] > 0, r
        assert math.isfinite(r["cpu_per_frame_us"]) and r["idle_bytes_per_conn"] > 0, r


def test_nodes_benchmark_measures_the_cross_node_path(tmp_path: Path) -> None:
    out = tmp_path / "nodes.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench.py"), "--nodes", "2", "--n", "40",
         "--seconds", "0.5", "--rate", "40", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert [r["setup"] for r in results] == ["1 node (memory)", "1 node (redis)", "2 nodes (redis)"]
    for r in results:
        assert (r["lost"], r["out_of_order"]) == (0, 0), r
        assert r["delivered"] > 0 and r["changes"] == 20, r
    assert results[2]["latency_cross_p99_ms"] > 0  # viewers on node 1 were measured


def test_repeated_rounds_give_medians_and_the_ratio_round_by_round(tmp_path: Path) -> None:
    """``--repeat 2``: each server runs twice (alternated), the table holds medians and a line
    gives the CPU-per-frame ratio of both rounds; nothing lost in any round."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/bench.py"),
            *QUICK,
            "--repeat",
            "2",
            "--servers",
            "hub",
            "uvloop",
            "--json",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    assert sorted(r["server"] for r in results) == ["hub", "hub", "uvloop", "uvloop"]
    assert all(r["lost"] == 0 and r["out_of_order"] == 0 for r in results)
    line = next(x for x in proc.stdout.splitlines() if "round by round" in x)
    hub = [r["cpu_per_frame_us"] for r in results if r["server"] == "hub"]
    uv = [r["cpu_per_frame_us"] for r in results if r["server"] == "uvloop"]
    ratios = [f"{h / u:.2f}x" for h, u in zip(hub, uv, strict=True)]
    assert ratios == line.split(": ")[1].split()[:2]
    cpu_row = next(x for x in proc.stdout.splitlines() if x.startswith("server CPU per delivered"))
    assert f"{(hub[0] + hub[1]) / 2:.2f}" in cpu_row  # the median of two: their mean
