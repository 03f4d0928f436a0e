"""The interactive API page, ``GET /docs``: RapiDoc (OpenAPI 3.1, "try" with a bearer token)
reading ``/openapi.json``, its script served by the gateway itself from the
``openapi-ui-bundles`` package, so that the page works where no CDN can be reached.

    routes = [..., *docs_routes(build_openapi())]
"""

from __future__ import annotations

from html import escape
from typing import Any

from openapi_ui_bundles import rapidoc
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from services.gateway.api_docs import Answer, Doc, Docs
from services.gateway.auth import OPEN_PREFIX

DOCS_ASSETS = OPEN_PREFIX.rstrip("/")
"""Where the page's script is served; open like ``/docs`` itself."""

DOCS: Docs = {
    ("GET", "/docs"): Doc(
        "The API as an interactive page (RapiDoc, served by the gateway itself)",
        {200: Answer("An HTML page", media_type="text/html")},
    ),
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shepherd API</title>
<script defer src="{assets}/rapidoc-min.js"></script>
</head>
<body>
<rapi-doc spec-url="/openapi.json" render-style="read" show-header="false"
  allow-authentication="true" allow-server-selection="false" allow-spec-url-load="false"
  schema-style="tree" sort-endpoints-by="path"></rapi-doc>
<noscript><h1>Shepherd API</h1><table>{rows}</table>
<p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p></noscript>
</body>
</html>
"""


def page(spec: dict[str, Any]) -> str:
    """The page, with the endpoints listed for a reader without scripts."""
    rows = "".join(
        f"<tr><td><code>{escape(method.upper())}</code></td><td><code>{escape(path)}</code>"
        f"</td><td>{escape(operation.get('summary', ''))}</td></tr>"
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    )
    return _PAGE.format(assets=DOCS_ASSETS, rows=rows)


def docs_routes(spec: dict[str, Any]) -> list[BaseRoute]:
    shown = page(spec)

    async def docs(_: Request) -> HTMLResponse:
        return HTMLResponse(shown)

    return [
        Route("/docs", docs, methods=["GET"]),
        Mount(DOCS_ASSETS, StaticFiles(directory=rapidoc.static_path), name="docs-assets"),
    ]
