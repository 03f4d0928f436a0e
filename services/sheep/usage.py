"""What a job's attempt used, as its outcome report tells it (``schemas.status.Usage``): the
runner's own accounting where it gave one, the sheep's measures for the rest.

    with job_gpus(sheep_gpus, devices=len(config.devices)) as gpus:
        ...                                    # the job runs
    usage = measured(job.inputs, timed.seconds, ran.accounting, gpus)
    report = with_outputs(report, output_bytes)   # the report's usage, with what was stored
"""

from __future__ import annotations

from schemas.events import StatusReport
from schemas.runner import Accounting
from schemas.status import InputFile, Usage
from services.sheep.gpus import JobGpus


def measured(
    inputs: list[InputFile], wall_seconds: float, accounting: Accounting | None, gpus: JobGpus
) -> Usage:
    """The usage of an attempt that ran ``wall_seconds`` on its runner; CPU and memory as the
    runner counted them, if it could (not when it was stopped or died)."""
    wall = accounting.wall_seconds if accounting is not None else wall_seconds
    # An older runner (CPU not split) counts its peak memory over its lifetime, not the job's.
    per_job = accounting is not None and accounting.cpu_user_seconds is not None
    return Usage(
        wall_seconds=wall,
        cpu_user_seconds=accounting.cpu_user_seconds if accounting else None,
        cpu_system_seconds=accounting.cpu_system_seconds if accounting else None,
        max_rss_bytes=accounting.max_rss_bytes if accounting and per_job else None,
        input_bytes=sum(f.size for f in inputs),
        output_bytes=0,
        gpu_seconds=wall * gpus.devices if gpus.devices else None,
        max_gpu_memory_bytes=gpus.peak_memory_bytes,
    )


def with_outputs(report: StatusReport, output_bytes: int) -> StatusReport:
    """The outcome report, its usage completed with the bytes of outputs stored."""
    if report.usage is None:
        return report
    usage = report.usage.model_copy(update={"output_bytes": output_bytes})
    return report.model_copy(update={"usage": usage})
