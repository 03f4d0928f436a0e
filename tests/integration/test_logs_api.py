"""``GET /jobs/{id}/logs``: what a job's runner printed, through the gateway, whole, one stream
or its last lines, under the read scope; refused with a clear error for bad parameters."""

from __future__ import annotations

import pytest

from schemas.config import TokenConfig
from tests.conftest import serving
from tests.support.sse import read_events
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


def models_with(tmp_path, name: str, runner: str, source: str):
    """A models folder holding ``<name>/1``: ``source`` as ``<name>.py``, serving ``runner``."""
    models = tmp_path / "models"
    (models / name / "1").mkdir(parents=True)
    (models / name / "1" / "shepherd-runner.yaml").write_text(f"runner: {name}:{runner}\n")
    (models / name / "1" / f"{name}.py").write_text(source)
    return models


@pytest.fixture
def chatty(tmp_path):
    return models_with(tmp_path, "chatty", "Chatty", CHATTY)


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


TICKER = (
    "import sys, time\n"
    "from runner import JsonRunner\n\n"
    "class Ticker(JsonRunner):\n"
    "    def predict(self, said):\n"
    "        for n in range(said['ticks']):\n"
    "            print(f'tick {n}', flush=True)\n"
    "            print(f'tock {n}', file=sys.stderr, flush=True)\n"
    "            time.sleep(said['every'])\n"
    "        return said\n"
)
"""Prints a line to each stream every ``every`` seconds."""


def ticker_models(tmp_path):
    return models_with(tmp_path, "ticker", "Ticker", TICKER)


async def test_following_a_running_job_streams_its_output_live_then_its_end(
    config, names, tmp_path, job_id
):
    config.sheep = {"s1": bare_sheep(working_directory=ticker_models(tmp_path))}
    ticker = {"name": "ticker", "version": "1"}
    async with serving(config, names) as client:
        request = {"job_id": job_id, "model": ticker, "payload": {"ticks": 4, "every": 0.5}}
        assert (await client.post("/start-job", json=request)).status_code == 202
        pieces, states_seen = [], set()
        params = {"follow": "true", "stream": "stdout"}
        async with client.stream("GET", f"/jobs/{job_id}/logs", params=params) as answer:
            async for event in read_events(answer):
                if event.event == "end":
                    end = event.json()
                    break
                pieces.append(event.json())
                status = (await client.get(f"/jobs/{job_id}/status")).json()
                states_seen.add(status["state"])
        assert end["state"] == "done" and end["job_id"] == job_id
        # Live: pieces came while the job ran, not all at its end.
        assert "running" in states_seen
        assert {piece["stream"] for piece in pieces} == {"stdout"}
        text = "".join(piece["text"] for piece in pieces)
        assert text == "".join(f"tick {n}\n" for n in range(4))
        stored = await client.get(f"/jobs/{job_id}/logs", params={"stream": "stdout"})
        assert stored.text == text

        # An ended job: its stored logs, both streams, then its end.
        async with client.stream("GET", f"/jobs/{job_id}/logs", params={"follow": "true"}) as again:
            replay = [event async for event in read_events(again)]
        assert [e.event for e in replay] == ["log", "log", "end"]
        assert replay[0].json()["text"] == text
        assert replay[1].json()["text"].endswith("tock 3\n")

        params = {"follow": "true", "tail": "1", "stream": "stderr"}
        async with client.stream("GET", f"/jobs/{job_id}/logs", params=params) as last:
            tailed = [event async for event in read_events(last)]
        assert [e.event for e in tailed] == ["log", "end"]
        assert tailed[0].json() == {"stream": "stderr", "attempt": 1, "text": "tock 3\n"}

        refused = await client.get(f"/jobs/{job_id}/logs", params={"follow": "yes"})
        assert refused.status_code == 400 and refused.json()["errors"][0]["field"] == "follow"


async def test_following_a_running_job_from_its_last_lines(config, names, tmp_path, job_id):
    config.sheep = {"s1": bare_sheep(working_directory=ticker_models(tmp_path))}
    ticker = {"name": "ticker", "version": "1"}
    async with serving(config, names) as client:
        request = {"job_id": job_id, "model": ticker, "payload": {"ticks": 6, "every": 0.4}}
        assert (await client.post("/start-job", json=request)).status_code == 202
        params = {"follow": "true", "stream": "stdout"}
        async with client.stream("GET", f"/jobs/{job_id}/logs", params=params) as first:
            async for event in read_events(first):
                if event.event != "log" or "tick 1" in event.json()["text"]:
                    break  # it has printed two lines (or ended): now from its last one
        params["tail"] = "1"
        async with client.stream("GET", f"/jobs/{job_id}/logs", params=params) as tailed:
            events = [event async for event in read_events(tailed)]
    assert events[-1].event == "end" and events[-1].json()["state"] == "done"
    texts = [event.json()["text"] for event in events[:-1]]
    last_so_far = int(texts[0].split()[1])
    assert texts[0] == f"tick {last_so_far}\n" and last_so_far >= 1  # one line: the last
    assert "".join(texts[1:]) == "".join(f"tick {n}\n" for n in range(last_so_far + 1, 6))
