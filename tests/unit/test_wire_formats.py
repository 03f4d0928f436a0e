"""S3 notifications captured from the real MinIO, runner frames, events, exports."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.__main__ import definitions, export
from schemas.runner import runner_message, sheep_message
from schemas.s3 import S3EventNotification
from services.sheep.gpus import JobGpus
from services.sheep.usage import measured

FIXTURES = Path(__file__).parent.parent / "fixtures" / "s3"
ROOT = Path(__file__).parents[2]


def load(name: str) -> S3EventNotification:
    return S3EventNotification.model_validate_json((FIXTURES / name).read_bytes())


def test_put_notification_from_minio_parses():
    [record] = load("object-created-put.json").records
    assert record.created and not record.removed
    assert record.s3.bucket.name == "shepherd"
    assert record.s3.object.decoded_key == "job-y4/inputs/input.json"
    assert record.s3.object.size == 7


def test_multipart_notification_decodes_escaped_keys():
    [record] = load("object-created-multipart.json").records
    assert record.event_name == "s3:ObjectCreated:CompleteMultipartUpload"
    assert record.created
    assert record.s3.object.decoded_key == "job-big/inputs/data file+1.bin"


def test_removal_notification_parses():
    [record] = load("object-removed-delete.json").records
    assert record.removed and not record.created


@pytest.mark.parametrize("body", ['{"Records": []}', '{"foo": 1}', '{"Records": [{"s3": {}}]}'])
def test_malformed_notifications_are_refused(body):
    with pytest.raises(ValidationError):
        S3EventNotification.model_validate_json(body)


def test_runner_frames_round_trip():
    frame = (
        b'{"type": "done", "job_id": "j1", "accounting": {"wall_seconds": 1.5, '
        b'"cpu_user_seconds": 1.0, "cpu_system_seconds": 0.25, "max_rss_bytes": 1024}}'
    )
    message = runner_message.validate_json(frame)
    assert message.type == "done"
    assert runner_message.validate_json(runner_message.dump_json(message)) == message
    run = sheep_message.validate_json(
        '{"type": "run", "job_id": "j1", "inputs_dir": "/i", "outputs_dir": "/o"}'
    )
    assert run.parameters == {}


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"{}",
        b'{"type": "explode"}',
        b'{"type": "progress", "job_id": "j", "fraction": 2}',
        b'{"type": "done", "job_id": "../x", "accounting": {}}',
    ],
)
def test_garbage_runner_frames_are_refused(frame):
    with pytest.raises(ValidationError):
        runner_message.validate_json(frame)


def test_definitions_file_matches_the_declared_topology():
    committed = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    assert committed == definitions(), "run `make schemas` to regenerate definitions.json"


def test_definitions_name_the_contract_exchanges():
    exchanges = {e["name"]: e["type"] for e in definitions()["exchanges"]}
    assert exchanges == {
        "shepherd.submit": "fanout",
        "shepherd.jobs": "direct",
        "shepherd.storage": "fanout",
        "shepherd.events": "topic",
        "shepherd.leases": "headers",
        "shepherd.dlx": "topic",
        "shepherd.webhooks": "direct",
    }


def test_export_writes_json_schemas(tmp_path):
    written = export(tmp_path)
    names = {p.name for p in written}
    assert {
        "job-request.schema.json",
        "job-status.schema.json",
        "s3-event.schema.json",
        "runner-message.schema.json",
        "config.schema.json",
    } <= names
    request_schema = json.loads((tmp_path / "job-request.schema.json").read_text())
    assert request_schema["additionalProperties"] is False
    assert request_schema["required"] == ["model"]  # without a job id, the gateway makes one


def test_configuration_reference_is_generated_from_the_schema():
    from schemas.reference import render

    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), "run `make schemas` to regenerate docs/configuration.md"


def test_a_runner_built_before_the_cpu_split_still_reports_its_jobs():
    """An older model image's runner sends ``cpu_seconds`` and its lifetime peak memory: the
    frame is taken, and the job's usage shows neither figure rather than a wrong one."""
    frame = (
        b'{"type": "done", "job_id": "j1", "accounting": {"wall_seconds": 1.5, '
        b'"cpu_seconds": 1.0, "max_rss_bytes": 1024}}'
    )
    done = runner_message.validate_json(frame)
    usage = measured([], 2.0, done.accounting, JobGpus(devices=0))
    assert usage.wall_seconds == 1.5
    assert usage.cpu_user_seconds is None and usage.max_rss_bytes is None
