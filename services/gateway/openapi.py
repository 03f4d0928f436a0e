"""The OpenAPI 3.1 document of the HTTP API, gathered from the routes' own texts.

Each module that serves routes declares their text next to them (``DOCS``, see
``services.gateway.api_docs``), naming the pydantic models its handlers answer with; this
module puts the texts together and the models' JSON Schemas under ``components.schemas``.
Every operation outside ``auth.OPEN_PATHS`` gets the bearer scheme with the scope its method
needs, so operations added later are documented as protected without being listed.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from schemas.events import JobEvent, JobRejectedEvent
from services.gateway import (
    cancel,
    dashboard,
    docs,
    jobs,
    listing,
    logs,
    operations,
    readiness,
    streams,
    webhook_attempts,
)
from services.gateway.api_docs import PROBLEM, Answer, Doc, Docs
from services.gateway.auth import OPEN_PATHS, required_scope
from services.gateway.openapi_webhooks import webhooks_section

ROUTE_TEXTS: tuple[Docs, ...] = (
    jobs.DOCS,
    listing.DOCS,
    readiness.DOCS,
    logs.DOCS,
    cancel.DOCS,
    streams.DOCS,
    webhook_attempts.DOCS,
    operations.DOCS,
    docs.DOCS,
    dashboard.DOCS,
)
WEBHOOK_MODELS: tuple[type[BaseModel], ...] = (JobEvent, JobRejectedEvent)
"""What the webhooks section refers to: the bodies of the deliveries."""
_REF = "#/components/schemas/{model}"


def openapi_path(path: str) -> str:
    """A route's path as OpenAPI spells it: ``{file:path}`` is ``{file}``."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def build_openapi() -> dict[str, Any]:
    texts = {key: doc for table in ROUTE_TEXTS for key, doc in table.items()}
    models: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for doc in texts.values():
        if doc.body is not None:
            models[doc.body, "validation"] = None
        for answer in doc.answers.values():
            if answer.body is not None:
                models[answer.body, "serialization"] = None
    for model in WEBHOOK_MODELS:
        models[model, "serialization"] = None
    names, schemas = models_json_schema(list(models), ref_template=_REF)

    def ref(model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return dict(names[model, mode])

    paths: dict[str, dict[str, Any]] = {}
    for (method, path), doc in texts.items():
        operation = _operation(doc, ref)
        paths.setdefault(openapi_path(path), {})[method.lower()] = operation
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Shepherd",
            "version": "1",
            "description": "Asynchronous jobs on your own machines: declare a job, put "
            "its inputs in the store, read its outputs when it is ready.",
        },
        "paths": paths,
        "webhooks": webhooks_section(),
        "components": {"schemas": dict(schemas.get("$defs", {}))},
    }
    return _secure(spec, _response(PROBLEM, ref))


def _operation(doc: Doc, ref: Any) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": doc.summary}
    if doc.description:
        operation["description"] = doc.description
    if doc.parameters:
        operation["parameters"] = list(doc.parameters)
    if doc.body is not None:
        schema = ref(doc.body, "validation")
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    elif doc.raw_body:  # an empty body is an empty file, which is an input like any other
        operation["requestBody"] = {"required": False, "content": {"*/*": {"schema": {}}}}
    operation["responses"] = {
        str(code): _response(answer, ref) for code, answer in doc.answers.items()
    }
    return operation


def _response(answer: Answer, ref: Any) -> dict[str, Any]:
    if answer.body is not None:
        schema = ref(answer.body, "serialization")
    elif answer.media_type == "*/*":
        schema = {}
    elif answer.media_type is not None:
        schema = {"type": "string"} if answer.media_type.startswith("text/") else {"type": "object"}
    else:
        return {"description": answer.description}
    media_type = answer.media_type or "application/json"
    content = {media_type: {"schema": schema}}
    if answer.or_text:
        content["text/plain"] = {"schema": {"type": "string"}}
    if answer.or_events:  # each event: its name, id and data
        content["text/event-stream"] = {"schema": {"type": "object"}}
    return {"description": answer.description, "content": content}


def _secure(spec: dict[str, Any], problem: dict[str, Any]) -> dict[str, Any]:
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
            operation["responses"].update({"401": problem, "403": problem})
    return spec
