"""Shepherd as an operator runs it on one machine: the gateway, the notifier and sheep
``solo`` as separate processes, the notifier and the sheep serving ``/metrics`` on their own
``metrics_port``.

    async with metered_stack(config, tmp_path) as stack:
        ... POST to stack.gateway, scrape stack.gateway, stack.notifier, stack.sheep ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.broker_names import Names
from schemas.config import BareSheepConfig, Config
from tests.conftest import delete_namespace
from tests.support.processes import ServiceProcess, wait_healthy, write_config
from tests.support.stack import MODELS, free_port

SHEEP = "solo"


@dataclass(frozen=True)
class MeteredStack:
    """Base URLs: the gateway's (API and /metrics) and the two metrics endpoints."""

    gateway: str
    notifier: str
    sheep: str


@asynccontextmanager
async def metered_stack(
    config: Config, tmp_path: Path, **notifier: Any
) -> AsyncIterator[MeteredStack]:
    """The three processes on ``config``'s servers and namespace; ``notifier``: settings of
    the notifier section besides its metrics port (webhooks)."""
    ports = free_port(), free_port(), free_port()
    sheep = BareSheepConfig(
        port=free_port(),
        working_directory=MODELS,
        metrics_port=ports[2],
        stdout_file=tmp_path / "runner.out",
        stderr_file=tmp_path / "runner.err",
    )
    operated = config.model_copy(
        update={
            "gateway": config.gateway.model_copy(update={"port": ports[0]}),
            "notifier": config.notifier.model_copy(update={"metrics_port": ports[1], **notifier}),
            "sheep": {SHEEP: sheep},
        }
    )
    config_file = write_config(operated, tmp_path / "shepherd.yml")
    commands = [["gateway"], ["notifier"], ["sheep", SHEEP]]
    processes = [ServiceProcess(c, config_file, tmp_path / "logs") for c in commands]
    stack = MeteredStack(*(f"http://127.0.0.1:{port}" for port in ports))
    try:
        for process in processes:
            await process.start()
        await wait_healthy(stack.gateway)
        yield stack
    finally:
        for process in processes:
            await process.stop()
        names = Names.for_config(config)
        await delete_namespace(config.broker.url.get_secret_value(), names, [SHEEP])
