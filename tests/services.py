"""Real Redis and PostgreSQL for the tests.

A test that needs a service it cannot find skips on a user's machine and fails in CI, where
``.ci/run`` sets ``HUB_REQUIRE_SERVICES=1``. Redis servers are spawned by the tests on free
ports (so that a test may kill and restart its own); PostgreSQL is the machine's server
(``HUB_TEST_POSTGRES``, default ``postgresql://postgres@127.0.0.1:5432/test``), where every test
gets a database of its own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port
from tests.timing import T

POSTGRES = os.environ.get("HUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def missing(what: str) -> None:
    """Skip for lack of ``what``, or fail when the run requires every service."""
    if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required here (HUB_REQUIRE_SERVICES=1)")
    pytest.skip(f"{what} is not available")


class RedisServer:
    """A ``redis-server`` of a test's own, on a free port, without persistence: a restart
    comes back empty, like a Redis that lost its data."""

    def __init__(self, *extra: str) -> None:
        """``extra``: more redis-server arguments (``--replicaof HOST PORT``, ...)."""
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            missing("redis-server")
        self.port = free_port()
        self.extra = list(extra)
        # Its own folder: a replica writes the master's snapshot to disk on a full sync, and
        # must not write it into the checkout it was started from.
        self.folder = tempfile.mkdtemp(prefix="hub-redis-")
        weakref.finalize(self, shutil.rmtree, self.folder, ignore_errors=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.folder, *self.extra],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10 * T
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        return self

    def answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """``kill -9``: gone at once, with everything it held."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10 * T)
            self.proc = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def flush(self) -> None:
        import redis

        client = redis.Redis(port=self.port)
        client.flushall()
        client.close()


