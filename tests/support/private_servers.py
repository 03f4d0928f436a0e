"""A RabbitMQ node and a MinIO server of a test's own, to stop, kill and restart at will.

The servers of ``make services`` are shared by everyone's tests and must never go down, so
outage and chaos tests start private ones: a RabbitMQ node with its own name, AMQP and
distribution ports and data under ``root``, configured like ``deploy/rabbitmq/``, and a MinIO
server with its own port and data whose bucket notifications go to that node's
``shepherd.storage`` exchange, as ``scripts/services.sh`` sets them up. Each server keeps its
data across stop, kill and start, and every process (and the node's epmd registration) is
gone when the context exits, whatever happened inside.

    async with private_servers(tmp_path) as servers:
        config = build_config(servers.servers, servers.bucket, "t1", tmp_path / "data")
        await servers.rabbitmq.kill()           # SIGKILL, like a crash
        await servers.rabbitmq.start()          # same node, ports and data
        await servers.minio.restart()           # SIGTERM and wait, then start
        async with servers.minio.outage():      # killed here, started again on leaving
            ...

The methods are coroutines so that a Shepherd running on the test's event loop keeps running
(and noticing) while a server goes down or comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiormq
import httpx
from pydantic import SecretStr

from schemas.config import StorageConfig
from services.setup import setup_storage
from tests.support.servers import LOCAL_TARGET_ARN, Servers
from tests.support.stack import free_port

ROOT = Path(__file__).parents[2]
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
EPMD_PORT = int(os.environ.get("ERL_EPMD_PORT", "4369"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
_PROBE_INTERVAL = 0.05
"""Seconds between readiness probes: a starting server announces nothing we could await."""
_PLUGIN_SETTINGS = ("management.", "prometheus.")
"""rabbitmq.conf keys of plugins a private node does without (faster start, no fixed ports)."""


class ServerFailed(RuntimeError):
    """A private server did not start, or did not stop."""


class _Server:
    """One server process, in a session of its own so that a kill takes all of it."""

    name: str

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_file = root / "server.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        """The server's process (the leader of its process group), while it runs."""
        return self._process.pid if self.running and self._process else None

    def _command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    async def _ready(self) -> bool:
        """Whether the server serves clients yet."""
        raise NotImplementedError

    async def _gone(self) -> bool:
        """Whether everything the last run left behind has gone (beyond its main process)."""
        return True

    async def start(self) -> None:
        """Start the server on its data and ports, and return once it serves clients."""
        if self.running:
            raise ServerFailed(f"{self.name} is already running")
        argv, env = self._command()
        with self.log_file.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            async with self._within(START_TIMEOUT, "to serve clients"):
                await self._until(self._ready, starting=True)
        except BaseException:
            await self.kill()
            raise

    async def stop(self) -> None:
        """Shut down gracefully (SIGTERM), as a service manager would."""
        if not self.running:
            return
        assert self._process is not None
        self._process.terminate()
        async with self._within(STOP_TIMEOUT, "to stop"):
            await self._process.wait()
        await self.kill()  # whatever it left behind

    async def kill(self) -> None:
        """SIGKILL every process of the server, like a crash or an OOM kill.

        RabbitMQ 3.10 may lose a quorum queue declared a moment (under 2 s) before: it comes
        back without a leader, and consuming from it waits forever. Let a fresh topology
        settle before killing the node."""
        if self._process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        async with self._within(STOP_TIMEOUT, "to die"):
            await self._process.wait()
            await self._until(self._gone)

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    @asynccontextmanager
    async def outage(self, *, kill: bool = True) -> AsyncIterator[None]:
        """The server down for the block (killed, or stopped gracefully), up again after it,
        whatever the block raised."""
        await (self.kill() if kill else self.stop())
        try:
            yield
        finally:
            await self.start()

    async def _until(
        self, condition: Callable[[], Awaitable[bool]], *, starting: bool = False
    ) -> None:
        """Probe ``condition`` until it holds; if ``starting``, fail once the process exits."""
        while not await condition():
            assert self._process is not None
            if starting and self._process.returncode is not None:
                raise ServerFailed(
                    f"{self.name} exited with {self._process.returncode} before serving "
                    f"clients; its log ends:\n{self.log_tail()}"
                )
            await asyncio.sleep(_PROBE_INTERVAL)

    @asynccontextmanager
    async def _within(self, seconds: float, what: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError:
            raise ServerFailed(
                f"{self.name} took more than {seconds:g} s {what}; its log ends:\n{self.log_tail()}"
            ) from None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


class RabbitNode(_Server):
    """A RabbitMQ node named ``shepherd-test-<random>@localhost``; guest/guest on loopback."""

    def __init__(self, root: Path, *, definitions: bool = True) -> None:
        """``definitions``: import them as the node first starts (a node joining a cluster
        gets them from its peers)."""
        super().__init__(root)
        self.definitions = definitions
        self.node = f"shepherd-test-{uuid.uuid4().hex[:10]}@localhost"
        self.name = f"RabbitMQ node {self.node}"
        self.port = free_port()
        self.dist_port = free_port()
        self.amqp_url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.log_file = root / "log" / "stdout.log"
        (root / "log").mkdir(parents=True, exist_ok=True)
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq.conf").write_text(_node_config(self.port))

    def _env(self) -> dict[str, str]:
        root = self.root
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(root / "rabbit.pid"),
        }

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return [str(RABBITMQ_BIN / "rabbitmq-server")], self._env()

    async def start(self) -> None:
        """Start the node; the first start also imports ``deploy/rabbitmq/definitions.json``
        (like ``make services``), which later starts find in the node's own data. Its
        permissions name the role users, which ``make services`` creates first: here they
        come with the definitions, without a password (nobody logs in as them)."""
        first = not (self.root / "mnesia").exists()
        await super().start()
        if first and self.definitions:
            await self.import_definitions()

    async def import_definitions(self) -> None:
        definitions = json.loads((ROOT / "deploy/rabbitmq/definitions.json").read_text())
        users = [
            {"name": p["user"], "password_hash": "", "tags": []} for p in definitions["permissions"]
        ]
        path = self.root / "definitions.json"
        path.write_text(json.dumps({"users": users, **definitions}))
        await self.ctl("import_definitions", str(path))

    async def ctl(self, *args: str) -> str:
        """Run ``rabbitmqctl`` against this node; its output."""
        process = await asyncio.create_subprocess_exec(
            str(RABBITMQ_BIN / "rabbitmqctl"),
            "-n",
            self.node,
            *args,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode:
            raise ServerFailed(f"rabbitmqctl {' '.join(args)} failed: {output.decode()}")
        return output.decode()

    async def _ready(self) -> bool:
        try:  # the port first: aiormq logs every refused connection as an error
            _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        writer.close()
        try:  # then a whole handshake, logging in
            connection = await aiormq.connect(self.amqp_url)
        except (OSError, aiormq.exceptions.AMQPError):
            return False
        await connection.close()
        return True

    async def _gone(self) -> bool:
        """Until epmd forgets the node, a node of the same name cannot start."""
        return self.node.split("@")[0] not in await epmd_names()


class MinioServer(_Server):
    """A MinIO server (minioadmin/minioadmin) notifying ``rabbitmq`` of bucket events through
    the AMQP target ``SHEPHERD``, as ``scripts/services.sh`` configures the shared one."""

    access_key = "minioadmin"
    secret_key = "minioadmin"
    target_arn = LOCAL_TARGET_ARN

    def __init__(self, root: Path, rabbitmq: RabbitNode) -> None:
        super().__init__(root)
        self.port = free_port()
        self.console_port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.name = f"MinIO on {self.endpoint}"
        self.rabbitmq = rabbitmq
        root.mkdir(parents=True, exist_ok=True)

    def _command(self) -> tuple[list[str], dict[str, str]]:
        argv = [
            str(minio_binary()),
            "server",
            str(self.root / "data"),
            "--quiet",
            "--address",
            self.endpoint,
            "--console-address",
            f"127.0.0.1:{self.console_port}",
        ]
        env = {
            **os.environ,
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            # No queue_dir, like production: events are dropped while RabbitMQ is down.
            "MINIO_NOTIFY_AMQP_ENABLE_SHEPHERD": "on",
            "MINIO_NOTIFY_AMQP_URL_SHEPHERD": self.rabbitmq.amqp_url.rstrip("/"),
            "MINIO_NOTIFY_AMQP_EXCHANGE_SHEPHERD": "shepherd.storage",
            "MINIO_NOTIFY_AMQP_EXCHANGE_TYPE_SHEPHERD": "fanout",
            "MINIO_NOTIFY_AMQP_ROUTING_KEY_SHEPHERD": "s3",
            "MINIO_NOTIFY_AMQP_DURABLE_SHEPHERD": "on",
            "MINIO_NOTIFY_AMQP_DELIVERY_MODE_SHEPHERD": "2",
        }
        return argv, env

    async def _ready(self) -> bool:
        try:
            async with httpx.AsyncClient(timeout=1) as client:
                response = await client.get(f"http://{self.endpoint}/minio/health/live")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def storage_config(self, bucket: str) -> StorageConfig:
        return StorageConfig(
            endpoint=self.endpoint,
            bucket=bucket,
            access_key=SecretStr(self.access_key),
            secret_key=SecretStr(self.secret_key),
        )

    async def create_bucket(self, bucket: str) -> None:
        """The bucket, with its object events routed to RabbitMQ (``services.setup``)."""
        await asyncio.to_thread(setup_storage, self.storage_config(bucket), self.target_arn)


@dataclass(frozen=True)
class PrivateServers:
    rabbitmq: RabbitNode
    minio: MinioServer
    bucket: str

    @property
    def servers(self) -> Servers:
        """What the shared-server fixtures describe, for building a configuration alike."""
        minio = self.minio
        return Servers(
            self.rabbitmq.amqp_url,
            minio.endpoint,
            minio.access_key,
            minio.secret_key,
            False,
            minio.target_arn,
        )


@asynccontextmanager
async def private_rabbitmq(root: Path) -> AsyncIterator[RabbitNode]:
    """A started RabbitMQ node with data in ``root``, killed on exit."""
    node = RabbitNode(root)
    try:
        await node.start()
        yield node
    finally:
        await node.kill()


@asynccontextmanager
async def private_minio(root: Path, rabbitmq: RabbitNode) -> AsyncIterator[MinioServer]:
    """A started MinIO server with data in ``root`` notifying ``rabbitmq``, killed on exit."""
    server = MinioServer(root, rabbitmq)
    try:
        await server.start()
        yield server
    finally:
        await server.kill()


@asynccontextmanager
async def private_servers(root: Path, bucket: str = "shepherd") -> AsyncIterator[PrivateServers]:
    """Both servers, data under ``root``, and ``bucket`` sending its events to the node."""
    async with contextlib.AsyncExitStack() as stack:
        rabbitmq = await stack.enter_async_context(private_rabbitmq(root / "rabbitmq"))
        minio = await stack.enter_async_context(private_minio(root / "minio", rabbitmq))
        await minio.create_bucket(bucket)
        yield PrivateServers(rabbitmq, minio, bucket)


def minio_binary() -> Path:
    """The MinIO server ``make services`` built, at the version ``scripts/services.sh`` names."""
    script = (ROOT / "scripts" / "services.sh").read_text()
    version = re.search(r'^MINIO_VERSION="([^"]+)"', script, re.MULTILINE)
    assert version, "scripts/services.sh no longer names MINIO_VERSION"
    cache = Path(os.environ.get("SHEPHERD_CACHE_DIR", Path.home() / ".cache" / "shepherd"))
    binary = cache / "minio" / version[1] / "minio"
    if not binary.exists():
        raise ServerFailed(f"no MinIO server at {binary}; `make services` builds it once")
    return binary


async def epmd_names() -> set[str]:
    """The node names registered with the local epmd (its NAMES_REQ request)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", EPMD_PORT)
    except OSError:  # no epmd, no names
        return set()
    try:
        writer.write(b"\x00\x01n")
        answer = await reader.read()
    finally:
        writer.close()
    return set(re.findall(r"^name (\S+) at port", answer[4:].decode(), re.MULTILINE))


def _node_config(port: int) -> str:
    """``deploy/rabbitmq/rabbitmq.conf`` on a port of its own, without the plugins' keys."""
    lines = []
    for line in (ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf").read_text().splitlines():
        key = line.split("=")[0].strip()
        if key.startswith(_PLUGIN_SETTINGS):
            continue
        lines.append(f"listeners.tcp.1 = 127.0.0.1:{port}" if key == "listeners.tcp.1" else line)
    return "\n".join(lines) + "\n"
