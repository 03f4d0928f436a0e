"""Asynchronous access to the object store.

minio-py is blocking, so every call runs in a worker thread; the event loop never waits on
the network. Keys are always built from validated job ids (``schemas.names``).
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from schemas.config import StorageConfig
from schemas.nodes import storage_nodes
from services.common.metrics import STORAGE_OUTAGE_CALLS
from services.common.node_failover import NodeFailover
from services.common.outages import STORAGE_OUTAGES

T = TypeVar("T")

_MISSING = {"NoSuchKey", "NoSuchObject", "NoSuchBucket"}
PART_SIZE = 5 * 1024 * 1024  # S3's smallest part
"""Streams longer than this become multipart uploads, sent one part after another: a stream
costs about two parts of memory, whatever its length (the benchmark measures it)."""


DOWNLOAD_CHUNK = 1024 * 1024


class ObjectMissing(LookupError):
    """The key does not exist."""


class UnreadableRecord(ValueError):
    """A record Shepherd keeps in the store (``job.json``, ``status.json``) is not one: damaged,
    or written by someone else."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} is unreadable: {problem}")
        self.key = key


@dataclass
class StoredObject:
    key: str
    size: int
    content_type: str | None
    etag: str | None = None
    last_modified: datetime | None = None


class Storage:
    def __init__(self, config: StorageConfig) -> None:
        self.bucket = config.bucket
        nodes = storage_nodes(config.endpoint)
        self.client = Minio(
            nodes[0],
            access_key=config.access_key.get_secret_value(),
            secret_key=config.secret_key.get_secret_value(),
            secure=config.secure,
            region=config.region,
            http_client=NodeFailover(
                nodes,
                maxsize=32,
                timeout=urllib3.Timeout(connect=5, read=60),
                retries=urllib3.Retry(
                    total=3,
                    # With several nodes, the next one rather than the same again.
                    connect=0 if len(nodes) > 1 else None,
                    backoff_factor=0.2,
                    status_forcelist=[500, 502, 503, 504],
                ),
            ),
        )

    async def _threaded(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``call(*args, **kwargs)`` off the event loop (the MinIO client blocks); a failure
        that is an outage of the store is counted in ``shepherd_storage_outages_total``, by
        cause."""
        try:
            return await asyncio.to_thread(call, *args, **kwargs)
        except STORAGE_OUTAGES as exc:
            STORAGE_OUTAGE_CALLS.labels(cause=_cause(exc)).inc()
            raise

    async def ping(self) -> None:
        """Raises if the store or the bucket cannot be reached."""
        if not await self._threaded(self.client.bucket_exists, self.bucket):
            raise ObjectMissing(f"bucket {self.bucket} does not exist")

    async def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        await self._threaded(
            self.client.put_object,
            self.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
        )

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], content_type: str, part_size: int = PART_SIZE
    ) -> int:
        """Write ``chunks`` to ``key`` as they arrive; returns the size written.

        If ``chunks`` raises, its exception propagates and nothing is written: a single PUT
        is never sent, a multipart upload is aborted.
        """
        reader = _LoopReader(chunks, asyncio.get_running_loop())
        await self._threaded(
            self.client.put_object,
            self.bucket,
            key,
            reader,
            -1,
            content_type=content_type,
            part_size=part_size,
            # minio-py queues parts for its upload threads without bound: a client faster
            # than the store would fill memory. One part at a time keeps memory flat.
            num_parallel_uploads=1,
        )
        return reader.size

    async def create_bytes(self, key: str, data: bytes, content_type: str) -> bool:
        """Write only if the key does not exist yet (S3 ``If-None-Match: *``).

        Returns False when another writer got there first. minio-py has no public parameter
        for conditional headers, so this goes through its PutObject primitive.
        """

        def create() -> bool:
            try:
                self.client._put_object(
                    self.bucket,
                    key,
                    data,
                    headers={"If-None-Match": "*", "Content-Type": content_type},
                )
            except S3Error as exc:
                if exc.code in {"PreconditionFailed", "ConditionalRequestConflict"}:
                    return False
                raise
            return True

        return await self._threaded(create)

    async def remove(self, key: str) -> None:
        await self._threaded(self.client.remove_object, self.bucket, key)

    async def get_bytes(self, key: str, offset: int = 0, length: int = 0) -> bytes:
        """The object's bytes; ``length`` of them from ``offset`` when it is not 0."""

        def get() -> bytes:
            try:
                response = self.client.get_object(self.bucket, key, offset, length)
            except S3Error as exc:
                if exc.code in _MISSING:
                    raise ObjectMissing(key) from exc
                raise
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return await self._threaded(get)

    async def stat(self, key: str) -> StoredObject:
        def stat() -> StoredObject:
            try:
                info = self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING:
                    raise ObjectMissing(key) from exc
                raise
            return StoredObject(key, info.size or 0, info.content_type, info.etag)

        return await self._threaded(stat)

    async def list(self, prefix: str) -> list[StoredObject]:
        """Every object under ``prefix`` (recursive), keys relative to the bucket."""

        def listing() -> list[StoredObject]:
            return [
                StoredObject(o.object_name, o.size or 0, None, o.etag, o.last_modified)
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name and not o.is_dir
            ]

        return await self._threaded(listing)

    async def download_prefix(self, prefix: str, target: Path) -> list[Path]:
        """Stream every object under ``prefix`` into ``target``, keeping relative paths."""
        return await self.download(await self.list(prefix), prefix, target)

    async def download(self, objects: list[StoredObject], prefix: str, target: Path) -> list[Path]:
        """Stream ``objects``, all under ``prefix``, into ``target``, keeping relative paths."""
        destinations = []
        for obj in objects:
            relative = PurePosixPath(obj.key.removeprefix(prefix))
            if not obj.key.startswith(prefix) or relative.is_absolute() or ".." in relative.parts:
                raise ValueError(f"object key {obj.key!r} escapes {target}")
            destinations.append(target / relative)
        for obj, destination in zip(objects, destinations, strict=True):
            await self._threaded(self._fetch, obj.key, destination)
        return destinations

    def _fetch(self, key: str, destination: Path) -> None:
        """One GET streamed to a file (minio-py's fget_object asks for a stat first)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        response = self.client.get_object(self.bucket, key)
        try:
            with destination.open("wb") as file:
                for chunk in response.stream(DOWNLOAD_CHUNK):
                    file.write(chunk)
        finally:
            response.close()
            response.release_conn()

    async def upload_tree(self, source: Path, prefix: str) -> int:
        """Stream every file below ``source`` to ``prefix``; returns the bytes written."""
        written = 0
        for path in _files(source):
            key = prefix + path.relative_to(source).as_posix()
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            await self._threaded(
                self.client.fput_object, self.bucket, key, str(path), content_type=content_type
            )
            written += path.stat().st_size
        return written

    async def open_stream(self, key: str):
        """A streaming response; the caller reads it in chunks and must close it."""

        def open_() -> object:
            try:
                return self.client.get_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING:
                    raise ObjectMissing(key) from exc
                raise

        return await self._threaded(open_)


class _LoopReader:
    """A blocking ``read()`` for minio-py's worker thread, fed by an async iterator that runs
    on the event loop. A read returns as much as asked for (short only at the end), so that
    minio-py assembles a part from one read instead of re-copying it chunk by chunk."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._chunks = chunks
        self._loop = loop
        self._buffer = bytearray()
        self._ended = False
        self.size = 0

    async def _fill(self, wanted: int) -> None:
        while len(self._buffer) < wanted:
            chunk = await anext(self._chunks, None)
            if chunk is None:
                self._ended = True
                return
            self._buffer += chunk
            self.size += len(chunk)

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = 1 << 62
        if len(self._buffer) < size and not self._ended:
            asyncio.run_coroutine_threadsafe(self._fill(size), self._loop).result()
        with memoryview(self._buffer) as view:
            data = bytes(view[:size])  # the one copy a part costs
        del self._buffer[:size]
        return data


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def _cause(exc: Exception) -> str:
    """An outage's cause as a bounded label: the S3 error code where the store gave one."""
    if isinstance(exc, S3Error):
        return exc.code or "server-error"
    return "server-error" if isinstance(exc, MinioException) else "unreachable"
