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

from minio.credentials import StaticProvider
from minio.minioadmin import MinioAdmin

from schemas.permissions import Grant
from tests.support.broker_users import Management
from tests.support.servers import Servers


@dataclass(frozen=True)
class Credentials:
    amqp_url: str
    amqp_password: str
    s3_access_key: str
    s3_secret_key: str


@asynccontextmanager
async def own_credentials(servers: Servers) -> AsyncIterator[Credentials]:
    tag = uuid.uuid4().hex[:12]
    admin = MinioAdmin(
        endpoint=servers.s3_endpoint,
        credentials=StaticProvider(servers.s3_access_key, servers.s3_secret_key),
        secure=servers.s3_secure,
    )
    access_key, secret_key = f"shepherd-s3-{tag}", f"s3-secret-{uuid.uuid4().hex}"
    everything = Grant(f"shepherd-test-{tag}", configure=".*", write=".*", read=".*")
    async with Management(servers.amqp_url) as management, management.user(everything) as user:
        await asyncio.to_thread(admin.user_add, access_key, secret_key)
        try:
            await asyncio.to_thread(admin.attach_policy, ["readwrite"], access_key)
            yield Credentials(
                amqp_url=user.url,
                amqp_password=user.password,
                s3_access_key=access_key,
                s3_secret_key=secret_key,
            )
        finally:
            await asyncio.to_thread(admin.user_remove, access_key)
