"""RabbitMQ users for the tests, added through the management API and removed afterwards.

``role_users`` gives a test's namespace the users of ``schemas/permissions.py``, with exactly
the rights ``make services`` grants the ``shepherd`` namespace:

    async with role_users(servers, names) as users:
        config.broker.url = SecretStr(users.url("services"))
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from urllib.parse import quote, urlsplit

import httpx

from schemas.broker_names import Names
from schemas.permissions import ROLES, Grant, Role, grant
from tests.support.requirements import missing

MANAGEMENT_PORT = 15672


@dataclass(frozen=True)
class BrokerUser:
    name: str
    password: str
    url: str


class Management:
    """RabbitMQ's management API, as the administrator of ``amqp_url`` (guest here)."""

    def __init__(self, amqp_url: str) -> None:
        self._amqp = urlsplit(amqp_url)
        self._vhost = quote(self._amqp.path.lstrip("/") or "/", safe="")
        self._client = httpx.AsyncClient(
            base_url=f"http://{self._amqp.hostname}:{MANAGEMENT_PORT}/api",
            auth=(self._amqp.username or "guest", self._amqp.password or "guest"),
            timeout=10,
        )

    async def __aenter__(self) -> Management:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def bindings_from(self, exchange: str) -> list[tuple[str, str]]:
        """(queue, routing key) of every binding from ``exchange``."""
        answer = await self._client.get(f"/exchanges/{self._vhost}/{exchange}/bindings/source")
        answer.raise_for_status()
        return [(b["destination"], b["routing_key"]) for b in answer.json()]

    async def delete_queue(self, name: str) -> None:
        (await self._client.delete(f"/queues/{self._vhost}/{name}")).raise_for_status()

    @asynccontextmanager
    async def user(self, granted: Grant) -> AsyncIterator[BrokerUser]:
        """A user with ``granted``'s rights and a password of its own, deleted afterwards."""
        password = f"amqp-pw-{uuid.uuid4().hex}"
        try:
            created = await self._client.put(
                f"/users/{granted.user}", json={"password": password, "tags": ""}
            )
        except httpx.TransportError as exc:
            missing(f"RabbitMQ's management API is not reachable to add a user: {exc}")
        created.raise_for_status()
        try:
            rights = {"configure": granted.configure, "write": granted.write, "read": granted.read}
            path = f"{self._vhost}/{granted.user}"
            (await self._client.put(f"/permissions/{path}", json=rights)).raise_for_status()
            for topic in granted.topics:
                put = await self._client.put(f"/topic-permissions/{path}", json=asdict(topic))
                put.raise_for_status()
            port = self._amqp.port or 5672
            url = f"amqp://{granted.user}:{password}@{self._amqp.hostname}:{port}{self._amqp.path}"
            yield BrokerUser(granted.user, password, url)
        finally:
            await self._client.delete(f"/users/{granted.user}")


@dataclass(frozen=True)
class RoleUsers:
    users: dict[Role, BrokerUser]

    def url(self, role: Role) -> str:
        return self.users[role].url


@asynccontextmanager
async def role_users(amqp_url: str, names: Names) -> AsyncIterator[RoleUsers]:
    async with Management(amqp_url) as management, AsyncExitStack() as stack:
        users = {}
        for role in ROLES:
            users[role] = await stack.enter_async_context(management.user(grant(names, role)))
        yield RoleUsers(users)
