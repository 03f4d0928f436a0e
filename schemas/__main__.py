"""Export the wire formats.

python -m schemas export DIR      JSON Schema of every message, body and the config, and
                                  the AsyncAPI document (asyncapi.json)
python -m schemas definitions     RabbitMQ definitions of the default namespace (stdout):
                                  its topology and its users' permissions
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel, TypeAdapter

from schemas import permissions
from schemas.asyncapi import build_asyncapi
from schemas.broker_names import Names
from schemas.config import Config
from schemas.events import JobEvent, JobRejectedEvent, SheepState, StatusReport
from schemas.job import JobDispatch, JobRequest, JobSpec
from schemas.reference import render
from schemas.runner import RunnerMessage, SheepMessage
from schemas.s3 import S3EventNotification
from schemas.status import JobStatus
from schemas.submission import SubmissionReply
from schemas.topology import build_topology, to_definitions

EXPORTED: dict[str, type[BaseModel] | TypeAdapter] = {
    "job-request": JobRequest,
    "job-spec": JobSpec,
    "job-dispatch": JobDispatch,
    "job-status": JobStatus,
    "status-report": StatusReport,
    "job-event": JobEvent,
    "job-rejected-event": JobRejectedEvent,
    "submission-reply": SubmissionReply,
    "sheep-state": SheepState,
    "s3-event": S3EventNotification,
    "runner-message": TypeAdapter(RunnerMessage),
    "sheep-message": TypeAdapter(SheepMessage),
    "config": Config,
}


def json_schema(model: type[BaseModel] | TypeAdapter) -> dict:
    if isinstance(model, TypeAdapter):
        return model.json_schema()
    return model.model_json_schema()


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EXPORTED.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(json_schema(model), indent=2) + "\n")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(json.dumps(build_asyncapi(), indent=2) + "\n")
    written.append(path)
    return written


def definitions() -> dict:
    names = Names()
    topology = to_definitions(build_topology(names, delivery_limit=5))
    return topology | permissions.to_definitions(permissions.grants(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("export", help="write JSON Schema files and the AsyncAPI document").add_argument(
        "directory", type=Path
    )
    sub.add_parser("definitions", help="print RabbitMQ definitions")
    sub.add_parser("reference", help="print the configuration reference")
    args = parser.parse_args(argv)
    if args.command == "export":
        for path in export(args.directory):
            print(path)
    elif args.command == "reference":
        print(render(), end="")
    else:
        json.dump(definitions(), sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
