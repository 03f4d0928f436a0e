"""The bare backend's refusals and environment, and the per-job slicing of runner logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import BareSheepConfig
from schemas.job import ModelRef
from services.sheep.backend import ModelNotFound
from services.sheep.bare import BareBackend, runner_environment
from services.sheep.job_logs import copy_part


async def test_a_missing_model_is_named_with_the_path_looked_at(tmp_path: Path):
    config = BareSheepConfig(port=9999, working_directory=tmp_path)
    (tmp_path / "echo" / "2").mkdir(parents=True)  # a directory without a runner file
    backend = BareBackend("s1", config, tmp_path / "data")
    with pytest.raises(ModelNotFound) as missing:
        await backend.ensure(ModelRef(name="echo", version="2"))
    message = str(missing.value)
    assert "echo" in message and "version 2" in message
    assert str(tmp_path / "echo" / "2" / "shepherd-runner.yaml") in message
    assert backend.exited is None and backend.model is None


def test_devices_restrict_the_runner_and_none_leave_the_environment_alone(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert runner_environment(["0", "2"])["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert runner_environment([])["CUDA_VISIBLE_DEVICES"] == "7"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert "CUDA_VISIBLE_DEVICES" not in runner_environment([])
    assert runner_environment([])["PYTHONUNBUFFERED"] == "1"


def test_a_job_gets_the_part_of_a_log_written_during_it(tmp_path: Path):
    log, part = tmp_path / "runner.log", tmp_path / "part.txt"
    log.write_bytes(b"earlier job\n")
    start = log.stat().st_size
    with log.open("ab") as out:
        out.write(b"this job\n")
    end = log.stat().st_size
    with log.open("ab") as out:
        out.write(b"the next job, already\n")
    copy_part(log, start, end, part)
    assert part.read_bytes() == b"this job\n"

    log.write_bytes(b"rotated\n")  # shorter than where the job started: from the start
    copy_part(log, start, log.stat().st_size, part)
    assert part.read_bytes() == b"rotated\n"

    part.unlink()
    copy_part(log, end, end, part)  # nothing printed during the job: no file
    assert not part.exists()

    copy_part(tmp_path / "missing.log", 0, 5, part)
    assert not part.exists()
