"""Answering with a stored object as it is read from the store, never whole in memory.

return await stored_file(storage, outputs_prefix(job_id) + "output.json")
"""

from __future__ import annotations

from collections.abc import Iterator

from starlette.responses import StreamingResponse

from services.common.problems import Problem
from services.common.storage import ObjectMissing, Storage

#: Bytes read from the store at a time.
CHUNK = 256 * 1024


async def stored_file(
    storage: Storage, key: str, media_type: str | None = None
) -> StreamingResponse:
    """The object at ``key``, as stored (its own content type unless ``media_type``); a 404
    naming the file when there is none."""
    try:
        info = await storage.stat(key)
        body = await storage.open_stream(key)
    except ObjectMissing:
        raise Problem(404, f"no file {key.split('/', 2)[-1]!r} for this job") from None

    def chunks() -> Iterator[bytes]:  # iterated in a worker thread by Starlette
        try:
            yield from body.stream(CHUNK)
        finally:
            body.close()
            body.release_conn()

    return StreamingResponse(
        chunks(),
        media_type=media_type or info.content_type or "application/octet-stream",
        headers={"Content-Length": str(info.size)},
    )
