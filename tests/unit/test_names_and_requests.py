"""Validation of everything a client can put in a job request."""

import pytest
from pydantic import ValidationError

from schemas.job import JobRequest, JobSpec
from schemas.layout import parse_key

VALID = {"job_id": "job-1", "model": {"name": "echo", "version": "1"}}


def request(**changes) -> dict:
    return {**VALID, **changes}


@pytest.mark.parametrize("job_id", ["a", "A", "0", "job-1", "x.y_z-0", "a" * 128, "1.2.3", "a..b"])
def test_valid_job_ids_are_accepted(job_id):
    assert JobRequest.model_validate(request(job_id=job_id)).job_id == job_id


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        ".",
        "..",
        "-a",
        "_a",
        ".hidden",
        "a/b",
        "../etc",
        "a b",
        "é",
        "a" * 129,
        "a\n",
        "a\\b",
        "a:b",
        "%2e%2e",
    ],
)
def test_invalid_job_ids_are_refused_naming_the_field(job_id):
    with pytest.raises(ValidationError) as error:
        JobRequest.model_validate(request(job_id=job_id))
    assert error.value.errors()[0]["loc"] == ("job_id",)


def test_unknown_fields_are_refused_by_name():
    with pytest.raises(ValidationError) as error:
        JobRequest.model_validate(request(priorty=3))
    [problem] = error.value.errors()
    assert problem["loc"] == ("priorty",)
    assert problem["type"] == "extra_forbidden"


def test_unknown_fields_in_the_model_are_refused():
    with pytest.raises(ValidationError) as error:
        JobRequest.model_validate(request(model={"name": "echo", "tag": "1"}))
    assert error.value.errors()[0]["loc"] == ("model", "tag")


@pytest.mark.parametrize("field", ["name", "version"])
@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "../x", "x y", "-x", "a" * 129])
def test_model_names_and_versions_must_be_single_safe_segments(field, value):
    model = {"name": "echo", "version": "1", field: value}
    with pytest.raises(ValidationError) as error:
        JobRequest.model_validate(request(model=model))
    assert error.value.errors()[0]["loc"] == ("model", field)


def test_version_defaults_to_latest():
    assert JobRequest.model_validate(request(model={"name": "echo"})).model.version == "latest"


@pytest.mark.parametrize("inputs", [["../x"], ["/abs"], ["a//b"], ["a/./b"], [""]])
def test_declared_inputs_cannot_escape_the_inputs_prefix(inputs):
    with pytest.raises(ValidationError) as error:
        JobRequest.model_validate(request(inputs=inputs))
    assert error.value.errors()[0]["loc"][0] == "inputs"


def test_timeout_must_be_positive():
    with pytest.raises(ValidationError) as error:
        JobRequest.model_validate(request(timeout=0))
    assert error.value.errors()[0]["loc"] == ("timeout",)


def test_digest_tells_identical_requests_from_different_ones():
    first = JobRequest.model_validate(request(payload={"a": 1, "b": 2}))
    same = JobRequest.model_validate(request(payload={"b": 2, "a": 1}))
    other = JobRequest.model_validate(request(payload={"a": 2}))
    assert first.digest() == same.digest()
    assert first.digest() != other.digest()


def test_a_payload_adds_input_json_to_declared_inputs():
    from datetime import UTC, datetime

    req = JobRequest.model_validate(request(payload="hi", inputs=["image.png"]))
    spec = JobSpec.from_request(req, datetime.now(UTC))
    assert spec.inputs == ["image.png", "input.json"]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("j1/inputs/input.json", ("j1", "input", "input.json")),
        ("j1/inputs/dir/a.png", ("j1", "input", "dir/a.png")),
        ("j1/job.json", ("j1", "job", "")),
        ("j1/status.json", ("j1", "status", "")),
        ("j1/outputs/output.json", ("j1", "output", "output.json")),
        ("j1/other/x", None),
        ("../inputs/x", None),
        ("j1/inputs/../x", None),
        ("j1/inputs/", None),
        ("j1", None),
    ],
)
def test_object_keys_outside_the_layout_are_recognised(key, expected):
    parsed = parse_key(key)
    assert (parsed and (parsed.job_id, parsed.part, parsed.path)) == expected
