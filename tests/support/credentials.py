"""A RabbitMQ user and a MinIO user of a test's own, with passwords distinctive enough to
search every log line and stored byte for.

The shared servers' own credentials (guest, minioadmin) are also the user names and appear
legitimately in masked URLs, so a test looking for leaked secrets needs its own. Both users
are added through the servers' admin APIs (RabbitMQ management, MinIO admin) and removed
afterwards; nothing else on the shared servers changes.

    async with own_credentials(servers) as creds:
        config.broker.url = SecretStr(creds.amqp_url)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx
from minio.credentials import StaticProvider
from minio.minioadmin import MinioAdmin

from tests.support.requirements import missing
from tests.support.servers import Servers

MANAGEMENT_PORT = 15672


@dataclass(frozen=True)
class Credentials:
    amqp_url: str
    amqp_password: str
    s3_access_key: str
    s3_secret_key: str


@asynccontextmanager
async def own_credentials(servers: Servers) -> AsyncIterator[Credentials]:
    tag = uuid.uuid4().hex[:12]
    amqp = urlsplit(servers.amqp_url)
    user, password = f"shepherd-test-{tag}", f"amqp-pw-{uuid.uuid4().hex}"
    vhost = quote(amqp.path.lstrip("/") or "/", safe="")
    management = httpx.AsyncClient(
        base_url=f"http://{amqp.hostname}:{MANAGEMENT_PORT}/api",
        auth=(amqp.username or "guest", amqp.password or "guest"),
        timeout=10,
    )
    admin = MinioAdmin(
        endpoint=servers.s3_endpoint,
        credentials=StaticProvider(servers.s3_access_key, servers.s3_secret_key),
        secure=servers.s3_secure,
    )
    access_key, secret_key = f"shepherd-s3-{tag}", f"s3-secret-{uuid.uuid4().hex}"
    async with management:
        try:
            created = await management.put(
                f"/users/{user}", json={"password": password, "tags": ""}
            )
        except httpx.TransportError as exc:
            missing(f"RabbitMQ's management API is not reachable to add a user: {exc}")
        created.raise_for_status()
        try:
            permissions = {"configure": ".*", "write": ".*", "read": ".*"}
            granted = await management.put(f"/permissions/{vhost}/{user}", json=permissions)
            granted.raise_for_status()
            await asyncio.to_thread(admin.user_add, access_key, secret_key)
            try:
                await asyncio.to_thread(admin.attach_policy, ["readwrite"], access_key)
                port = amqp.port or 5672
                yield Credentials(
                    amqp_url=f"amqp://{user}:{password}@{amqp.hostname}:{port}{amqp.path or '/'}",
                    amqp_password=password,
                    s3_access_key=access_key,
                    s3_secret_key=secret_key,
                )
            finally:
                await asyncio.to_thread(admin.user_remove, access_key)
        finally:
            await management.delete(f"/users/{user}")