class RedisClusterSet:
    """A Redis Cluster of three masters, each a redis-server in its own folder on a free port
    (its cluster bus is the port + 10000); with ``replicas``, that many replicas per master,
    which a failover promotes (after ``node_timeout`` ms without an answer from their
    master)."""

    def __init__(self, tmp: Path, replicas: int = 0, node_timeout: int = 15000) -> None:
        binary = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if binary is None or cli is None:
            missing("redis-server and redis-cli")
        assert binary is not None and cli is not None
        self.binary = binary
        self.tmp = tmp
        self.replicas = replicas
        self.node_timeout = node_timeout
        self.ports: list[int] = []  # every node's, the masters' first (as redis-cli makes them)
        while len(self.ports) < 3 * (1 + replicas):
            port = free_port()
            if port + 10000 < 65536 and port not in self.ports and _bindable(port + 10000):
                self.ports.append(port)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        for port in self.ports:
            (tmp / f"cluster-{port}").mkdir()
            self._spawn(port)
        try:
            self._form(cli)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, port: int) -> None:
        self.procs[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1",
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(self.node_timeout),
             "--repl-diskless-sync-delay", "0",  # a replica's sync at once (as SentinelSet)
             "--save", "", "--appendonly", "no", "--dir", str(self.tmp / f"cluster-{port}")],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def _form(self, cli: str) -> None:
        for port in self.ports:
            _wait_for_redis(port)
        addresses = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
             "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 20 * T
        while self.state() != "ok" or not self._replicas_synced():
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up")
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def state(self, port: int | None = None) -> str:
        """``cluster_state`` as a node (the first, by default) sees it (``ok`` once every
        slot is served)."""
        import redis

        client = redis.Redis(port=port or self.ports[0], socket_timeout=0.5, decode_responses=True)
        try:
            return str(client.cluster("info").get("cluster_state", ""))
        except redis.RedisError:
            return ""
        finally:
            client.close()

    def masters(self, port: int | None = None) -> dict[int, list[int]]:
        """Master port -> its replicas' ports, as a live node (``port``, else any) sees the
        cluster now (masters flagged as failed left out)."""
        import redis

        for asked in [port] if port else [p for p in self.ports if self.procs.get(p)]:
            client = redis.Redis(port=asked, socket_timeout=0.5, decode_responses=True)
            try:
                nodes = client.cluster("nodes")
            except redis.RedisError:
                continue
            finally:
                client.close()
            return _masters_of(nodes)
        return {}

    def serving(self, key: str, port: int) -> int:
        """The port of the master serving ``key``'s slot, as the node on ``port`` sees it."""
        import redis
        from redis.crc import key_slot

        client = redis.Redis(port=port, socket_timeout=0.5, decode_responses=True)
        try:
            nodes = client.cluster("nodes")
        finally:
            client.close()
        slot = key_slot(key.encode())
        for address, info in nodes.items():
            flags = info["flags"].split(",")
            if "master" not in flags or "fail" in flags:
                continue
            for first, *last in info["slots"]:
                if int(first) <= slot <= int((last or [first])[0]):
                    return int(address.rpartition(":")[2])
        raise AssertionError(f"slot {slot} is not served")

    def _replicas_synced(self) -> bool:
        import redis

        masters = self.masters()
        if sum(len(r) for r in masters.values()) < 3 * self.replicas:
            return False
        for replicas in masters.values():
            for port in replicas:
                client = redis.Redis(port=port, socket_timeout=0.5)
                try:
                    if client.info("replication").get("master_link_status") != "up":
                        return False
                except redis.RedisError:
                    return False
                finally:
                    client.close()
        return True

    def kill(self, port: int) -> None:
        """``kill -9`` of one node."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(timeout=10 * T)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10 * T)
        self.procs.clear()


def _masters_of(nodes: dict[str, dict[str, Any]]) -> dict[int, list[int]]:
    """Master port -> replica ports, from a ``CLUSTER NODES`` reply as redis-py parses it
    (address -> fields); failed masters are left out, and so are their replicas."""
    port_of = {info["node_id"]: int(address.rpartition(":")[2]) for address, info in nodes.items()}
    masters: dict[int, list[int]] = {}
    for info in nodes.values():
        flags = info["flags"].split(",")
        if "master" in flags and "fail" not in flags:
            masters[port_of[info["node_id"]]] = []
    for info in nodes.values():
        flags = info["flags"].split(",")
        master = port_of.get(info["master_id"])
        if "slave" in flags and "fail" not in flags and master in masters:
            masters[master].append(port_of[info["node_id"]])
    return masters


def _bindable(port: int) -> bool:
    """Whether ``port`` is free now (a cluster node's bus port must be, or it does not start)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_redis(port: int) -> None:
    deadline = time.monotonic() + 10 * T
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on {port} did not start")
        time.sleep(0.02)


class SentinelSet:
    """A master, a replica of it, and one ``redis-sentinel`` (the same Debian binary, run with
    ``--sentinel``) watching them with short timeouts: a dead master is replaced in seconds."""

    MASTER = "mymaster"

    def __init__(self, tmp: Path) -> None:
        # A master starts a replica's full sync at once, not after Redis's default 5 s wait for
        # more replicas to share it (repl-diskless-sync-delay): here and, after a failover, on
        # the promoted replica when the old master comes back as its replica.
        at_once = ("--repl-diskless-sync-delay", "0")
        self.master = RedisServer(*at_once)
        self.replica = RedisServer(*at_once, "--replicaof", "127.0.0.1", str(self.master.port))
        self.port = free_port()
        conf = tmp / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {tmp}\n"
            f"sentinel monitor {self.MASTER} 127.0.0.1 {self.master.port} 1\n"
            f"sentinel down-after-milliseconds {self.MASTER} 2000\n"  # 1 s flapped under load
            f"sentinel failover-timeout {self.MASTER} 3000\n"
        )
        assert self.master.binary is not None
        self.proc = subprocess.Popen(
            [self.master.binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10 * T
        while self.master_port() != self.master.port or not self._replica_synced():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the sentinel set did not come up")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.MASTER}/0"

    def master_port(self) -> int | None:
        """The master's port as the sentinel names it now."""
        import redis

        try:
            client = redis.Redis(port=self.port, socket_timeout=0.5)
            try:
                found = client.sentinel_get_master_addr_by_name(self.MASTER)
            finally:
                client.close()
        except redis.RedisError:
            return None
        return int(found[1]) if isinstance(found, tuple) else None

    def promoted(self) -> bool:
        """Whether the sentinel names the replica as the master now (after a failover)."""
        return self.master_port() == self.replica.port

    def _replica_synced(self) -> bool:
        import redis

        client = redis.Redis(port=self.replica.port, socket_timeout=0.5)
        try:
            info = client.info("replication")
        except redis.RedisError:
            return False
        finally:
            client.close()
        return bool(info.get("master_link_status") == "up")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10 * T)
        self.master.kill()
        self.replica.kill()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh database on the machine's PostgreSQL for one test; dropped after it."""
    database = await asyncio.to_thread(Database)
    try:
        yield database.url
    finally:
        await asyncio.to_thread(database.drop)


class Database:
    """A fresh database on the machine's PostgreSQL (sync: for session fixtures too)."""

    def __init__(self) -> None:
        self.name = f"hub_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._admin(f'CREATE DATABASE "{self.name}"'))
        self.url = f"{POSTGRES.rpartition('/')[0]}/{self.name}"

    def drop(self) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    @staticmethod
    async def _admin(statement: str) -> None:
        try:
            import asyncpg
        except ImportError:
            missing("asyncpg")
        try:
            admin = await asyncpg.connect(POSTGRES, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            missing(f"PostgreSQL at {POSTGRES} ({exc})")
        try:
            await admin.execute(statement)
        finally:
            await admin.close()
