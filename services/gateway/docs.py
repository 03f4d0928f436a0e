"""The interactive API page, ``GET /docs``: RapiDoc (OpenAPI 3.1, "try" with a bearer token)
reading ``/openapi.json``, its script served by the gateway itself from the
``openapi-ui-bundles`` package, so that the page works where no CDN can be reached.

    routes = [..., *docs_routes()]
"""

from __future__ import annotations

from openapi_ui_bundles import rapidoc
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

DOCS_ASSETS = "/docs/static"
"""Where the page's script is served; open like ``/docs`` itself."""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shepherd API</title>
<script defer src="{DOCS_ASSETS}/rapidoc-min.js"></script>
</head>
<body>
<rapi-doc spec-url="/openapi.json" render-style="read" show-header="false"
  allow-authentication="true" allow-server-selection="false" allow-spec-url-load="false"
  schema-style="tree" sort-endpoints-by="path"></rapi-doc>
</body>
</html>
"""


async def _page(_: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


def docs_routes() -> list[BaseRoute]:
    return [
        Route("/docs", _page, methods=["GET"]),
        Mount(DOCS_ASSETS, StaticFiles(directory=rapidoc.static_path), name="docs-assets"),
    ]
