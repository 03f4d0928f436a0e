"""The gateway: the HTTP API, and the listener that queues jobs when their inputs arrive.

gateway = Gateway(config, broker, storage)
await gateway.start()
uvicorn.Server(uvicorn.Config(gateway.app, ...)).serve()
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from schemas.asyncapi import build_asyncapi
from schemas.config import Config
from services.common.broker import Broker
from services.common.history import EventHistory
from services.common.lookup import StatusLookup
from services.common.outages import BROKER_OUTAGES, OUTAGES, STORAGE_OUTAGES, describe
from services.common.problems import Problem, problem_handler
from services.common.storage import Storage, UnreadableRecord
from services.gateway.auth import bearer_auth
from services.gateway.cancel import CancelRoutes
from services.gateway.dashboard import dashboard_routes
from services.gateway.docs import docs_routes
from services.gateway.fleet import Fleet
from services.gateway.http_metrics import HttpMetrics
from services.gateway.indexer import Indexer
from services.gateway.intake import Intake
from services.gateway.job_index import JobIndex
from services.gateway.jobs import JobRoutes
from services.gateway.listing import ListingRoutes
from services.gateway.log_follow import LogFollower
from services.gateway.logs import LogRoutes
from services.gateway.openapi import build_openapi
from services.gateway.operations import Operations
from services.gateway.readiness import routes as status_routes
from services.gateway.streams import StreamRoutes
from services.gateway.submissions import SubmissionListener
from services.gateway.uploads import UploadListener
from services.gateway.webhook_attempts import WebhookAttemptRoutes

log = logging.getLogger(__name__)

RETRY_AFTER = 5
"""Seconds a client is asked to wait before retrying during an outage (503 Retry-After)."""


class Gateway:
    def __init__(self, config: Config, broker: Broker, storage: Storage) -> None:
        self.config = config
        self.broker = broker
        self.storage = storage
        self.fleet = Fleet(config, broker)
        self.lookup = StatusLookup(
            storage,
            EventHistory(config.broker, broker.names, reader="lookups"),
            broker.names.namespace,
            on_event=self.fleet.saw,
        )
        self.intake = Intake(config, broker, storage, queued_elsewhere=self.lookup.queued)
        self.uploads = UploadListener(self.intake, config.storage.bucket)
        self.submissions = SubmissionListener(self.intake, config.gateway.max_payload_bytes)
        self.history = EventHistory(config.broker, broker.names)
        self.index = JobIndex(config.job_index_path())
        self.indexer = Indexer(
            self.index, EventHistory(config.broker, broker.names, reader="job-index")
        )
        self.log_follower = LogFollower(config.broker, broker.names, self.lookup)
        self.openapi = build_openapi()
        self.asyncapi = build_asyncapi(broker.names, _broker_host(config))
        jobs = JobRoutes(
            self.intake,
            self.lookup,
            storage,
            config.gateway.max_payload_bytes,
            config.gateway.max_upload_bytes,
        )
        self.app = HttpMetrics(
            Starlette(
                routes=[
                    *jobs.routes(),
                    *CancelRoutes(self.lookup, storage, broker).routes(),
                    *status_routes(self.lookup),
                    *StreamRoutes(self.history, self.lookup).routes(),
                    *LogRoutes(self.lookup, storage, self.log_follower).routes(),
                    *ListingRoutes(self.index).routes(),
                    *WebhookAttemptRoutes(self.lookup, storage).routes(),
                    *Operations(
                        config, broker, storage, self.fleet, self.openapi, self.asyncapi
                    ).routes(),
                    *docs_routes(self.openapi),
                    *dashboard_routes(),
                ],
                exception_handlers={
                    Problem: problem_handler,
                    UnreadableRecord: self._unreadable,
                    404: self._not_found,
                    405: self._not_allowed,
                    **dict.fromkeys(OUTAGES, self._unavailable),
                    Exception: self._server_error,
                },
                middleware=bearer_auth(config.gateway),
            )
        )

    async def start(self) -> None:
        await self.index.open()
        await self.indexer.start()
        await self.lookup.start()
        await self.fleet.start()
        await self.uploads.start()
        await self.submissions.start()

    async def drain(self) -> None:
        """End the live event streams, which would otherwise hold the HTTP server's graceful
        shutdown open for as long as their clients stay (clients resume elsewhere with
        Last-Event-ID); new ones are refused with 503 from now on."""
        await self.history.close()
        await self.log_follower.close()

    async def stop(self) -> None:
        await self.history.close()
        await self.log_follower.close()
        await self.submissions.stop()
        await self.uploads.stop()
        await self.fleet.stop()
        await self.lookup.stop()
        await self.indexer.stop()
        await self.index.close()

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return Problem(404, f"no route {request.url.path}").response(request.url.path)

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        return Problem(
            405,
            f"{request.method} is not allowed on {request.url.path}",
            title="Method not allowed",
            # The router's Allow header, which RFC 9110 requires on a 405.
            headers=exc.headers if isinstance(exc, HTTPException) else None,
        ).response(request.url.path)

    async def _unavailable(self, request: Request, exc: Exception) -> Response:
        """503 naming what is down, and when to try again."""
        if isinstance(exc, BROKER_OUTAGES):
            what = "RabbitMQ"
        elif isinstance(exc, STORAGE_OUTAGES):
            what = f"MinIO at {self.config.storage.endpoint}"
        else:
            what = "RabbitMQ or MinIO"
        detail = f"{what} is unavailable ({describe(exc)}); retry in {RETRY_AFTER} s"
        log.warning("%s %s: %s", request.method, request.url.path, detail)
        return Problem(503, detail, headers={"Retry-After": str(RETRY_AFTER)}).response(
            request.url.path
        )

    async def _unreadable(self, request: Request, exc: Exception) -> Response:
        """A damaged record of the job: the job cannot be answered for (logged already)."""
        assert isinstance(exc, UnreadableRecord)
        detail = f"the job cannot be read: {exc}"
        problem = Problem(409, detail, title="Unreadable record", object=exc.key)
        return problem.response(request.url.path)

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return Problem(500, "internal error; see the gateway log").response(request.url.path)


def _broker_host(config: Config) -> str:
    """``host:port`` of the broker, for the AsyncAPI document: never its credentials."""
    return urlsplit(config.broker.url.get_secret_value()).netloc.rpartition("@")[2]
