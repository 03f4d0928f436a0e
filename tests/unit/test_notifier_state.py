"""The notifier's merge rules: reports in any order and any number give one monotonic status."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import StatusReport
from schemas.job import ModelRef
from schemas.status import ErrorInfo, JobState, JobStatus, Progress
from services.common.transitions import PROGRESS, Transition, apply, replay

MODEL = ModelRef(name="echo", version="1")
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ACCEPTED, QUEUED, RUNNING = JobState.ACCEPTED, JobState.QUEUED, JobState.RUNNING
DONE, FAILED, CANCELLED = JobState.DONE, JobState.FAILED, JobState.CANCELLED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def report(state: JobState | None, attempt: int = 1, t: float = 0, **fields) -> StatusReport:
    return StatusReport(
        job_id="job-1", state=state, model=MODEL, attempt=attempt, time=at(t), **fields
    )


def run(*reports: StatusReport, start: JobStatus | None = None) -> tuple[JobStatus | None, list]:
    """Apply reports in order; the final status and the event kinds announced."""
    status, kinds = start, []
    for r in reports:
        transition = apply(status, r)
        if transition is not None:
            assert transition.status != status, "a transition must change something"
            status = transition.status
            if transition.kind:
                kinds.append(transition.kind)
    return status, kinds


LIFECYCLE = [
    report(ACCEPTED, t=0),
    report(QUEUED, t=1),
    report(RUNNING, t=2, sheep_id="gpu-1"),
    report(DONE, t=3, sheep_id="gpu-1"),
]


def test_the_lifecycle_in_order_announces_every_state_and_stamps_every_time():
    status, kinds = run(*LIFECYCLE)
    assert kinds == ["accepted", "queued", "running", "done"]
    assert status == JobStatus(
        job_id="job-1",
        state=DONE,
        model=MODEL,
        sheep_id="gpu-1",
        attempt=1,
        accepted_at=at(0),
        enqueued_at=at(1),
        started_at=at(2),
        finished_at=at(3),
    )


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_any_order_ends_in_the_same_status(order):
    """Timestamps are filled by late reports, so the final status never depends on order."""
    status, kinds = run(*(LIFECYCLE[i] for i in order))
    expected, _ = run(*LIFECYCLE)
    assert status == expected
    ranks = [JobState(k).rank for k in kinds]
    assert ranks == sorted(ranks), "events never go back in the lifecycle"
    assert kinds[-1] == "done" and len(kinds) == len(set(kinds))


def test_a_first_report_other_than_accepted_builds_the_status_from_the_report():
    status, kinds = run(report(RUNNING, t=5, sheep_id="gpu-2"))
    assert kinds == ["running"]
    assert status.state is RUNNING and status.model == MODEL and status.sheep_id == "gpu-2"
    assert status.started_at == at(5) and status.accepted_at is None


def test_a_late_queued_report_fills_enqueued_at_without_an_event():
    status, _ = run(report(ACCEPTED), report(RUNNING, t=2))
    transition = apply(status, report(QUEUED, t=1))
    assert transition == Transition(status.model_copy(update={"enqueued_at": at(1)}), None)
    assert transition.status.state is RUNNING


def test_a_stale_running_never_overwrites_done():
    status, _ = run(*LIFECYCLE)
    assert apply(status, report(RUNNING, t=9, sheep_id="gpu-9")) is None


def test_a_duplicate_report_changes_nothing():
    status, _ = run(*LIFECYCLE)
    assert apply(status, report(DONE, t=3, sheep_id="gpu-1")) is None
    queued, _ = run(report(ACCEPTED), report(QUEUED, t=1))
    assert apply(queued, report(QUEUED, t=1)) is None
    assert apply(queued, report(ACCEPTED, t=0)) is None


@pytest.mark.parametrize("terminal", [DONE, FAILED, CANCELLED])
@pytest.mark.parametrize("later", [QUEUED, RUNNING, DONE, FAILED, CANCELLED])
def test_a_terminal_state_is_final_even_against_a_higher_attempt(terminal, later):
    status, _ = run(report(RUNNING, t=1), report(terminal, t=2))
    transition = apply(status, report(later, attempt=2, t=3))
    assert transition is None or transition.status.state is terminal


def test_a_redelivery_moves_the_job_to_the_next_attempt():
    status, kinds = run(
        report(ACCEPTED, t=0),
        report(QUEUED, t=1),
        report(RUNNING, t=2, sheep_id="gpu-1", progress=Progress(fraction=0.5)),
        report(QUEUED, attempt=2, t=3),
    )
    assert kinds == ["accepted", "queued", "running", "queued"]
    assert status.state is QUEUED and status.attempt == 2
    assert status.enqueued_at == at(3)
    assert status.started_at is None and status.progress is None and status.sheep_id is None
    status, kinds = run(report(RUNNING, attempt=2, t=4, sheep_id="gpu-2"), start=status)
    assert kinds == ["running"]
    assert (status.state, status.attempt, status.sheep_id) == (RUNNING, 2, "gpu-2")
    assert status.started_at == at(4) and status.accepted_at == at(0)


def test_a_redelivered_running_without_queued_report_keeps_enqueued_at():
    status, kinds = run(
        report(QUEUED, t=1),
        report(RUNNING, t=2, sheep_id="gpu-1"),
        report(RUNNING, attempt=2, t=5, sheep_id="gpu-2"),
    )
    assert kinds == ["queued", "running", "running"]
    assert status.attempt == 2 and status.started_at == at(5) and status.enqueued_at == at(1)


def test_reports_of_an_older_attempt_are_stale():
    status, _ = run(report(RUNNING, t=2, sheep_id="gpu-1"), report(QUEUED, attempt=2, t=3))
    assert apply(status, report(RUNNING, attempt=1, t=4, sheep_id="gpu-1")) is None
    assert apply(status, report(DONE, attempt=1, t=5)) is None
    # ... and they do not fill timestamps that belong to the current attempt.
    assert status.started_at is None


def test_nothing_goes_back_to_accepted():
    status, _ = run(report(QUEUED, t=1))
    transition = apply(status, report(ACCEPTED, attempt=3, t=0))
    assert transition == Transition(status.model_copy(update={"accepted_at": at(0)}), None)


def test_failed_takes_its_error_from_the_report():
    error = ErrorInfo(type="ValueError", message="bad input", traceback="Traceback ...")
    status, kinds = run(report(RUNNING, t=1, sheep_id="gpu-1"), report(FAILED, t=2, error=error))
    assert kinds == ["running", "failed"]
    assert status.error == error and status.finished_at == at(2)
    assert status.sheep_id == "gpu-1", "a report without sheep keeps the one that ran it"


def test_error_of_a_non_failure_report_is_ignored():
    status, _ = run(report(DONE, error=ErrorInfo(type="X", message="y")))
    assert status.error is None


def test_leaving_accepted_clears_missing_inputs():
    status, _ = run(report(ACCEPTED))
    status = status.model_copy(update={"missing_inputs": ["a.bin"]})
    status, _ = run(report(QUEUED, t=1), start=status)
    assert status.missing_inputs is None


def test_progress_updates_a_running_job_of_the_same_attempt():
    status, _ = run(report(RUNNING, t=1))
    half = Progress(fraction=0.5, message="halfway")
    transition = apply(status, report(None, progress=half))
    assert transition is not None and transition.kind == PROGRESS
    assert transition.status.progress == half and transition.status.state is RUNNING
    assert apply(transition.status, report(None, progress=half)) is None, "same progress"


@pytest.mark.parametrize(
    "start",
    [
        [],
        [report(QUEUED)],
        [report(RUNNING), report(DONE)],
        [report(RUNNING), report(QUEUED, attempt=2)],
    ],
)
def test_progress_is_ignored_unless_running_in_that_attempt(start):
    status, _ = run(*start)
    assert apply(status, report(None, progress=Progress(fraction=0.3))) is None


def test_progress_of_another_attempt_or_without_progress_is_ignored():
    status, _ = run(report(RUNNING, attempt=2))
    assert apply(status, report(None, attempt=1, progress=Progress(fraction=0.3))) is None
    assert apply(status, report(None, attempt=2)) is None


def test_leaving_running_drops_progress():
    status, _ = run(report(RUNNING), report(None, progress=Progress(fraction=0.9)), report(DONE))
    assert status.progress is None


def test_a_running_report_may_carry_progress():
    status, _ = run(report(RUNNING, progress=Progress(fraction=0.1)))
    assert status.progress == Progress(fraction=0.1)


def test_apply_never_mutates_the_current_status():
    status, _ = run(report(ACCEPTED), report(QUEUED, t=1))
    before = status.model_copy(deep=True)
    apply(status, report(RUNNING, t=2))
    apply(status, report(QUEUED, attempt=2, t=3))
    assert status == before


def test_replay_names_the_transition_the_status_shows():
    status, _ = run(report(RUNNING, t=1), report(DONE, t=2))
    assert replay(status, report(DONE, t=2)) == "done"
    assert replay(status, report(RUNNING, t=1)) is None
    assert replay(status, report(DONE, attempt=2)) is None
    assert replay(status, report(None, progress=Progress(fraction=1.0))) is None
    assert replay(None, report(DONE)) is None


def test_a_cancellation_ends_a_job_whatever_attempt_it_names():
    """The gateway cancels with the attempt it last saw; the job may have moved on since."""
    stopped = ErrorInfo(type="Cancelled", message="cancelled by request")
    status, kinds = run(
        report(QUEUED, t=1),
        report(RUNNING, attempt=2, t=2, sheep_id="gpu-1"),
        report(CANCELLED, attempt=1, t=3, error=stopped),
        report(DONE, attempt=2, t=4, sheep_id="gpu-1"),
    )
    assert kinds == ["queued", "running", "cancelled"]
    assert (status.state, status.attempt, status.error) == (CANCELLED, 2, stopped)


def test_a_cancellation_does_not_reopen_an_ended_job():
    status, kinds = run(*LIFECYCLE, report(CANCELLED, t=9))
    assert (status.state, kinds[-1]) == (DONE, "done")


def test_a_queued_report_that_accepts_the_job_announces_accepted_first():
    """The gateway reports a job it queues as it declares it once: both events still go out."""
    both = report(QUEUED, t=1, accepted_at=at(0))
    status, kinds = run(*both.implied())
    assert kinds == ["accepted", "queued"]
    assert status is not None
    assert (status.accepted_at, status.enqueued_at) == (at(0), at(1))
    # Repeated after the job went on, it announces nothing again.
    later, _ = run(report(RUNNING, t=2), start=status)
    assert run(*both.implied(), start=later)[1] == []


def test_only_a_queued_report_may_accept_the_job():
    with pytest.raises(ValueError, match="accepted_at belongs on a queued report only"):
        report(RUNNING, accepted_at=at(0))


def test_an_outcome_that_started_the_job_announces_running_first():
    """A sheep reports a job that ended quickly once: both events still go out, in order."""
    queued, _ = run(report(QUEUED, t=1))
    error = ErrorInfo(type="ValueError", message="bad input")
    failed = report(FAILED, t=3, started_at=at(2), sheep_id="s1", error=error)
    status, kinds = run(*failed.implied(), start=queued)
    assert kinds == ["running", "failed"]
    assert status is not None
    assert (status.started_at, status.finished_at, status.error) == (at(2), at(3), error)
    # Repeated, or after a running report that did go out, it announces running no more.
    assert run(*failed.implied(), start=status)[1] == []
    running, _ = run(report(RUNNING, t=2, sheep_id="s1"), start=queued)
    assert run(*failed.implied(), start=running)[1] == ["failed"]


def test_only_an_outcome_may_say_when_the_job_started():
    with pytest.raises(ValueError, match="started_at belongs on an outcome report only"):
        report(RUNNING, started_at=at(0))
