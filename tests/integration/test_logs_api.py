"""``GET /jobs/{id}/logs``: what a job's runner printed, through the gateway, whole, one stream
or its last lines, under the read scope; refused with a clear error for bad parameters."""

from __future__ import annotations

import pytest

from schemas.config import TokenConfig
from tests.conftest import serving
from tests.support.stack import bare_sheep

LINES = 3000
CHATTY = (
    "import sys\n"
    "from runner import JsonRunner\n\n"
    "class Chatty(JsonRunner):\n"
    "    def predict(self, said):\n"
    f"        for n in range({LINES}):\n"
    "            print(f'line {n} ' + 'x' * 500, flush=True)\n"
    "        print('warning: \\xe9t\\xe9', file=sys.stderr, flush=True)\n"
    "        return said\n"
)
"""Prints about 1.5 MB to stdout (more than a JSON answer holds), one line to stderr."""


@pytest.fixture
def chatty(tmp_path):
    models = tmp_path / "models"
    (models / "chatty" / "1").mkdir(parents=True)
    (models / "chatty" / "1" / "shepherd-runner.yaml").write_text("runner: chatty:Chatty\n")
    (models / "chatty" / "1" / "chatty.py").write_text(CHATTY)
    return models


def line(n: int) -> str:
    return f"line {n} " + "x" * 500 + "\n"


async def test_a_jobs_logs_whole_by_stream_and_by_tail(config, names, chatty, job_id):
    config.sheep = {"s1": bare_sheep(working_directory=chatty)}
    reader, submitter = "r" * 32, "s" * 32
    config.gateway.auth = "on"
    config.gateway.tokens = [
        TokenConfig(name="reader", token=reader, scopes=["read"]),
        TokenConfig(name="submitter", token=submitter, scopes=["submit", "read"]),
    ]
    async with serving(config, names) as client:
        client.headers["Authorization"] = f"Bearer {submitter}"
        request = {"job_id": job_id, "model": {"name": "chatty", "version": "1"}, "payload": 1}
        assert (await client.post("/start-job", json=request)).status_code == 202
        ready = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 60})
        assert ready.json()["state"] == "done"
        client.headers["Authorization"] = f"Bearer {reader}"  # reading needs read alone
        logs = f"/jobs/{job_id}/logs"

        both = (await client.get(logs)).json()
        assert both["state"] == "done" and both["truncated"] == ["stdout"]
        assert both["stdout"].endswith(line(LINES - 1))
        assert both["stdout"].startswith("line ")  # cut at a line's start
        assert len(both["stdout"].encode()) <= 1024 * 1024
        assert both["stderr"].endswith("warning: été\n")

        whole = await client.get(logs, params={"stream": "stdout"})
        assert whole.headers["content-type"].startswith("text/plain")
        assert whole.text == "".join(line(n) for n in range(LINES))

        tail = await client.get(logs, params={"stream": "stdout", "tail": "3"})
        assert tail.text == "".join(line(n) for n in range(LINES - 3, LINES))
        tails = (await client.get(logs, params={"tail": "2"})).json()
        assert tails["stdout"] == line(LINES - 2) + line(LINES - 1)
        assert tails["truncated"] == []
        assert tails["stderr"].endswith("warning: été\n") and tails["stderr"].count("\n") <= 2

        for params, field in (({"stream": "both"}, "stream"), ({"tail": "0"}, "tail")):
            refused = await client.get(logs, params=params)
            assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == field
        assert (await client.get("/jobs/no-such-job/logs")).status_code == 404
        stranger = {"Authorization": "Bearer " + "n" * 32}
        assert (await client.get(logs, headers=stranger)).status_code == 401
