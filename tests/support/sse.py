"""Reading server-sent events in tests, as a browser's EventSource would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    event: str | None
    id: str | None
    data: str

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def offset(self) -> int:
        assert self.id is not None, self
        return int(self.id)


@dataclass
class Comments:
    """How many comment lines (keep-alives) a stream sent."""

    count: int = 0


async def read_events(
    response: httpx.Response, comments: Comments | None = None
) -> AsyncIterator[Event]:
    """The events of a ``text/event-stream`` response, until it ends."""
    assert response.headers["content-type"].startswith("text/event-stream"), response.headers
    fields: dict[str, str] = {}
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield Event(fields.get("event"), fields.get("id"), "\n".join(data))
            fields, data = {}, []
        elif line.startswith(":"):
            if comments is not None:
                comments.count += 1
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            else:
                fields[name] = value
