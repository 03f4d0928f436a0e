"""Prepare a broker and a store for Shepherd (used by ``make services``; idempotent), and
remove a namespace from a broker (tests and the benchmark, which make their own).

python -m services.setup broker --url amqp://guest:guest@127.0.0.1:5672/
python -m services.setup storage --endpoint 127.0.0.1:9000 --bucket shepherd
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

import aio_pika
from minio import Minio
from minio.notificationconfig import NotificationConfig, PrefixFilterRule, QueueConfig
from pydantic import SecretStr

from schemas.broker_names import Names
from schemas.config import BrokerConfig, StorageConfig
from schemas.nodes import broker_nodes, storage_nodes
from schemas.topology import build_topology
from schemas.webhooks import DEFAULT_RETRY_SCHEDULE
from services.common.broker import Broker
from services.common.cluster_connection import ClusterConnection

NOTIFICATION_EVENTS = ["s3:ObjectCreated:*"]
"""Only uploads make a job ready; removals tell Shepherd nothing."""
NOTIFIED_PREFIX = "*/inputs/"
"""MinIO matches prefix filters as wildcards: ``<job_id>/inputs/...`` notifies, and nothing
Shepherd writes itself (outputs, logs, status, its bookkeeping) costs a notification."""
log = logging.getLogger("shepherd.setup")


async def setup_broker(config: BrokerConfig, names: Names) -> None:
    broker = await Broker.connect(config, names, "shepherd-setup")
    try:
        await broker.declare(build_topology(names, config.delivery_limit))
    finally:
        await broker.close()


async def delete_namespace(
    amqp_url: str,
    names: Names,
    sheep_ids: Sequence[str],
    webhook_retry_schedule: Sequence[float] = (),
    *,
    classes: Sequence[str] = (),
    joined: Sequence[str] = (),
) -> None:
    """Remove every queue and exchange of a namespace (quorum queues outlive their clients):
    those of its topology with ``sheep_ids``, sheep ``classes`` and the sheep that ``joined``
    them, and the webhook retry queues of the default schedule and of
    ``webhook_retry_schedule``. The shared storage exchange stays.

    ``<ns>.inputs`` is unbound from it first: RabbitMQ 3.10 closes the publishing channel
    (MinIO's, shared by every namespace) when a fanout publish races with the deletion of a
    quorum queue it routes to."""
    topology = build_topology(
        names,
        BrokerConfig().delivery_limit,
        list(sheep_ids),
        [*DEFAULT_RETRY_SCHEDULE, *webhook_retry_schedule],
        classes=classes,
        joined=joined,
    )
    connection = await ClusterConnection.connect_any(broker_nodes(amqp_url))
    async with connection:
        channel = await connection.channel()
        try:
            inputs = await channel.get_queue(names.inputs_queue, ensure=True)
            await inputs.unbind(names.storage_exchange, "")
        except aio_pika.exceptions.ChannelClosed:  # no such queue
            channel = await connection.channel()
        for queue in topology.queues:
            await channel.queue_delete(queue.name)
        for exchange in topology.exchanges:
            if exchange.name.startswith(f"{names.namespace}."):
                await channel.exchange_delete(exchange.name)


def setup_storage(config: StorageConfig, target_arn: str) -> None:
    """Create the bucket and route the creation events of job inputs to the AMQP target
    ``target_arn``."""
    client = Minio(
        storage_nodes(config.endpoint)[0],
        config.access_key.get_secret_value(),
        config.secret_key.get_secret_value(),
        secure=config.secure,
    )
    if not client.bucket_exists(config.bucket):
        client.make_bucket(config.bucket)
    client.set_bucket_notification(
        config.bucket,
        NotificationConfig(
            queue_config_list=[
                QueueConfig(
                    NOTIFICATION_EVENTS,
                    config_id="shepherd",
                    prefix_filter_rule=PrefixFilterRule(NOTIFIED_PREFIX),
                    queue=target_arn,
                )
            ]
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.setup",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="what", required=True)
    broker = sub.add_parser("broker", help="declare the exchanges, queues and bindings")
    broker.add_argument("--url", default=BrokerConfig().url.get_secret_value())
    broker.add_argument("--namespace", default="shepherd")
    storage = sub.add_parser("storage", help="create the bucket and its event notifications")
    storage.add_argument("--endpoint", default="127.0.0.1:9000")
    storage.add_argument("--bucket", default="shepherd")
    # Keys from the environment, so that they are not in the command line (ps, /proc).
    storage.add_argument(
        "--access-key", default=os.environ.get("SHEPHERD_S3_ACCESS_KEY", "minioadmin")
    )
    storage.add_argument(
        "--secret-key",
        default=os.environ.get("SHEPHERD_S3_SECRET_KEY", "minioadmin"),
        help="default: $SHEPHERD_S3_SECRET_KEY (better than this flag: not seen by ps)",
    )
    storage.add_argument(
        "--target-arn",
        default="arn:minio:sqs::SHEPHERD:amqp",
        help="the AMQP notification target configured in the S3 service",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="setup: %(message)s")
    try:
        if args.what == "broker":
            asyncio.run(setup_broker(BrokerConfig(url=SecretStr(args.url)), Names(args.namespace)))
            log.info("broker topology of namespace %s declared", args.namespace)
        else:
            setup_storage(
                StorageConfig(
                    endpoint=args.endpoint,
                    bucket=args.bucket,
                    access_key=SecretStr(args.access_key),
                    secret_key=SecretStr(args.secret_key),
                ),
                args.target_arn,
            )
            log.info("bucket %s sends object events to %s", args.bucket, args.target_arn)
    except Exception as exc:  # a one-line reason for make, not a traceback
        log.error("%s setup failed: %s", args.what, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
