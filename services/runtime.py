"""Running services in one process: connect, declare, start, wait for a signal, stop.

``shepherd up`` runs the gateway, the notifier and every configured sheep on one event loop;
``shepherd gateway|notifier|sheep ID`` run one of them. Shutdown stops in reverse order of
start, so nothing consumes from a connection that is already gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import uvicorn
from prometheus_client import make_asgi_app

from schemas.broker_names import Names
from schemas.config import Config
from schemas.topology import Topology
from services.common.broker import Broker
from services.common.outages import OUTAGES, backoff, describe
from services.common.storage import Storage
from services.sheep.membership import Membership

if TYPE_CHECKING:
    from services.gateway.app import Gateway

log = logging.getLogger("shepherd")


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Roles:
    gateway: bool = False
    notifier: bool = False
    sheep: list[str | Membership] = field(default_factory=list)
    """Named sheep by id, and sheep of a class by membership (``Membership.joining``)."""

    @property
    def label(self) -> str:
        parts = [r for r in ("gateway", "notifier") if getattr(self, r)]
        ids = [s if isinstance(s, str) else s.sheep_id for s in self.sheep]
        return "+".join(parts + [f"sheep:{s}" for s in ids])


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run(config: Config, roles: Roles, stop: asyncio.Event | None = None) -> None:
    """Run ``roles`` until ``stop`` is set or, without one, until SIGINT/SIGTERM. (Signal
    handlers need the main thread; a caller with its own ``stop`` may run on any.)

    A service started while RabbitMQ is down, or that loses it before it is up, waits for it
    rather than exiting: a gateway restarted during a broker outage serves once it is back."""
    signals = () if stop else (signal.SIGINT, signal.SIGTERM)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        started = await _until_started(config, roles, stop)
        if started is not None:
            await started.serve(config, roles, stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _until_started(config: Config, roles: Roles, stop: asyncio.Event) -> _Started | None:
    """The services started, retried through broker outages; None if ``stop`` came first."""
    stopping = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        for delay in backoff():
            starting = asyncio.create_task(_start(config, roles), name="start")
            await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                return None
            try:
                return starting.result()
            except OUTAGES as exc:
                log.warning(
                    "starting %s: RabbitMQ or MinIO unreachable (%s); trying again in %.1f s",
                    roles.label,
                    describe(exc),
                    delay,
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
        raise AssertionError("backoff() never ends")
    finally:
        stopping.cancel()


async def _start(config: Config, roles: Roles) -> _Started:
    """Connect, declare the topology and start every service of ``roles``; on failure, stop
    what had started."""
    from services.gateway.app import Gateway
    from services.notifier.gave_up import GaveUpListener
    from services.notifier.service import Notifier
    from services.notifier.webhooks import Webhooks
    from services.sheep.service import Sheep

    names = Names.for_config(config)
    broker = await Broker.connect(config.broker, names, f"shepherd-{roles.label}")
    started = _Started(broker)
    try:
        await broker.declare(Topology.for_config(config))
        storage = Storage(config.storage)
        services: list[Service] = []
        # Listeners before producers: the gateway hears the sheep's first announcements.
        if roles.notifier:
            services.append(Notifier(config, broker, storage))
            services.append(GaveUpListener(config, broker))
            services.append(Webhooks(config, broker, storage))
        if roles.gateway:
            started.gateway = Gateway(config, broker, storage)
            services.append(started.gateway)
        services.extend(Sheep(sheep, config, broker, storage) for sheep in roles.sheep)
        for service in services:
            await service.start()
            started.services.append(service)
    except BaseException:
        await started.stop()
        raise
    return started


@dataclass
class _Started:
    """The broker connection and the services started on it, in order of start."""

    broker: Broker
    services: list[Service] = field(default_factory=list)
    gateway: Gateway | None = None

    async def serve(self, config: Config, roles: Roles, stop: asyncio.Event) -> None:
        """Serve HTTP (the gateway, or ``/metrics``) until ``stop``, then stop everything."""
        server_task: asyncio.Task[None] | None = None
        server: _Server | None = None
        try:
            if self.gateway:
                server = _server(
                    self.gateway.app,
                    config.gateway.host,
                    config.gateway.port,
                    timeout_keep_alive=config.gateway.keep_alive_timeout,
                )
            elif (endpoint := _metrics_endpoint(config, roles)) is not None:
                server = _server(make_asgi_app(), *endpoint)
            if server:
                server_task = asyncio.create_task(server.serve(), name="http")
            log.info("shepherd running: %s", roles.label)
            waiters = [asyncio.create_task(stop.wait(), name="stop-signal")]
            if server_task:
                waiters.append(server_task)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        finally:
            log.info("shepherd stopping")
            if server and server_task:
                if self.gateway:
                    await self.gateway.drain()  # or the server waits for live streams' clients
                server.should_exit = True
                await asyncio.gather(server_task, return_exceptions=True)
            await self.stop()

    async def stop(self) -> None:
        """Stop the services in reverse order of start, then close the connection."""
        for service in reversed(self.services):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)
        await self.broker.close()


def _server(app: object, host: str, port: int, **options: object) -> _Server:
    return _Server(
        uvicorn.Config(
            app, host=host, port=port, log_config=None, lifespan="off", access_log=False, **options
        )
    )


def _metrics_endpoint(config: Config, roles: Roles) -> tuple[str, int] | None:
    """Where a process without a gateway serves ``/metrics``: the notifier's endpoint, else
    its one sheep's; None if that has no ``metrics_port``."""
    if roles.notifier:
        section = config.notifier
    elif len(roles.sheep) == 1:
        (sheep,) = roles.sheep
        section = config.sheep[sheep] if isinstance(sheep, str) else sheep.section
    else:
        return None
    if section.metrics_port is None:
        return None
    return section.metrics_host, section.metrics_port
