"""A broker URL and a storage endpoint that list several nodes: a dead node is skipped."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from services.common.cluster_connection import ClusterConnection
from tests.conftest import serving
from tests.support.stack import bare_sheep, free_port


def dead_first(url: str) -> str:
    """``url`` with a node that answers nothing listed before its own."""
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    return parts._replace(netloc=f"{user}{at}127.0.0.1:{free_port()},{host}").geturl()


async def test_the_stack_runs_on_the_nodes_that_answer(config, names):
    config.broker.url = SecretStr(dead_first(config.broker.url.get_secret_value()))
    config.storage.endpoint = f"127.0.0.1:{free_port()},{config.storage.endpoint}"
    config.sheep = {"s1": bare_sheep()}
    async with serving(config, names) as client:
        answer = await client.post(
            "/start-job", json={"model": {"name": "echo", "version": "1"}, "payload": [1, 2]}
        )
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]
        status = (await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})).json()
        assert status["state"] == "done"
        assert (await client.get(f"/jobs/{job_id}/result")).content == b"[1,2]"
        health = (await client.get("/health")).json()
        assert health["healthy"] is True


async def test_a_connection_goes_to_the_first_listed_node_that_answers(config):
    live = urlsplit(config.broker.url.get_secret_value())
    if live.hostname != "127.0.0.1":
        pytest.skip("names the broker twice, as 127.0.0.1 and as localhost")
    user = live.netloc.rpartition("@")[0]
    as_ip = live.geturl()
    as_name = live._replace(netloc=f"{user}@localhost:{live.port}").geturl()
    dead = dead_first(as_ip).replace(f",127.0.0.1:{live.port}", "")
    for nodes, first in (
        ([as_ip, as_name], "127.0.0.1"),
        ([as_name, as_ip], "localhost"),
        ([dead, as_name], "localhost"),
    ):
        connection = await ClusterConnection.connect_any(nodes, reconnect_interval=0.5)
        try:
            assert connection.url.host == first, nodes
        finally:
            await connection.close()
