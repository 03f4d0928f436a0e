"""A broker URL and a storage endpoint that list several nodes: a dead node is skipped."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import SecretStr

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
