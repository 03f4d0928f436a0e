"""The path every dispatch depends on: an upload to MinIO becomes an AMQP message."""

import asyncio
import io
import time

import aio_pika

from schemas.s3 import S3EventNotification


async def test_upload_of_an_input_is_announced_on_the_storage_exchange(
    servers, minio_client, test_bucket, job_id
):
    connection = await aio_pika.connect(servers.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind("shepherd.storage")
        received: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.put_nowait(message)

        await queue.consume(collect, no_ack=True)

        key = f"{job_id}/inputs/input.json"
        started = time.monotonic()
        await asyncio.to_thread(
            minio_client.put_object,
            test_bucket,
            key,
            io.BytesIO(b'{"x": 1}'),
            8,
            content_type="application/json",
        )

        deadline = started + 2.0
        while True:  # other tests' buckets share the exchange: skip their events
            message = await asyncio.wait_for(received.get(), deadline - time.monotonic())
            event = S3EventNotification.model_validate_json(message.body)
            record = event.records[0]
            if record.s3.bucket.name == test_bucket and record.s3.object.decoded_key == key:
                break
        assert record.created
        assert record.s3.object.size == 8
        assert time.monotonic() - started < 2.0


async def test_only_inputs_are_announced(servers, minio_client, test_bucket, job_id):
    """Nothing Shepherd writes itself costs a notification: the objects outside a job's
    ``inputs/``, written before an input, are never announced, and the input is."""
    connection = await aio_pika.connect(servers.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind("shepherd.storage")
        keys: asyncio.Queue[str] = asyncio.Queue()

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            event = S3EventNotification.model_validate_json(message.body)
            for record in event.records:
                if record.s3.bucket.name == test_bucket:
                    keys.put_nowait(record.s3.object.decoded_key)

        await queue.consume(collect, no_ack=True)
        quiet = [
            f"{job_id}/job.json",
            f"{job_id}/status.json",
            f"{job_id}/outputs/output.json",
            f"{job_id}/logs/stdout.txt",
            f"_shepherd/pending/{job_id}",
            f"{job_id}/inputsx/a.json",
        ]
        announced = f"{job_id}/inputs/nested/a.json"
        for key in [*quiet, announced]:
            await asyncio.to_thread(minio_client.put_object, test_bucket, key, io.BytesIO(b"1"), 1)
        await asyncio.to_thread(minio_client.remove_object, test_bucket, announced)
        await asyncio.to_thread(
            minio_client.put_object, test_bucket, announced, io.BytesIO(b"2"), 1
        )

        seen = [await asyncio.wait_for(keys.get(), 5) for _ in range(2)]
        assert seen == [announced, announced]  # the removal in between is not announced
        assert keys.empty()
