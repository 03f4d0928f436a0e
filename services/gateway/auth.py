"""Bearer-token auth for the gateway: who may look jobs up and who may change them.

    app = Starlette(routes=..., middleware=bearer_auth(config.gateway))

    curl -H "Authorization: Bearer $TOKEN" http://gateway:5000/jobs/job-1/status

The rule is by method, not by route, so routes added later are covered without being listed:
GET and HEAD need the ``read`` scope, every other method ``submit``. ``/health``,
``/openapi.json``, ``/docs`` and the dashboard's page and files (``/ui``, which hold no data)
stay open. Tokens are configured as SHA-256 digests
(``gateway.tokens``) and a presented token is hashed and compared in constant time; no plain
token is kept or logged. A missing or unknown token is answered 401 with
``WWW-Authenticate: Bearer``, a token without the needed scope 403 naming that scope. The
admitted token's name is left in the request's state (``token_name``, see :func:`token_name`).
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from schemas.config import GatewayConfig, TokenConfig, is_loopback, token_digest
from schemas.config import Scope as TokenScope
from services.common.problems import Problem

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/openapi.json", "/asyncapi.json", "/docs", "/ui"})
OPEN_PREFIX = "/docs/static/"
"""The docs page's own script and styles, open like the page."""
UI_PREFIX = "/ui/"
"""The dashboard's script and styles (``/ui/static/``): open like its page, which holds no
data (it asks for a token, and every API call it makes needs one)."""


def is_open(path: str) -> bool:
    """Whether ``path`` is served without a token."""
    return path in OPEN_PATHS or path.startswith((OPEN_PREFIX, UI_PREFIX))


TOKEN_PREFIX = "shp_"
_REALM = 'Bearer realm="shepherd"'


def required_scope(method: str) -> TokenScope:
    return "read" if method.upper() in {"GET", "HEAD"} else "submit"


def mint_token() -> str:
    """A new random token (256 bits); the prefix lets secret scanners recognise it."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class BearerAuth:
    """ASGI middleware admitting requests whose bearer token has the method's scope."""

    def __init__(self, app: ASGIApp, tokens: Sequence[TokenConfig]) -> None:
        self.app = app
        self.tokens = list(tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        try:
            holder = self._check(scope)
        except Problem as problem:
            client = scope.get("client")
            log.info(
                "refused %s %s from %s: %s",
                scope["method"],
                scope["path"],
                client[0] if client else "?",
                problem.detail,
            )
            await problem.response(scope["path"])(scope, receive, send)
            return
        scope.setdefault("state", {})["token_name"] = holder.name
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> TokenConfig:
        method, path = scope["method"], scope["path"]
        needed = required_scope(method)
        header = Headers(scope=scope).get("authorization")
        if header is None:
            raise Problem(
                401,
                f"{method} {path} needs a bearer token with the {needed} scope: "
                "send Authorization: Bearer <token>",
                headers={"WWW-Authenticate": _REALM},
            )
        kind, _, presented = header.partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            raise Problem(
                401,
                "the Authorization header must be Bearer <token>",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_request"'},
            )
        holder = self._holder(presented.strip())
        if holder is None:
            raise Problem(
                401,
                "the bearer token is not valid",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        if needed not in holder.scopes:
            raise Problem(
                403,
                f"token {holder.name!r} lacks the {needed} scope that {method} {path} needs",
                headers={
                    "WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{needed}"'
                },
                required_scope=needed,
            )
        return holder

    def _holder(self, presented: str) -> TokenConfig | None:
        """The token's entry; every digest is compared, in constant time each."""
        digest = token_digest(presented)
        found = None
        for token in self.tokens:
            if hmac.compare_digest(digest, token.sha256):
                found = token
        return found


def token_name(request: Request) -> str:
    """The name of the token a request was admitted with; empty where auth is off."""
    return getattr(request.state, "token_name", "")


def bearer_auth(config: GatewayConfig) -> list[Middleware]:
    """The gateway's auth middleware, or none when auth is off (loudly, if exposed)."""
    if config.auth_enabled:
        log.info(
            "gateway auth is on: %d token(s) (%s)",
            len(config.tokens),
            ", ".join(token.name for token in config.tokens),
        )
        return [Middleware(BearerAuth, tokens=config.tokens)]
    if not is_loopback(config.host):
        log.warning(
            "GATEWAY AUTH IS OFF on %s:%d, a non-loopback address: anyone who reaches it can "
            "submit jobs and read every input and result. Configure gateway.tokens and set "
            "gateway.auth to auto or on.",
            config.host,
            config.port,
        )
    return []
