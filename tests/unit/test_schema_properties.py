"""Properties of the wire formats, checked with Hypothesis: whatever a model accepts survives
a JSON round trip unchanged, and job ids follow the documented rule and cannot escape."""

from __future__ import annotations

import posixpath
import string
from datetime import UTC, timedelta, timezone
from typing import Any, get_args

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.__main__ import EXPORTED
from schemas.events import (
    CLOUDEVENT_TYPE_PREFIX,
    STATUS_KINDS,
    JobEvent,
    JobRejectedEvent,
    JobRejection,
    RejectionReason,
    SheepState,
    StatusReport,
)
from schemas.job import JobDispatch, JobRequest, JobSpec, ModelRef
from schemas.layout import inputs_prefix, job_key, parse_key
from schemas.names import JobId, RelativePath, is_job_id
from schemas.runner import RunnerMessage, SheepMessage
from schemas.s3 import S3EventNotification
from schemas.status import ErrorInfo, JobState, JobStatus, Progress
from schemas.submission import SubmissionReply
from services.common.params import parse_job_id
from services.common.problems import Problem

# -- strategies ---------------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", fullmatch=True)
"""Job ids, model names, versions and sheep ids."""
paths = st.lists(names, min_size=1, max_size=4).map("/".join)
texts = st.text(max_size=50)
# Mostly values a model may accept, but any float or integer at all, NaN and infinities
# included: whatever a model accepts must be something JSON can carry back.
seconds = st.floats(min_value=0) | st.floats()
fractions = st.floats(0, 1) | st.floats()
counts = st.integers(min_value=0) | st.integers()
# RFC 3339 offsets are whole minutes, so those are all JSON can carry.
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda m: timezone(timedelta(minutes=m)))
aware_times = st.datetimes(timezones=st.just(UTC) | offsets)
times = st.datetimes() | aware_times
json_values = st.recursive(
    st.none() | st.booleans() | counts | st.floats(allow_nan=False, allow_infinity=False) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=10,
)
"""What the free-form fields (payload, metadata, parameters) hold: JSON values."""
urls = st.builds(
    "http{}://{}.example{}/{}".format,
    st.sampled_from(["", "s"]),
    st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
    st.sampled_from(["", ":8080"]),
    st.from_regex(r"[a-z0-9/]{0,20}", fullmatch=True),
)


def accepted(
    model: type[BaseModel] | TypeAdapter,
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[Any]:
    """Instances built from drawn fields; those the model refuses are left out, so that the
    properties below are about whatever a model accepts."""
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)

    def build(fields: dict[str, Any]) -> Any:
        try:
            return adapter.validate_python(fields)
        except ValidationError:
            return None

    return (
        st.fixed_dictionaries(required, optional=optional or {})
        .map(build)
        .filter(lambda value: value is not None)
    )


