"""A whole Shepherd (gateway, notifier, sheep) on one event loop, served over real HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from schemas.config import BareSheepConfig, Config
from services.runtime import Roles, run
from tests.support.polling import eventually

MODELS = Path(__file__).parents[2] / "examples" / "models"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def healthy(client: httpx.AsyncClient) -> bool:
    """Whether the gateway behind ``client`` answers ``GET /health`` with 200."""
    try:
        return (await client.get("/health")).status_code == 200
    except httpx.TransportError:
        return False


def bare_sheep(**overrides: object) -> BareSheepConfig:
    settings: dict[str, object] = {
        "port": free_port(),
        "working_directory": MODELS,
        "heartbeat_interval": 0.5,
        "heartbeat_timeout": 5.0,
        "load_timeout": 60.0,
    }
    return BareSheepConfig(**{**settings, **overrides})


@asynccontextmanager
async def running_stack(config: Config) -> AsyncIterator[httpx.AsyncClient]:
    """Start everything, wait until the gateway answers healthy, stop it all afterwards."""
    config.gateway.port = free_port()
    stop = asyncio.Event()
    roles = Roles(gateway=True, notifier=True, sheep=list(config.sheep))
    task = asyncio.create_task(run(config, roles, stop))
    base = f"http://127.0.0.1:{config.gateway.port}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        try:

            async def up() -> bool:
                if task.done():
                    task.result()  # raises what stopped it
                return await healthy(client)

            await eventually(up, within=10)
            yield client
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
