"""Find real RabbitMQ and MinIO servers for the integration tests.

In order: ``SHEPHERD_TEST_AMQP_URL`` / ``SHEPHERD_TEST_S3_*`` when set; the local services
(``make services``); testcontainers when a Docker engine with the images is reachable.
There is no fallback to a mock: without a server the tests error with the reason.
"""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from pydantic import SecretStr

from schemas.config import BrokerConfig, Config, StorageConfig

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_S3 = "127.0.0.1:9000"
LOCAL_TARGET_ARN = "arn:minio:sqs::SHEPHERD:amqp"


@dataclass(frozen=True)
class Servers:
    amqp_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_secure: bool
    notification_target_arn: str
    """The S3 service's AMQP notification target, publishing to ``shepherd.storage``."""

    def storage_config(self, bucket: str) -> StorageConfig:
        return StorageConfig(
            endpoint=self.s3_endpoint,
            bucket=bucket,
            access_key=SecretStr(self.s3_access_key),
            secret_key=SecretStr(self.s3_secret_key),
            secure=self.s3_secure,
        )


def build_config(servers: Servers, bucket: str, namespace: str, data_root: Path) -> Config:
    """A configuration for ``servers``: the test's namespace and bucket, three deliveries."""
    return Config(
        broker=BrokerConfig(url=SecretStr(servers.amqp_url), namespace=namespace, delivery_limit=3),
        storage=servers.storage_config(bucket),
        data_root=data_root,
    )


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _from_environment() -> Servers | None:
    amqp = os.environ.get("SHEPHERD_TEST_AMQP_URL")
    endpoint = os.environ.get("SHEPHERD_TEST_S3_ENDPOINT")
    if not (amqp and endpoint):
        return None
    return Servers(
        amqp_url=amqp,
        s3_endpoint=endpoint,
        s3_access_key=os.environ.get("SHEPHERD_TEST_S3_ACCESS_KEY", "minioadmin"),
        s3_secret_key=os.environ.get("SHEPHERD_TEST_S3_SECRET_KEY", "minioadmin"),
        s3_secure=os.environ.get("SHEPHERD_TEST_S3_SECURE", "0") in {"1", "true", "yes"},
        notification_target_arn=os.environ.get("SHEPHERD_TEST_S3_TARGET_ARN", LOCAL_TARGET_ARN),
    )


def _local() -> Servers | None:
    amqp = urlparse(LOCAL_AMQP)
    s3_host, s3_port = LOCAL_S3.split(":")
    if not (
        _reachable(amqp.hostname or "", amqp.port or 5672) and _reachable(s3_host, int(s3_port))
    ):
        return None
    return Servers(LOCAL_AMQP, LOCAL_S3, "minioadmin", "minioadmin", False, LOCAL_TARGET_ARN)


def _containers(stack: ExitStack) -> Servers:
    """RabbitMQ and MinIO in containers on one network; MinIO notifies RabbitMQ by name."""
    try:
        from testcontainers.core.network import Network
        from testcontainers.minio import MinioContainer
        from testcontainers.rabbitmq import RabbitMqContainer
    except ImportError as exc:  # pragma: no cover - dev extra missing
        raise RuntimeError(f"testcontainers is not installed: {exc}") from exc
    network = stack.enter_context(Network())
    rabbit = RabbitMqContainer("rabbitmq:3.13").with_network(network)
    rabbit.with_network_aliases("rabbitmq")
    stack.enter_context(rabbit)
    minio = (
        MinioContainer("minio/minio:latest")
        .with_network(network)
        .with_env("MINIO_NOTIFY_AMQP_ENABLE_SHEPHERD", "on")
        .with_env("MINIO_NOTIFY_AMQP_URL_SHEPHERD", "amqp://guest:guest@rabbitmq:5672")
        .with_env("MINIO_NOTIFY_AMQP_EXCHANGE_SHEPHERD", "shepherd.storage")
        .with_env("MINIO_NOTIFY_AMQP_EXCHANGE_TYPE_SHEPHERD", "fanout")
        .with_env("MINIO_NOTIFY_AMQP_DURABLE_SHEPHERD", "on")
    )
    stack.enter_context(minio)
    host = rabbit.get_container_host_ip()
    amqp = f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}/"
    endpoint = f"{minio.get_container_host_ip()}:{minio.get_exposed_port(9000)}"
    return Servers(amqp, endpoint, minio.access_key, minio.secret_key, False, LOCAL_TARGET_ARN)


def find_servers(stack: ExitStack) -> Servers:
    found = _from_environment() or _local()
    if found:
        return found
    try:
        return _containers(stack)
    except Exception as exc:
        raise RuntimeError(
            "no RabbitMQ/MinIO for the integration tests: set SHEPHERD_TEST_AMQP_URL and "
            "SHEPHERD_TEST_S3_ENDPOINT, run `make services`, or provide a Docker engine with "
            f"the rabbitmq and minio images (testcontainers said: {exc})"
        ) from exc