model_refs = accepted(ModelRef, {"name": names}, {"version": names})
errors = accepted(ErrorInfo, {"type": texts, "message": texts}, {"traceback": texts | st.none()})
progress = accepted(Progress, {"fraction": fractions}, {"message": texts | st.none()})
job_fields = {
    "sheep_id": names | st.none(),
    "inputs": st.lists(paths, max_size=3) | st.none(),
    "callback_url": urls | st.none(),
    "timeout": seconds | st.none(),
    "metadata": st.dictionaries(texts, json_values, max_size=3),
}
job_requests = accepted(
    JobRequest, {"job_id": names, "model": model_refs}, {**job_fields, "payload": json_values}
)
job_specs = accepted(
    JobSpec,
    {
        "job_id": names,
        "model": model_refs,
        "request_digest": st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
        "declared_at": times,
    },
    job_fields,
)
job_dispatches = accepted(
    JobDispatch, {"job": job_specs, "queued_at": times}, {"timeout": seconds | st.none()}
)
job_statuses = accepted(
    JobStatus,
    {"job_id": names, "state": st.sampled_from(JobState), "model": model_refs},
    {
        "sheep_id": names | st.none(),
        "attempt": counts,
        **{stamp: times | st.none() for stamp in ("accepted_at", "enqueued_at", "started_at")},
        "finished_at": times | st.none(),
        "error": errors | st.none(),
        "progress": progress | st.none(),
        "missing_inputs": st.lists(paths, max_size=3) | st.none(),
    },
)
status_reports = accepted(
    StatusReport,
    {"job_id": names, "model": model_refs},
    {
        "state": st.sampled_from(JobState) | st.none(),
        "attempt": counts,
        "sheep_id": names | st.none(),
        "time": times,
        "error": errors | st.none(),
        "progress": progress | st.none(),
    },
)
event_types = st.sampled_from(STATUS_KINDS).map(CLOUDEVENT_TYPE_PREFIX.__add__) | texts
job_events = accepted(
    JobEvent,
    {"source": texts, "type": event_types, "subject": names, "data": job_statuses},
    {"id": texts, "time": times},
)
rejections = accepted(
    JobRejection,
    {
        "job_id": names | st.none(),
        "reason": st.sampled_from(list(get_args(RejectionReason))) | texts,
        "detail": texts,
    },
    {"errors": st.lists(st.fixed_dictionaries({"field": texts, "message": texts}), max_size=2)},
)
job_rejected_events = accepted(
    JobRejectedEvent,
    {"source": texts, "data": rejections},
    {"id": texts, "time": times, "subject": names | st.none()},
)
submission_replies = accepted(
    SubmissionReply,
    {
        "outcome": st.sampled_from(["accepted", "repeated", "rejected"]) | texts,
        "job_id": names | st.none(),
    },
    {"queued": st.booleans(), "rejection": rejections | st.none()},
)
sheep_states = accepted(
    SheepState,
    {
        "sheep_id": names,
        "kind": st.sampled_from(["bare", "docker"]),
        "runner_alive": st.booleans(),
        "interval": seconds,
    },
    {"model": model_refs | st.none(), "current_job": names | st.none(), "time": aware_times},
)
accounting = st.fixed_dictionaries(
    {
        "wall_seconds": seconds,
        "cpu_user_seconds": seconds,
        "cpu_system_seconds": seconds,
        "max_rss_bytes": counts | st.none(),
    }
)
runner_messages = st.one_of(
    accepted(
        TypeAdapter(RunnerMessage),
        {"type": st.just("ready"), "model": texts, "load_seconds": seconds, "pid": counts},
    ),
    accepted(
        TypeAdapter(RunnerMessage),
        {"type": st.just("progress"), "job_id": names, "fraction": fractions},
        {"message": texts | st.none()},
    ),
    accepted(
        TypeAdapter(RunnerMessage), {"type": st.just("heartbeat")}, {"job_id": names | st.none()}
    ),
    accepted(
        TypeAdapter(RunnerMessage),
        {"type": st.just("done"), "job_id": names, "accounting": accounting},
    ),
    accepted(
        TypeAdapter(RunnerMessage),
        {"type": st.just("failed"), "error": errors},
        {"job_id": names | st.none()},
    ),
)
sheep_messages = st.one_of(
    accepted(TypeAdapter(SheepMessage), {"type": st.just("hello"), "sheep_id": texts}),
    accepted(
        TypeAdapter(SheepMessage),
        {"type": st.just("run"), "job_id": names, "inputs_dir": texts, "outputs_dir": texts},
        {"parameters": st.dictionaries(texts, json_values, max_size=3)},
    ),
)
# Unknown fields are kept (a newer S3 service must not break parsing); "x-" keeps them apart
# from the known ones.
extras = st.dictionaries(texts.map("x-{}".format), json_values, max_size=2)
s3_objects = st.builds(
    lambda fields, extra: {**extra, **fields},
    st.fixed_dictionaries(
        {"key": texts},
        optional={"size": counts | st.none(), "eTag": texts, "contentType": texts},
    ),
    extras,
)
s3_records = st.builds(
    lambda name, bucket, obj, extra: {
        **extra,
        "eventName": name,
        "s3": {"bucket": {"name": bucket}, "object": obj},
    },
    st.sampled_from(["s3:ObjectCreated:Put", "s3:ObjectRemoved:Delete"]) | texts,
    texts,
    s3_objects,
    extras,
)
s3_events = accepted(
    S3EventNotification,
    {"Records": st.lists(s3_records, min_size=1, max_size=3)},
    {"EventName": texts, "Key": texts},
)

WIRE: dict[str, tuple[TypeAdapter, st.SearchStrategy[Any]]] = {
    "job-request": (TypeAdapter(JobRequest), job_requests),
    "job-spec": (TypeAdapter(JobSpec), job_specs),
    "job-dispatch": (TypeAdapter(JobDispatch), job_dispatches),
    "job-status": (TypeAdapter(JobStatus), job_statuses),
    "status-report": (TypeAdapter(StatusReport), status_reports),
    "job-event": (TypeAdapter(JobEvent), job_events),
    "job-rejected-event": (TypeAdapter(JobRejectedEvent), job_rejected_events),
    "submission-reply": (TypeAdapter(SubmissionReply), submission_replies),
    "sheep-state": (TypeAdapter(SheepState), sheep_states),
    "s3-event": (TypeAdapter(S3EventNotification), s3_events),
    "runner-message": (TypeAdapter(RunnerMessage), runner_messages),
    "sheep-message": (TypeAdapter(SheepMessage), sheep_messages),
}

