"""A three-node RabbitMQ cluster and a four-server distributed MinIO of a test's own, each
process to kill and restart at will, on this machine (``make cluster-test``).

    async with cluster_servers(tmp_path, bucket="shepherd") as cluster:
        cluster.amqp_url          # amqp://guest:guest@127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/
        cluster.storage_endpoint  # A:Q1,A:Q2,A:Q3,A:Q4
        await cluster.rabbitmq[0].kill()     # SIGKILL one node, like a crash
        await cluster.rabbitmq[0].start()    # it rejoins the cluster
        await cluster.minio[2].kill()
        await cluster.minio[2].start()

The RabbitMQ nodes are Debian's ``rabbitmq-server`` under node names and ports of their own
(``private_servers.RabbitNode``), told of each other by their configuration; quorum queues
declared once the three are up have a replica on each. The MinIO servers have one drive
each and form one erasure set of four drives (two of parity): any one of them can die
without a write failing. Every MinIO server notifies the last RabbitMQ node of uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from pydantic import SecretStr

from schemas.config import StorageConfig
from services.setup import setup_storage
from tests.support.polling import eventually
from tests.support.private_servers import MinioServer, RabbitNode
from tests.support.stack import free_port

RABBITMQ_NODES = 3
MINIO_SERVERS = 4
ADDRESS = os.environ.get("SHEPHERD_CLUSTER_ADDRESS", "127.0.0.1")
"""Where the MinIO servers listen: not loopback under ``scripts/netns.sh`` (MinIO refuses
loopback peers where it finds /.dockerenv)."""


class MinioNode(MinioServer):
    """One server of a distributed MinIO: it names every server's drive, its own among them."""

    def __init__(self, root: Path, rabbitmq: RabbitNode, port: int, drives: list[str]) -> None:
        super().__init__(root, rabbitmq)
        self.port = port
        self.endpoint = f"{ADDRESS}:{port}"
        self.name = f"MinIO server on {self.endpoint}"
        self._drives = drives

    def _command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super()._command()
        data = argv.index("server") + 1
        argv[data : data + 1] = self._drives
        # MinIO refuses drives on the root disk in a distributed setup, unless told that
        # this is a test.
        return argv, {**env, "MINIO_CI_CD": "1"}


@dataclass(frozen=True)
class ClusterServers:
    rabbitmq: list[RabbitNode]
    minio: list[MinioNode]
    bucket: str

    @property
    def amqp_url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.rabbitmq)
        return f"amqp://guest:guest@{hosts}/"

    @property
    def storage_endpoint(self) -> str:
        return ",".join(server.endpoint for server in self.minio)

    def storage_config(self, bucket: str | None = None) -> StorageConfig:
        return StorageConfig(
            endpoint=self.storage_endpoint,
            bucket=bucket or self.bucket,
            access_key=SecretStr(MinioServer.access_key),
            secret_key=SecretStr(MinioServer.secret_key),
        )

    async def members(self) -> str:
        """What the first live node says of the cluster's members."""
        node = next(node for node in self.rabbitmq if node.running)
        return await node.ctl("cluster_status")


def _form_cluster(nodes: list[RabbitNode]) -> None:
    """Each node's configuration names its peers (peer discovery by classic config): a node
    joins them as it first boots, and never runs alone, not even for a moment (a node that
    did, then joined with ``rabbitmqctl join_cluster``, kept a stream coordinator of its
    own, and the replicas of streams on a restarted node never came back)."""
    peers = "".join(
        f"cluster_formation.classic_config.nodes.{n} = {node.node}\n"
        for n, node in enumerate(nodes, 1)
    )
    for node in nodes:
        with (node.root / "rabbitmq.conf").open("a") as conf:
            conf.write(f"cluster_formation.peer_discovery_backend = classic_config\n{peers}")


async def _cluster_healthy(server: MinioNode) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            answer = await client.get(f"http://{server.endpoint}/minio/health/cluster")
    except httpx.TransportError:
        return False
    return answer.status_code == 200


@asynccontextmanager
async def cluster_servers(root: Path, bucket: str = "shepherd") -> AsyncIterator[ClusterServers]:
    """Both clusters started, data under ``root``, and ``bucket`` notifying RabbitMQ; every
    process killed on exit."""
    rabbitmq = [
        RabbitNode(root / f"rabbitmq{n}", definitions=False) for n in range(1, RABBITMQ_NODES + 1)
    ]
    ports = [free_port() for _ in range(MINIO_SERVERS)]
    drives = [f"http://{ADDRESS}:{p}{root}/minio{n}/data" for n, p in enumerate(ports, 1)]
    minio = [
        MinioNode(root / f"minio{n}", rabbitmq[-1], port, drives) for n, port in enumerate(ports, 1)
    ]
    try:
        _form_cluster(rabbitmq)
        for node in rabbitmq:  # the first alone forms the cluster, the others join it
            await node.start()
        await rabbitmq[0].ctl("await_online_nodes", str(RABBITMQ_NODES))
        # Only now: RabbitMQ 3.10.8's stream coordinator fails to take in nodes that join
        # once a stream exists (bad_generator in add_members), and the definitions hold
        # streams.
        await rabbitmq[0].import_definitions()
        await asyncio.gather(*(server.start() for server in minio))
        await eventually(partial(_cluster_healthy, minio[0]), within=60, every=0.2)
        await asyncio.to_thread(
            setup_storage,
            StorageConfig(
                endpoint=minio[0].endpoint,
                bucket=bucket,
                access_key=SecretStr(MinioServer.access_key),
                secret_key=SecretStr(MinioServer.secret_key),
            ),
            MinioServer.target_arn,
        )
        yield ClusterServers(rabbitmq, minio, bucket)
    finally:
        for server in [*minio, *rabbitmq]:
            with contextlib.suppress(Exception):
                await server.kill()
