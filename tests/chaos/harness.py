"""What the chaos and cluster tests share: the tally model, an observer of every job event,
submissions that retry through outages, waiting for every job to end, and the verdict.

    observer = Observer()                   # consume job.# events into it
    models = tally_models(root, ledger)     # the tally model, recording runs in ledger
    await submit(client, body, within=120)  # until a gateway takes it
    final = await wait_terminal(base_url, job_ids, settle=300)
    verdict = Verdict.of(job_ids, final, read_runs(ledger), observer, in_flight, blows)
    verdict.check(await outputs_missing(storage, final))
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import httpx
import yaml

from schemas.events import JobEvent
from schemas.status import TERMINAL_STATES
from services.common.storage import ObjectMissing, Storage
from tests.chaos.ledger import Blow, Run, unexplained_reruns

TALLY = Path(__file__).parent / "models" / "tally" / "1"
MODEL = {"name": "tally", "version": "1"}


@dataclass
class Observer:
    """Every terminal job event, from a durable queue bound before the first job: which
    outcomes each job announced, and when the first arrived."""

    outcomes: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    ended_at: dict[str, float] = field(default_factory=dict)

    async def receive(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        event = JobEvent.model_validate_json(message.body)
        if event.data.state in TERMINAL_STATES:
            self.outcomes[event.data.job_id].add(event.data.state.value)
            self.ended_at.setdefault(event.data.job_id, time.time())
        await message.ack()


def tally_models(root: Path, ledger: Path) -> Path:
    """A models directory holding the tally model, writing into ``ledger``."""
    model = root / "tally" / "1"
    model.mkdir(parents=True)
    shutil.copy(TALLY / "model.py", model / "model.py")
    runner_file = {"runner": "model:TallyRunner", "options": {"ledger": str(ledger)}}
    (model / "shepherd-runner.yaml").write_text(yaml.safe_dump(runner_file))
    return root


async def submit(client: httpx.AsyncClient, body: dict, within: float) -> None:
    """Submit until a gateway takes it, retrying through outages as a client should."""
    deadline = time.monotonic() + within
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = await client.post("/start-job", json=body)
        except httpx.TransportError as exc:
            last = repr(exc)
            await asyncio.sleep(0.5)
            continue
        if answer.status_code in (200, 202):
            return
        assert answer.status_code == 503, answer.text
        last = f"503 {answer.text}"
        await asyncio.sleep(min(float(answer.headers.get("retry-after", "1")), 2.0))
    raise AssertionError(f"no gateway took {body.get('job_id')} for {within:g} s; last: {last}")


async def wait_terminal(base_url: str, job_ids: list[str], settle: float) -> dict[str, dict]:
    """Each job's final status; jobs still not terminal after ``settle`` s are left out."""
    final: dict[str, dict] = {}
    limit = asyncio.Semaphore(32)

    async def one(client: httpx.AsyncClient, job_id: str) -> None:
        async with limit:
            while True:
                try:
                    answer = await client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 20})
                except httpx.TransportError:
                    await asyncio.sleep(1)
                    continue
                if answer.status_code == 200:
                    final[job_id] = answer.json()
                    return

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        tasks = [asyncio.create_task(one(client, job_id)) for job_id in job_ids]
        await asyncio.wait(tasks, timeout=settle)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return final


async def outputs_missing(storage: Storage, final: dict[str, dict]) -> list[str]:
    """Done jobs whose output is not what the tally model returned for them."""
    wrong = []
    for job_id, status in final.items():
        if status["state"] != "done":
            continue
        try:
            output = json.loads(await storage.get_bytes(f"{job_id}/outputs/output.json"))
        except ObjectMissing:
            output = None
        if output != {"value": job_id}:
            wrong.append(job_id)
    return wrong


@dataclass
class Verdict:
    """What went wrong, each from an account outside Shepherd where one exists: the ledger of
    runs, the events observed, the blows dealt."""

    submitted: int
    final: dict[str, dict]
    lost: list[str]
    not_done: dict[str, object]
    never_ran: list[str]
    not_rerun: list[str]
    reruns: dict[str, int]
    two_outcomes: dict[str, set[str]]
    disagreeing: list[str]
    run_counts: Counter[int]

    @classmethod
    def of(
        cls,
        job_ids: list[str],
        final: dict[str, dict],
        runs: dict[str, list[Run]],
        observer: Observer,
        submitted_at: dict[str, float],
        blows: list[Blow],
    ) -> Verdict:
        victims = frozenset().union(*(blow.victims for blow in blows))
        in_flight = {
            job_id: (submitted_at[job_id], observer.ended_at.get(job_id, float("inf")))
            for job_id in submitted_at
        }
        return cls(
            submitted=len(job_ids),
            final=final,
            lost=sorted(set(job_ids) - set(final)),
            # the victims too: a job whose runner dies runs again (models.max_attempts)
            not_done={j: s.get("error") for j, s in final.items() if s["state"] != "done"},
            never_ran=[j for j, s in final.items() if s["state"] == "done" and not runs[j]],
            not_rerun=[job_id for job_id in victims if len(runs[job_id]) < 2],
            reruns=unexplained_reruns(runs, in_flight, blows),
            two_outcomes={j: seen for j, seen in observer.outcomes.items() if len(seen) > 1},
            disagreeing=[
                job_id
                for job_id, status in final.items()
                if observer.outcomes.get(job_id, set()) - {status["state"]}
            ],
            run_counts=Counter(len(runs[job_id]) for job_id in job_ids),
        )

    @property
    def duplicated(self) -> int:
        return len(self.reruns) + len(self.two_outcomes)

    def check(self, wrong_output: list[str]) -> None:
        """Print the tally, then fail on the first thing wrong."""
        states = Counter(status["state"] for status in self.final.values())
        print(f"final states {dict(states)}, runs per job {dict(self.run_counts)}")
        print(
            f"submitted {self.submitted}, terminal {len(self.final)}, lost {len(self.lost)}, "
            f"duplicated {self.duplicated}",
            flush=True,
        )
        assert not self.lost, f"jobs that never ended: {self.lost[:10]}"
        assert not self.not_done, f"jobs not done: {dict(list(self.not_done.items())[:10])}"
        assert not self.never_ran, f"done without the model running them: {self.never_ran[:10]}"
        assert not self.not_rerun, (
            f"their runner died, yet they did not run again: {self.not_rerun}"
        )
        assert not self.reruns, f"ran more than once with no blow while in flight: {self.reruns}"
        assert not self.two_outcomes, f"jobs that announced two outcomes: {self.two_outcomes}"
        assert not self.disagreeing, f"events and status disagree: {self.disagreeing[:10]}"
        assert not wrong_output, f"done jobs without their output: {wrong_output[:10]}"
