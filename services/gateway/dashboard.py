"""The dashboard, ``GET /ui``: jobs, one job, sheep, an overview and a submit form, live in
the browser.

    routes = [..., *dashboard_routes()]

Static files from the package (``services/gateway/ui/``): no build step, no CDN. The page and
its files are open, as they hold no data; the page asks for a bearer token, keeps it in the
tab's session storage and sends it with every API call, so the API's auth rules apply to it
as to any client (no cookie, hence nothing to forge across sites). Everything is served with
a strict Content-Security-Policy: scripts, styles and connections from the gateway only, no
inline script or style, no frames.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from services.gateway.api_docs import Answer, Doc, Docs

#: Where the page's script modules and style sheet are served.
UI_STATIC = "/ui/static"
#: The page, its script modules and its style sheet.
UI_FILES = Path(__file__).parent / "ui"
#: What a browser may load for the dashboard: only the gateway's own files and API.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

DOCS: Docs = {
    ("GET", "/ui"): Doc(
        "The dashboard: jobs, one job, sheep, an overview and a submit form (a web page)",
        {200: Answer("An HTML page", media_type="text/html")},
        description="Open, like its script and styles under /ui/static/: the page asks for a "
        "bearer token and sends it with each API call it makes.",
    ),
}


class _Secured(StaticFiles):
    """Static files with the dashboard's security headers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
                ]
            await send(message)

        await super().__call__(scope, receive, secured)


def dashboard_routes() -> list[BaseRoute]:
    async def page(_: Request) -> Response:
        return FileResponse(UI_FILES / "index.html", headers=SECURITY_HEADERS)

    return [
        Route("/ui", page, methods=["GET"]),
        Mount(UI_STATIC, _Secured(directory=UI_FILES), name="ui-files"),
    ]
