"""HTTP requests counted and timed by route template (``/jobs/{job_id}``, never a job id),
method and status: an ASGI middleware around the whole app.

    app = HttpMetrics(Starlette(routes=...))

A request no route matched counts under ``route="unmatched"``. The time is until the response
has been sent (a live stream counts once it ends).
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Match
from starlette.types import Message, Receive, Scope, Send

from services.common.job_metrics import LATENCY_BUCKETS
from services.common.metrics import child

REQUESTS = Counter(
    "shepherd_http_requests",
    "HTTP requests answered, by route template, method and status code.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "shepherd_http_request_duration_seconds",
    "How long HTTP requests took, until the response was sent, by route template.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
#: The route label of requests no route matched (bounded, unlike their paths).
UNMATCHED = "unmatched"
#: Method labels; a client's other methods count as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


class HttpMetrics:
    def __init__(self, app: Starlette) -> None:
        self.app = app

    @property
    def routes(self) -> list[BaseRoute]:
        """The routes of the app it measures."""
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = self._template(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            child(REQUESTS, route, method, str(status)).inc()
            child(REQUEST_SECONDS, route, method).observe(time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        """The path template of the route that answered: the one Starlette's router put in
        the scope (1.x), else found as the router finds it (a full match, else the first
        partial one: a method not allowed)."""
        if (route := scope.get("route")) is not None:
            return getattr(route, "path", UNMATCHED)
        partial = UNMATCHED
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", UNMATCHED)
            if match is Match.PARTIAL and partial == UNMATCHED:
                partial = getattr(route, "path", UNMATCHED)
        return partial
