"""A job a sheep holds, prepared to run: admitted, held (by its delivery or a lease), its
inputs fetched; what the sheep's loop passes from one step to the next."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.job import ModelRef, Priority
from schemas.runner import Run
from schemas.status import InputFile
from services.sheep.admission import Attempt
from services.sheep.lease import Hold


@dataclass
class HeldJob:
    attempt: Attempt
    hold: Hold
    cancelled: asyncio.Event
    inputs: list[InputFile] = field(default_factory=list)
    """What it runs on, once fetched."""
    logs: tuple[Sequence[int], Sequence[int]] = ((), ())
    """Where its part of the runner's log files starts and ends, once it has run."""
    withdrawing: bool = False
    """Handed to the runner ahead of its turn, and asked back for a job of higher priority."""

    @property
    def job_id(self) -> str:
        return self.attempt.job_id

    @property
    def model(self) -> ModelRef:
        return self.attempt.dispatch.job.model

    @property
    def priority(self) -> Priority:
        return self.attempt.dispatch.priority

    def run_request(self) -> Run:
        """What the runner is sent to run it."""
        directory = self.attempt.directory
        inputs, outputs = (str(directory / d) for d in ("inputs", "outputs"))
        return Run(job_id=self.job_id, inputs_dir=inputs, outputs_dir=outputs)
