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
from typing import Protocol

import uvicorn
from prometheus_client import make_asgi_app

from schemas.broker_names import Names
from schemas.config import Config
from schemas.topology import Topology
from services.common.broker import Broker
from services.common.storage import Storage

log = logging.getLogger("shepherd")


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass(frozen=True)
class Roles:
    gateway: bool = False
    notifier: bool = False
    sheep: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        parts = [r for r in ("gateway", "notifier") if getattr(self, r)]
        return "+".join(parts + [f"sheep:{s}" for s in self.sheep])


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run(config: Config, roles: Roles, stop: asyncio.Event | None = None) -> None:
    """Run ``roles`` until ``stop`` is set or, without one, until SIGINT/SIGTERM. (Signal
    handlers need the main thread; a caller with its own ``stop`` may run on any.)"""
    from services.gateway.app import Gateway
    from services.notifier.gave_up import GaveUpListener
    from services.notifier.service import Notifier
    from services.notifier.webhooks import Webhooks
    from services.sheep.service import Sheep

    signals = () if stop else (signal.SIGINT, signal.SIGTERM)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)

    names = Names.for_config(config)
    broker = await Broker.connect(config.broker, names, f"shepherd-{roles.label}")
    await broker.declare(Topology.for_config(config))
    storage = Storage(config.storage)
    services: list[Service] = []
    server_task: asyncio.Task[None] | None = None
    server: _Server | None = None
    try:
        # Listeners before producers: the gateway hears the sheep's first announcements.
        if roles.notifier:
            services.append(Notifier(config, broker, storage))
            services.append(GaveUpListener(config, broker))
            services.append(Webhooks(config, broker, storage))
        gateway = Gateway(config, broker, storage) if roles.gateway else None
        if gateway:
            services.append(gateway)
        services.extend(Sheep(sheep_id, config, broker, storage) for sheep_id in roles.sheep)
        for service in services:
            await service.start()
        if gateway:
            server = _server(
                gateway.app,
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
    finally:
        log.info("shepherd stopping")
        if server and server_task:
            if gateway:
                await gateway.drain()  # or the server waits for live streams' clients to leave
            server.should_exit = True
            await asyncio.gather(server_task, return_exceptions=True)
        for service in reversed(services):
            try:
                await service.stop()
            except Exception:
                log.exception("stopping %s failed", type(service).__name__)
        await broker.close()
        for sig in signals:
            loop.remove_signal_handler(sig)


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
        section = config.sheep[roles.sheep[0]]
    else:
        return None
    if section.metrics_port is None:
        return None
    return section.metrics_host, section.metrics_port
