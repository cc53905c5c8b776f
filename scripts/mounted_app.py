"""The hub mounted in a FastAPI app of its own, as a user runs it: ``uvicorn mounted_app:app``
(plain uvicorn, its own protocol classes), the hub at ``/presence``, its settings from the
environment (scripts/bench.py's server ``mounted`` sets ``HUB_FAST_PATHS=off``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI

from hub import Settings, create_app

presence = create_app(Settings.from_env(os.environ))


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with presence.router.lifespan_context(presence):  # the one documented line
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def home() -> dict[str, str]:
    return {"app": "a FastAPI app of its own"}


app.mount("/presence", presence)
