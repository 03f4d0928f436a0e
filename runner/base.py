"""The class a model subclasses: load once, then process one job at a time.

A runner process builds one ``Runner`` from ``shepherd-runner.yaml``, calls :meth:`Runner.load`
once, and then calls :meth:`Runner.process` for every job the sheep sends, in a worker thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.runner import ProgressUpdate

ProgressSink = Callable[[ProgressUpdate], None]
"""Where :meth:`Runner.report_progress` delivers; thread safe, provided by the server."""


@dataclass(frozen=True)
class JobContext:
    """The job being processed: its id and the free-form parameters it was submitted with."""

    job_id: str
    parameters: dict[str, Any] = field(default_factory=dict)


class Runner(ABC):
    """Base class of every model.

    Subclass it, do the expensive set-up (weights, clients) in :meth:`load` rather than in
    ``__init__`` so that its duration is reported, and implement :meth:`process`, which reads
    files from ``inputs_dir`` and writes results to ``outputs_dir``. Raising from ``process``
    fails the job (the runner keeps serving). ``options`` come from the runner file.
    """

    def __init__(self, **options: Any) -> None:
        self.options: dict[str, Any] = options
        self.job: JobContext | None = None
        """The job :meth:`process` is working on; ``None`` between jobs."""
        self._progress_sink: ProgressSink | None = None

    def load(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Load the model; called once before the first job. Raising aborts the runner."""

    @abstractmethod
    def process(self, inputs_dir: Path, outputs_dir: Path) -> None:
        """Process the current job (:attr:`job`): read ``inputs_dir``, write ``outputs_dir``."""

    def report_progress(self, fraction: float, message: str | None = None) -> None:
        """Tell the sheep how far the current job is (0.0 to 1.0); callable from any thread."""
        job, sink = self.job, self._progress_sink  # snapshot: the job may end meanwhile
        if job is None or sink is None:
            raise RuntimeError("report_progress() called while no job is being processed")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction must be between 0 and 1, got {fraction!r}")
        sink(ProgressUpdate(job_id=job.job_id, fraction=fraction, message=message))

    def run_job(
        self, job: JobContext, inputs_dir: Path, outputs_dir: Path, sink: ProgressSink
    ) -> None:
        """Called by the server: :meth:`process` with :attr:`job` and progress wired up."""
        self.job, self._progress_sink = job, sink
        try:
            self.process(inputs_dir, outputs_dir)
        finally:
            self.job, self._progress_sink = None, None
