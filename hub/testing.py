"""Testing with a real hub: a threaded server, and the pytest plugin built on it.

The plugin (registered under the ``pytest11`` entry point ``hub``) gives tests of your own UI
or service these fixtures:

    hub_server   a real hub on a free port: in-memory presence, SQLite in memory, short grace
                 timers (1 s); one per test session. With ``--hub-url URL``, an external hub.
    hub_url      its base URL, ``http://127.0.0.1:PORT``
    hub_ws_url   its WebSocket base URL, ``ws://127.0.0.1:PORT``
    hub_client   a factory of :class:`~hub.client.HubClient` (each with its own client id;
                 ``hub_client(user_id="ana")`` acts as a given user, ``token=`` carries a
                 token), closed after the test; needs pytest-asyncio

Example (with pytest-asyncio in auto mode):

    async def test_two_viewers(hub_client):
        alice, bob = hub_client(), hub_client()
        ws = await alice.create_workspace("/doc")
        async with alice.connect(ws["id"]) as a, bob.connect(ws["id"]) as b:
            await a.set_session("S1")
            await b.set_session("S1")
            assert (await alice.presence(ws["id"]))["counts"] == {"S1": 2}
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Self

import pytest
import uvicorn

from hub.app import Services, create_app
from hub.cli import uvicorn_config
from hub.client import HubClient
from hub.settings import Settings
from hub.transport import listening_socket

__all__ = ["ThreadedHub"]

TEST_SETTINGS: dict[str, Any] = {
    "database_url": "sqlite:///:memory:",
    "create_grace": 1.0,
    "detach_grace": 1.0,
    "retire_ttl": 5.0,
}


class ThreadedServer:
    """Any ASGI app under uvicorn (``config``) on its own event loop in a thread: a real
    server on a real port, for tests (an app of yours that mounts the hub, say)."""

    def __init__(self, config: uvicorn.Config) -> None:
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _listen(self) -> socket.socket:
        return self.server.config.bind_socket()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve(sockets=[self._listen()])

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ThreadedHub(ThreadedServer):
    """A real hub (uvicorn, as ``hub serve`` runs it) on its own event loop in a thread."""

    def __init__(self, settings: Settings | None = None, **uvicorn_overrides: Any) -> None:
        settings = settings or Settings.from_env({}, **TEST_SETTINGS)
        self.app = create_app(settings)
        self.services: Services = self.app.state.services
        overrides: dict[str, Any] = {"port": settings.port, "log_level": "warning"}
        super().__init__(uvicorn_config(settings, self.app, **{**overrides, **uvicorn_overrides}))

    def _listen(self) -> socket.socket:
        return listening_socket(self.server.config)


# -- the pytest plugin ------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hub-url", default=None, help="run the hub fixtures against this hub instead"
    )


@pytest.fixture(scope="session")
def hub_url(request: pytest.FixtureRequest) -> Iterator[str]:
    external: str | None = request.config.getoption("--hub-url")
    if external:
        yield external.rstrip("/")
        return
    hub = ThreadedHub(Settings.from_env({}, **TEST_SETTINGS, port=0)).start()
    try:
        yield hub.url
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def hub_server(hub_url: str) -> str:
    """The hub under test (its URL; the same as ``hub_url``)."""
    return hub_url


@pytest.fixture(scope="session")
def hub_ws_url(hub_url: str) -> str:
    return hub_url.replace("http", "ws", 1)


try:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def hub_client(hub_url: str) -> AsyncIterator[Callable[..., HubClient]]:
        clients: list[HubClient] = []

        def make(**options: Any) -> HubClient:
            client = HubClient(hub_url, **options)
            clients.append(client)
            return client

        yield make
        for client in clients:
            await client.aclose()

except ImportError:  # pragma: no cover - without pytest-asyncio the fixture says so

    @pytest.fixture
    def hub_client() -> Any:
        pytest.fail("the hub_client fixture needs pytest-asyncio (pip install pytest-asyncio)")