# -- round trips --------------------------------------------------------------------------------


def test_every_exported_wire_format_has_a_strategy():
    assert set(WIRE) == set(EXPORTED) - {"config"}


@pytest.mark.parametrize("name", sorted(WIRE))
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_a_model_accepts_survives_a_json_round_trip(name: str, data: st.DataObject):
    adapter, strategy = WIRE[name]
    value = data.draw(strategy)
    assert adapter.validate_json(adapter.dump_json(value, by_alias=True)) == value


# -- job ids ------------------------------------------------------------------------------------

ALLOWED = frozenset(string.ascii_letters + string.digits + "._-")
DOCUMENTED_RULE = "1-128 characters of [A-Za-z0-9._-], starting with a letter or digit"
DATA_ROOT = "/srv/shepherd/data/sheep-1"

candidate_ids = st.one_of(
    names,
    st.text(alphabet=st.sampled_from("aZ09._-/\\ %\n\x00é"), max_size=140),
    st.text(max_size=140),
    st.sampled_from(["", ".", "..", "...", "a" * 128, "a" * 129, "../a", "a/..", "-a", "_a"]),
)


def follows_the_rule(value: str) -> bool:
    """The documented rule, spelled out without a regular expression."""
    return (
        1 <= len(value) <= 128
        and set(value) <= ALLOWED
        and value[0].isascii()
        and value[0].isalnum()
        and value not in {".", ".."}
    )


@settings(max_examples=500)
@given(candidate_ids)
def test_a_job_id_is_accepted_exactly_when_it_follows_the_documented_rule(value: str):
    try:
        accepted_id = TypeAdapter(JobId).validate_python(value)
    except ValidationError as exc:
        assert not follows_the_rule(value), value
        assert not is_job_id(value)
        [error] = exc.errors()
        assert error["type"] in {"string_pattern_mismatch", "value_error"}
        with pytest.raises(Problem) as problem:
            parse_job_id(value)
        assert problem.value.status == 400
        assert problem.value.detail == f"invalid job id {value!r}: {DOCUMENTED_RULE}"
        return
    assert accepted_id == value
    assert follows_the_rule(value), value
    assert is_job_id(value)
    assert parse_job_id(value) == value


@given(names)
def test_an_accepted_job_id_never_escapes_its_directory_or_its_prefix(value: str):
    directory = posixpath.normpath(posixpath.join(DATA_ROOT, value))  # "..", "." resolved
    assert posixpath.dirname(directory) == DATA_ROOT
    assert posixpath.basename(directory) == value
    assert inputs_prefix(value) == f"{value}/inputs/"
    assert posixpath.normpath(inputs_prefix(value)).split("/")[0] == value
    parsed = parse_key(job_key(value))
    assert parsed is not None and parsed.job_id == value


@given(candidate_ids)
def test_a_refused_job_id_is_refused_naming_the_field(value: str):
    if follows_the_rule(value):
        return
    with pytest.raises(ValidationError) as error:
        JobRequest.model_validate({"job_id": value, "model": {"name": "echo"}})
    assert [e["loc"] for e in error.value.errors()] == [("job_id",)]
    assert parse_key(f"{value}/inputs/x") is None


long_paths = st.lists(names, min_size=1, max_size=12).map("/".join)


@given(long_paths | candidate_ids)
def test_an_accepted_relative_path_fits_in_an_object_key_of_any_job(value: str):
    try:
        TypeAdapter(RelativePath).validate_python(value)
    except ValidationError:
        return
    longest_job_id = "a" * 128
    assert len(f"{longest_job_id}/outputs/{value}".encode()) <= 1024  # S3's limit


@pytest.mark.parametrize("name", ["JobId", "RelativePath"])
@settings(max_examples=300)
@given(value=long_paths | candidate_ids)
def test_what_the_json_schema_documents_is_what_validation_accepts(name: str, value: str):
    adapter = TypeAdapter({"JobId": JobId, "RelativePath": RelativePath}[name])
    try:
        adapter.validate_python(value)
        accepted = True
    except ValidationError:
        accepted = False
    # JSON Schema patterns are ECMA-262 ("$" ends the input), so not Python's re.
    assert accepted == jsonschema_rs.is_valid(adapter.json_schema(), value)
