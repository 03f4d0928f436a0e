"""The routes of the real gateway app, so that tests covering "every route" cover new ones."""

from __future__ import annotations

from starlette.routing import Route

from schemas.config import Config
from services.common.broker import Broker
from services.common.storage import Storage
from services.gateway.app import Gateway


def gateway_routes(config: Config, broker: Broker) -> list[tuple[str, str]]:
    """``(method, path template)`` of every route, HEAD left out (it follows GET)."""
    app = Gateway(config, broker, Storage(config.storage)).app
    return sorted(
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    )
