"""The gateway's own endpoints: fleet status, health, metrics, and the API's descriptions.

routes = [..., *Operations(config, broker, storage, fleet, openapi, asyncapi).routes()]
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemas.api import Check, FleetStatus, Health
from schemas.config import Config
from services.common.broker import Broker
from services.common.outages import describe
from services.common.storage import Storage
from services.gateway.api_docs import Answer, Doc, Docs, json_answer
from services.gateway.fleet import Fleet

STORAGE_CHECK_TIMEOUT = 3.0
"""Seconds GET /health waits for MinIO's answer."""

_DESCRIPTION = Answer("The document", media_type="application/json")
DOCS: Docs = {
    ("GET", "/status"): Doc(
        "Every sheep: alive, model, current job, queue depth",
        {200: Answer("Fleet status", FleetStatus)},
    ),
    ("GET", "/health"): Doc(
        "Whether the broker and the store are reachable",
        {200: Answer("Healthy", Health), 503: Answer("Something is down", Health)},
    ),
    ("GET", "/metrics"): Doc(
        "Prometheus metrics of this gateway process",
        {200: Answer("The text exposition format", media_type="text/plain")},
    ),
    ("GET", "/openapi.json"): Doc("This document (OpenAPI 3.1)", {200: _DESCRIPTION}),
    ("GET", "/asyncapi.json"): Doc(
        "The AMQP side of Shepherd (AsyncAPI 3.0): exchanges, queues, messages",
        {200: _DESCRIPTION},
    ),
}


class Operations:
    def __init__(
        self,
        config: Config,
        broker: Broker,
        storage: Storage,
        fleet: Fleet,
        openapi: dict[str, Any],
        asyncapi: dict[str, Any],
    ) -> None:
        self._config = config
        self._broker = broker
        self._storage = storage
        self._fleet = fleet
        self._openapi = openapi
        self._asyncapi = asyncapi

    def routes(self) -> list[Route]:
        return [
            Route("/status", self.status, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi_json, methods=["GET"]),
            Route("/asyncapi.json", self.asyncapi_json, methods=["GET"]),
        ]

    async def status(self, request: Request) -> JSONResponse:
        return json_answer(FleetStatus.model_validate(await self._fleet.report()))

    async def health(self, request: Request) -> JSONResponse:
        health = Health(
            healthy=False, broker=self._check_broker(), storage=await self._check_storage()
        )
        health.healthy = health.broker.ok and health.storage.ok
        return json_answer(health, 200 if health.healthy else 503)

    def _check_broker(self) -> Check:
        outage = self._broker.outage
        return Check(ok=False, error=outage) if outage else Check(ok=True)

    async def _check_storage(self) -> Check:
        where = f"MinIO at {self._config.storage.endpoint}"
        try:
            async with asyncio.timeout(STORAGE_CHECK_TIMEOUT):
                await self._storage.ping()
        except TimeoutError:
            error = f"{where} did not answer within {STORAGE_CHECK_TIMEOUT:g} s"
            return Check(ok=False, error=error)
        except Exception as exc:
            return Check(ok=False, error=f"{where}: {describe(exc)}")
        return Check(ok=True)

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(self, request: Request) -> JSONResponse:
        return JSONResponse(self._openapi)

    async def asyncapi_json(self, request: Request) -> JSONResponse:
        return JSONResponse(self._asyncapi)
