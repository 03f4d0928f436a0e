"""The OpenAPI 3.1 document of the HTTP API, built from the pydantic models in ``schemas``."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.job import JobRequest
from schemas.status import JobStatus

_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
}
_FILE = {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}
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


def build_openapi() -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(JobRequest, "validation"), (JobStatus, "serialization")],
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
            "state": {"type": ["string", "null"], "enum": ["queued", None]},
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["job_id", "links"],
    }
    components["Readiness"] = {
        "type": "object",
        "properties": {"ready": {"type": "boolean"}, "state": {"type": "string"}},
        "required": ["ready", "state"],
    }
    job = [_JOB_ID]
    errors = {"400": _PROBLEM, "404": _PROBLEM, "503": _PROBLEM}
    return {
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
                            "schema": {"type": "number", "minimum": 0, "maximum": 300},
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
        },
        "components": {"schemas": components},
    }


def docs_page(spec: dict[str, Any]) -> str:
    """A self-contained page listing the endpoints (no scripts from elsewhere)."""
    rows = "".join(
        f"<tr><td><code>{method.upper()}</code></td><td><code>{path}</code></td>"
        f"<td>{operation.get('summary', '')}</td></tr>"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Shepherd API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:4px 12px}</style></head>"
        f"<body><h1>Shepherd API</h1><p>{spec['info']['description']}</p>"
        f"<table>{rows}</table><p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>"
        "</p></body></html>"
    )
