"""The files the hub serves as they are: the demo page and the browser client.

``/demo`` is a page with a workspace's sessions and live badges; ``/static/hub.js`` (an ES
module, built from js/ by scripts/build_static.py) and ``/static/hub.d.ts`` its types. Each is
read from the package once (``importlib.resources``) and kept.
"""

from __future__ import annotations

import functools
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.rest import error_response

__all__ = ["routes"]

_STATIC_TYPES = {
    "hub.js": "text/javascript; charset=utf-8",
    "hub.d.ts": "text/plain; charset=utf-8",
}


@functools.cache
def _static(name: str) -> bytes:
    return resources.files("hub").joinpath("static", name).read_bytes()


async def demo(request: Request) -> Response:
    """A page with a workspace's sessions and live badges (open it in two tabs)."""
    return Response(_static("demo.html"), media_type="text/html; charset=utf-8")


async def static(request: Request) -> Response:
    """The browser client: ``hub.js`` (an ES module) and its types, ``hub.d.ts``."""
    name = request.path_params["name"]
    if name not in _STATIC_TYPES:
        return error_response(404, "not_found", "no such file")
    return Response(_static(name), media_type=_STATIC_TYPES[name])


def routes() -> list[BaseRoute]:
    return [
        Route("/demo", demo, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
    ]
