"""Prepare a broker and a store for Shepherd (used by ``make services``; idempotent).

python -m services.setup broker --url amqp://guest:guest@127.0.0.1:5672/
python -m services.setup storage --endpoint 127.0.0.1:9000 --bucket shepherd
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from minio import Minio
from minio.notificationconfig import NotificationConfig, QueueConfig
from pydantic import SecretStr

from schemas.config import BrokerConfig, StorageConfig
from schemas.topology import Names, build_topology
from services.common.broker import Broker

NOTIFICATION_EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
log = logging.getLogger("shepherd.setup")


async def setup_broker(config: BrokerConfig, names: Names) -> None:
    broker = await Broker.connect(config, names, "shepherd-setup")
    try:
        await broker.declare(build_topology(names, config.delivery_limit))
    finally:
        await broker.close()


def setup_storage(config: StorageConfig, target_arn: str) -> None:
    """Create the bucket and route its object events to the AMQP target ``target_arn``."""
    client = Minio(
        config.endpoint,
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
                QueueConfig(events=NOTIFICATION_EVENTS, config_id="shepherd", queue=target_arn)
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
    storage.add_argument("--access-key", default="minioadmin")
    storage.add_argument("--secret-key", default="minioadmin")
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
