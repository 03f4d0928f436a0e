"""The gateway keeps an idle client connection open for ``gateway.keep_alive_timeout``, so that
a client pool reusing it within that time is never answered by a connection the server has
just closed (the benchmark lost submissions to that race with uvicorn's 5 s default)."""

from __future__ import annotations

import asyncio

from tests.conftest import serving

KEEP_ALIVE = 1.0
"""Seconds; uvicorn's own default is 5, so each idle period below tells them apart."""
REQUEST = b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n"


async def answered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether a request on this connection gets an answer (False: the server closed it)."""
    writer.write(REQUEST)
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    if not status:
        return False
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return status.startswith(b"HTTP/1.1 200")


async def test_an_idle_connection_lasts_the_keep_alive_timeout(config, names):
    config.gateway.keep_alive_timeout = KEEP_ALIVE
    async with serving(config, names):
        reader, writer = await asyncio.open_connection("127.0.0.1", config.gateway.port)
        try:
            assert await answered(reader, writer)
            await asyncio.sleep(KEEP_ALIVE / 2)  # idle, but within the timeout
            assert await answered(reader, writer)
            await asyncio.sleep(KEEP_ALIVE * 2)  # idle past it: the server has let go
            assert await asyncio.wait_for(reader.read(), KEEP_ALIVE) == b""
        finally:
            writer.close()
