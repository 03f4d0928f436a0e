"""The OpenAPI 3.1 document of the HTTP API, built from the pydantic models in ``schemas``.

Every operation outside ``auth.OPEN_PATHS`` gets the bearer scheme with the scope its method
needs, so operations added later are documented as protected without being listed.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from schemas.events import JobEvent, JobRejectedEvent
from schemas.job import JobRequest
from schemas.names import JobId, RelativePath
from schemas.status import JobState, JobStatus
from services.gateway.auth import OPEN_PATHS, required_scope
from services.gateway.openapi_webhooks import webhooks_section
from services.gateway.streams import MAX_OFFSET_DIGITS, TYPES

_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": TypeAdapter(JobId).json_schema(),
}
_FILE = {
    "name": "file",
    "in": "path",
    "required": True,
    "schema": TypeAdapter(RelativePath).json_schema(),
}
_PROBLEM = {
    "description": "Problem details (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def _json(ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def _any(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"*/*": {"schema": {}}}}


def _object(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "Resume after this event (the id of the last one received): every event "
    "published since is sent, none twice. Browsers' EventSource sends it when it reconnects. "
    "Empty: as if absent.",
    "schema": {"type": "string", "pattern": f"^[0-9]{{0,{MAX_OFFSET_DIGITS}}}$"},
}
_EVENT_STREAM_TEXT = (
    "Server-sent events. Each event: `id` its offset in the event history (send it back as "
    "Last-Event-ID to resume), `event` its kind (`job.accepted`, `job.queued`, "
    "`job.running`, `job.progress`, `job.done`, `job.failed`, `job.cancelled`, ...), `data` "
    "the CloudEvent as published on AMQP (`data.data` is the job's status). A comment line "
    "every 15 s keeps an idle stream open."
)


def _text(description: str, media_type: str) -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def _event_stream(description: str) -> dict[str, Any]:
    return {
        "description": f"{description} {_EVENT_STREAM_TEXT}",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }


def build_openapi() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [
            (JobRequest, "validation"),
            (JobStatus, "serialization"),
            (JobEvent, "serialization"),
            (JobRejectedEvent, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    components = dict(schemas.get("$defs", {}))
    components["Problem"] = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
        },
        "required": ["title", "status", "detail"],
    }
    components["Accepted"] = {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "state": {
                "type": "string",
                "enum": [state.value for state in JobState],
                "description": "The state the declaration leaves the job in: queued, "
                "accepted while declared inputs are missing, or (a repeat) wherever it got",
            },
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
            "notes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "What the submitter should know: e.g. that the callback_url's "
                "host does not resolve now (each delivery resolves and checks it again)",
            },
        },
        "required": ["job_id", "state", "links", "notes"],
    }
    components["Uploaded"] = {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "file": {"type": "string"},
            "size": {"type": "integer"},
        },
        "required": ["job_id", "file", "size"],
    }
    components["Readiness"] = {
        "type": "object",
        "properties": {"ready": {"type": "boolean"}, "state": {"type": "string"}},
        "required": ["ready", "state"],
    }
    job = [_JOB_ID]
    errors = {"400": _PROBLEM, "404": _PROBLEM, "503": _PROBLEM}
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Shepherd",
            "version": "1",
            "description": "Asynchronous jobs on your own machines: declare a job, put "
            "its inputs in the store, read its outputs when it is ready.",
        },
        "paths": {
            "/start-job": {
                "post": {
                    "summary": "Declare a job",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/JobRequest"}
                            }
                        },
                    },
                    "responses": {
                        "202": _json("Accepted", "A new job"),
                        "200": _json("Accepted", "An identical repeat of a known job"),
                        "409": _PROBLEM,
                        "413": _PROBLEM,
                        "415": _PROBLEM,
                        "422": _PROBLEM,
                        **errors,
                    },
                }
            },
            "/jobs/{job_id}/status": {
                "get": {
                    "summary": "The job's state, model, times, attempt and error",
                    "parameters": job,
                    "responses": {"200": _json("JobStatus", "The status"), **errors},
                }
            },
            "/jobs/{job_id}/cancel": {
                "post": {
                    "summary": "Cancel a job: a queued job never runs, a running one is "
                    "stopped within 2 s; an ended job is left as it is",
                    "parameters": job,
                    "responses": {
                        "200": _json("JobStatus", "The job had already ended; unchanged"),
                        "202": _json("JobStatus", "Cancelled"),
                        **errors,
                    },
                }
            },
            "/jobs/{job_id}": {
                "delete": {
                    "summary": "Cancel a job (as POST /jobs/{job_id}/cancel)",
                    "parameters": job,
                    "responses": {
                        "200": _json("JobStatus", "The job had already ended; unchanged"),
                        "202": _json("JobStatus", "Cancelled"),
                        **errors,
                    },
                }
            },
            "/jobs/{job_id}/ready": {
                "get": {
                    "summary": "Whether the job is terminal (done, failed or cancelled)",
                    "parameters": job,
                    "responses": {"200": _json("Readiness", "Readiness"), **errors},
                }
            },
            "/jobs/{job_id}/wait_ready": {
                "get": {
                    "summary": "Long-poll until the job is terminal",
                    "parameters": [
                        *job,
                        {
                            "name": "timeout",
                            "in": "query",
                            "required": False,
                            "description": "Seconds to wait (default 30); longer waits are "
                            "cut to 300.",
                            "schema": {"type": "number", "minimum": 0},
                        },
                    ],
                    "responses": {
                        "200": _json("JobStatus", "Terminal"),
                        "202": _json("JobStatus", "Not terminal after the timeout"),
                        **errors,
                    },
                }
            },
            "/jobs/{job_id}/result": {
                "get": {
                    "summary": "outputs/output.json, or the list of output files",
                    "parameters": job,
                    "responses": {
                        "200": _any("The file or a listing"),
                        "202": _json("JobStatus", "Not terminal yet"),
                        "409": _PROBLEM,
                        **errors,
                    },
                }
            },
            "/jobs/{job_id}/result/{file}": {
                "get": {
                    "summary": "One output file",
                    "parameters": [*job, _FILE],
                    "responses": {
                        "200": _any("The file"),
                        "202": _json("JobStatus", "Not terminal yet"),
                        "409": _PROBLEM,
                        **errors,
                    },
                }
            },
            "/jobs/{job_id}/input": {
                "get": {
                    "summary": "inputs/input.json, or the list of input files",
                    "parameters": job,
                    "responses": {"200": _any("The file or a listing"), **errors},
                }
            },
            "/jobs/{job_id}/input/{file}": {
                "get": {
                    "summary": "One input file",
                    "parameters": [*job, _FILE],
                    "responses": {"200": _any("The file"), **errors},
                },
                "put": {
                    "summary": "Upload one input file",
                    "description": "The body is streamed into <job_id>/inputs/<file>, up to "
                    "gateway.max_upload_bytes; like an upload straight to the store, it "
                    "queues the job once all its declared inputs are there. An upload over "
                    "the limit is refused with 413 and leaves nothing behind. A job's inputs "
                    "are fixed once it is queued: a later upload is refused with 409, naming "
                    "the job's state.",
                    "parameters": [*job, _FILE],
                    # An empty body is an empty file, which is an input like any other.
                    "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
                    "responses": {
                        "201": _json("Uploaded", "Stored; Location is its URL"),
                        "409": _PROBLEM,
                        "413": _PROBLEM,
                        **errors,
                    },
                },
            },
            "/jobs/{job_id}/events": {
                "get": {
                    "summary": "The job's events, live: its current status, then each "
                    "transition and progress report, ending after done, failed or cancelled",
                    "parameters": [*job, _LAST_EVENT_ID],
                    "responses": {
                        "200": _event_stream(
                            "Without Last-Event-ID, first an event `status` (no id) with the "
                            "job's current status, as GET /jobs/{job_id}/status answers it; "
                            "the stream ends after a terminal event."
                        ),
                        "204": {
                            "description": "Resumed after the job's terminal event: nothing "
                            "more will come (EventSource stops reconnecting)"
                        },
                        **errors,
                    },
                }
            },
            "/events": {
                "get": {
                    "summary": "Every job's events, live, from now on (or after Last-Event-ID)",
                    "parameters": [
                        {
                            "name": "types",
                            "in": "query",
                            "required": False,
                            "description": "Only these kinds, comma-separated: "
                            "`job.done,job.failed`. Default (or empty): all.",
                            "schema": {"type": "string", "pattern": f"^({TYPES.pattern})?$"},
                        },
                        _LAST_EVENT_ID,
                    ],
                    "responses": {
                        "200": _event_stream("Never ends by itself."),
                        "400": _PROBLEM,
                        "503": _PROBLEM,
                    },
                }
            },
            "/status": {
                "get": {
                    "summary": "Every sheep: alive, model, current job, queue depth",
                    "responses": {"200": _object("Fleet status")},
                }
            },
            "/health": {
                "get": {
                    "summary": "Whether the broker and the store are reachable",
                    "responses": {"200": _object("Healthy"), "503": _object("Something is down")},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics of this gateway process",
                    "responses": {"200": _text("The text exposition format", "text/plain")},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _object("OpenAPI 3.1")},
                }
            },
            "/asyncapi.json": {
                "get": {
                    "summary": "The AMQP side of Shepherd: exchanges, queues, messages",
                    "responses": {"200": _object("AsyncAPI 3.0")},
                }
            },
            "/docs": {
                "get": {
                    "summary": "This document as an interactive page (RapiDoc, served here)",
                    "responses": {"200": _text("An HTML page", "text/html")},
                }
            },
        },
        "webhooks": webhooks_section(),
        "components": {"schemas": components},
    }
    return _secure(spec)


def _secure(spec: dict[str, Any]) -> dict[str, Any]:
    """Add the bearer scheme, and to each protected operation its scope and 401/403."""
    spec["components"]["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from gateway.tokens (`shepherd token` mints one). Scopes: "
            "read for GET, submit for every other method. Enforced when gateway.auth is on, "
            "or auto and the gateway binds a non-loopback address.",
        }
    }
    for path, item in spec["paths"].items():
        if path in OPEN_PATHS:
            continue
        for method, operation in item.items():
            operation["security"] = [{"bearer": [required_scope(method)]}]
            operation["responses"].update({"401": _PROBLEM, "403": _PROBLEM})
    return spec
