"""The gateway: the HTTP API, and the listener that queues jobs when their inputs arrive.

gateway = Gateway(config, broker, storage)
await gateway.start()
uvicorn.Server(uvicorn.Config(gateway.app, ...)).serve()
"""

from __future__ import annotations

import asyncio
import logging

import aio_pika
import urllib3
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from schemas.config import Config
from services.common.broker import Broker
from services.common.problems import Problem, problem_handler
from services.common.storage import Storage
from services.gateway.fleet import Fleet
from services.gateway.intake import Intake
from services.gateway.jobs import JobRoutes
from services.gateway.openapi import build_openapi, docs_page
from services.gateway.uploads import UploadListener
from services.notifier.lookup import StatusLookup
from services.notifier.routes import routes as status_routes

log = logging.getLogger(__name__)


class Gateway:
    def __init__(self, config: Config, broker: Broker, storage: Storage) -> None:
        self.config = config
        self.broker = broker
        self.storage = storage
        self.intake = Intake(config, broker, storage)
        self.uploads = UploadListener(self.intake, config.storage.bucket)
        self.lookup = StatusLookup(broker, storage)
        self.fleet = Fleet(config, broker)
        self.openapi = build_openapi()
        jobs = JobRoutes(self.intake, self.lookup, storage, config.gateway.max_payload_bytes)
        self.app = Starlette(
            routes=[
                *jobs.routes(),
                *status_routes(self.lookup),
                Route("/status", self.status),
                Route("/health", self.health),
                Route("/metrics", self.metrics),
                Route("/openapi.json", self.openapi_json),
                Route("/docs", self.docs),
            ],
            exception_handlers={
                Problem: problem_handler,
                404: self._not_found,
                405: self._not_allowed,
                Exception: self._server_error,
            },
        )

    async def start(self) -> None:
        await self.lookup.start()
        await self.fleet.start()
        await self.uploads.start()

    async def stop(self) -> None:
        await self.uploads.stop()
        await self.fleet.stop()
        await self.lookup.stop()

    async def status(self, request: Request) -> JSONResponse:
        return JSONResponse(await self.fleet.report())

    async def health(self, request: Request) -> JSONResponse:
        checks = {"broker": await self._check_broker(), "storage": await self._check_storage()}
        healthy = all(c["ok"] for c in checks.values())
        return JSONResponse({"healthy": healthy, **checks}, status_code=200 if healthy else 503)

    async def _check_broker(self) -> dict:
        if self.broker.connection.is_closed:
            return {"ok": False, "error": "not connected to RabbitMQ"}
        return {"ok": True}

    async def _check_storage(self) -> dict:
        try:
            await asyncio.wait_for(self.storage.ping(), timeout=3)
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": True}

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(self, request: Request) -> JSONResponse:
        return JSONResponse(self.openapi)

    async def docs(self, request: Request) -> HTMLResponse:
        return HTMLResponse(docs_page(self.openapi))

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return Problem(404, f"no route {request.url.path}").response(request.url.path)

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return Problem(
            405,
            f"{request.method} is not allowed on {request.url.path}",
            title="Method not allowed",
        ).response(request.url.path)

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return Problem(
            503 if _is_outage(exc) else 500,
            f"{type(exc).__name__}: {exc}"
            if _is_outage(exc)
            else "internal error; see the gateway log",
            headers={"Retry-After": "5"} if _is_outage(exc) else None,
        ).response(request.url.path)


def _is_outage(exc: Exception) -> bool:
    """Broker or store unreachable: the client should retry, not report a bug."""
    return isinstance(
        exc,
        aio_pika.exceptions.AMQPError
        | urllib3.exceptions.HTTPError
        | ConnectionError
        | TimeoutError,
    )
