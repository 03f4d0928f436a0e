"""Dramatiq on RabbitMQ, the fastest widely used Python task queue there.

``RabbitmqBroker(confirm_delivery=True)``: every enqueue waits for the broker's confirm, and
so does the completion message. Dramatiq's queues are classic durable queues (it declares
``<queue>``, ``<queue>.DQ`` for delays and ``<queue>.XQ`` for dead letters) and it acks a
message after its actor returned. Its default middleware stays; the actor does not retry
(``max_retries=0``), as the other systems' echo does not. A worker process runs one thread
(``dramatiq bench.peers.dramatiq_peer -p N -t 1``) and prefetches Dramatiq's default of
twice its threads.

Dramatiq's own results middleware has no RabbitMQ backend (Redis or Memcached), so the actor
tells the client itself: it publishes ``{"job_id", "ok"}`` to the client's exclusive reply
queue (``reply_to``, through the default exchange) on the broker's confirmed channel of its
thread, and the client consumes that queue (:class:`ReplyListener`).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import dramatiq
import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from bench.peers.base import Peer
from bench.peers.work import WorkerSettings, echo_object, keys
from bench.workload import Outcome

SETTINGS = WorkerSettings.from_env("bench-dramatiq")
broker = RabbitmqBroker(url=SETTINGS.amqp_url, confirm_delivery=True)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="echo", queue_name=SETTINGS.queue, max_retries=0)
def echo(job_id: str, in_key: str, out_key: str, reply_to: str) -> None:
    """The peers' echo, then the completion message (also when the echo failed)."""
    ok = False
    try:
        echo_object(SETTINGS, in_key, out_key)
        ok = True
    finally:
        broker.channel.basic_publish(
            exchange="",
            routing_key=reply_to,
            body=json.dumps({"job_id": job_id, "ok": ok}).encode(),
            properties=pika.BasicProperties(content_type="application/json"),
        )


class ReplyListener:
    """An exclusive, auto-deleted queue of the client's own, consumed by a thread of its own;
    each completion message resolves the future of its job."""

    def __init__(self, amqp_url: str) -> None:
        self.amqp_url = amqp_url
        self.futures: dict[str, Future[Outcome]] = {}
        self.queue = ""
        self._ready = threading.Event()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None
        self._thread = threading.Thread(target=self._run, name="dramatiq-replies", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30) or not self.queue:
            raise RuntimeError("the reply queue of the Dramatiq client could not be declared")

    def _run(self) -> None:
        try:
            self._connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
            self._channel = self._connection.channel()
            declared = self._channel.queue_declare("", exclusive=True, auto_delete=True)
            self.queue = declared.method.queue
            self._channel.basic_consume(self.queue, self._on_message, auto_ack=True)
        finally:
            self._ready.set()
        self._channel.start_consuming()
        self._connection.close()

    def _on_message(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        arrived = time.perf_counter()
        reply = json.loads(body)
        future = self.futures.pop(reply["job_id"], None)
        if future is not None:
            future.set_result(("done" if reply["ok"] else "failed", arrived))

    def expect(self, job_id: str) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        self.futures[job_id] = future
        return future

    def stop(self) -> None:
        """End the consuming loop from its own thread (pika is not thread-safe otherwise);
        closing the connection deletes the queue."""
        if self._connection is not None and self._thread.is_alive():
            self._connection.add_callback_threadsafe(self._channel.stop_consuming)
            self._thread.join(10)


class DramatiqPeer(Peer):
    name = "dramatiq"
    title = "Dramatiq"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.broker = RabbitmqBroker(url=self.amqp_url, confirm_delivery=True)
        self.broker.declare_queue(self.queue)
        self.replies = ReplyListener(self.amqp_url)
        self.replies.start()

    def worker_command(self, workers: int, label: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "dramatiq",
            __name__,
            "--processes",
            str(workers),
            "--threads",
            "1",
            "--queues",
            self.queue,
        ]

    def send(self, job_id: str) -> Future[Outcome]:
        future = self.replies.expect(job_id)
        in_key, out_key = keys(job_id)
        self.broker.enqueue(echo.message(job_id, in_key, out_key, self.replies.queue))
        return future

    def wait(self, handle: Future[Outcome], timeout: float) -> Outcome:
        try:
            return handle.result(max(timeout, 0.01))
        except FutureTimeout:
            return "missing", None

    def broker_leftovers(self) -> tuple[list[str], list[str]]:
        return [self.queue, f"{self.queue}.DQ", f"{self.queue}.XQ"], []

    def close(self) -> None:
        self.replies.stop()
        self.broker.close()

    def description(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "bucket": self.bucket,
            "broker": "RabbitmqBroker(confirm_delivery=True)",
            "threads_per_process": 1,
            "prefetch": "Dramatiq's default: 2 x threads",
            "max_retries": 0,
            "completion": "the actor publishes {job_id, ok} to the client's exclusive queue",
        }
