"""Gateway bearer-token auth: configuration, the middleware's answers, minting, OpenAPI."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from schemas.config import GatewayConfig, TokenConfig, token_digest
from schemas.config_file import ConfigError, load_config
from services.cli import main as shepherd
from services.gateway.auth import OPEN_PATHS, bearer_auth, mint_token
from services.gateway.openapi import build_openapi

READ = "shp_read-token-0123456789abcdef"
SUBMIT = "shp_submit-token-0123456789abcdef"
BOTH = "shp_both-token-0123456789abcdef"


def gateway(**settings: object) -> GatewayConfig:
    tokens = [
        TokenConfig(name="reader", scopes=["read"], sha256=token_digest(READ)),
        TokenConfig(name="submitter", scopes=["submit"], token=SecretStr(SUBMIT)),
        TokenConfig(name="ci", scopes=["read", "submit"], sha256=token_digest(BOTH)),
    ]
    return GatewayConfig(**{"auth": "on", "tokens": tokens, **settings})


def client(config: GatewayConfig) -> httpx.AsyncClient:
    """The gateway's route shapes behind its auth middleware; every route answers 200."""

    async def ok(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/start-job", ok, methods=["POST"]),
            Route("/jobs/{job_id}/status", ok, methods=["GET"]),
            Route("/jobs/{job_id}/input/{file:path}", ok, methods=["GET", "PUT"]),
            Route("/jobs/{job_id}/cancel", ok, methods=["POST"]),
            Route("/jobs/{job_id}", ok, methods=["DELETE"]),
            Route("/status", ok),
            Route("/metrics", ok),
            Route("/health", ok),
            Route("/openapi.json", ok),
            Route("/asyncapi.json", ok),
            Route("/docs", ok),
        ],
        middleware=bearer_auth(config),
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


READS = [("GET", "/jobs/j1/status"), ("GET", "/jobs/j1/input/a.png"), ("GET", "/status")]
WRITES = [
    ("POST", "/start-job"),
    ("PUT", "/jobs/j1/input/a.png"),
    ("POST", "/jobs/j1/cancel"),
    ("DELETE", "/jobs/j1"),
]


@pytest.mark.parametrize(("method", "path"), [*READS, *WRITES, ("GET", "/metrics")])
async def test_no_token_is_401_problem_with_a_bearer_challenge(method, path):
    async with client(gateway()) as http:
        response = await http.request(method, path)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["detail"]


@pytest.mark.parametrize(
    "header",
    [f"Bearer {READ}x", "Bearer shp_not-a-configured-token-at-all", f"Basic {READ}", "Bearer "],
)
async def test_an_unknown_or_malformed_token_is_401(header, caplog):
    caplog.set_level(logging.DEBUG)
    async with client(gateway()) as http:
        response = await http.get("/jobs/j1/status", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    presented = header.partition(" ")[2]
    if presented:  # neither answered nor logged
        assert presented not in response.text and presented not in caplog.text


async def test_read_scope_reads_and_cannot_submit():
    async with client(gateway()) as http:
        for method, path in READS:
            assert (await http.request(method, path, headers=bearer(READ))).status_code == 200
        for method, path in WRITES:
            response = await http.request(method, path, headers=bearer(READ))
            assert response.status_code == 403, (method, path)
            problem = response.json()
            assert problem["required_scope"] == "submit"
            assert "submit" in problem["detail"] and "reader" in problem["detail"]
            assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_submit_scope_submits_and_cannot_read():
    async with client(gateway()) as http:
        for method, path in WRITES:
            assert (await http.request(method, path, headers=bearer(SUBMIT))).status_code == 200
        response = await http.get("/jobs/j1/status", headers=bearer(SUBMIT))
    assert response.status_code == 403
    assert response.json()["required_scope"] == "read"


async def test_both_scopes_do_everything_and_the_scheme_is_case_insensitive():
    async with client(gateway()) as http:
        for method, path in [*READS, *WRITES]:
            response = await http.request(method, path, headers={"Authorization": f"bearer {BOTH}"})
            assert response.status_code == 200, (method, path)


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/asyncapi.json", "/docs"])
async def test_health_and_the_api_description_stay_open(path):
    async with client(gateway()) as http:
        assert (await http.get(path)).status_code == 200


async def test_unknown_paths_need_a_token_too():
    async with client(gateway()) as http:
        assert (await http.get("/admin")).status_code == 401


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
async def test_auto_is_off_on_loopback(host):
    config = GatewayConfig(host=host)
    assert not config.auth_enabled
    async with client(config) as http:
        assert (await http.post("/start-job")).status_code == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "gateway.internal"])
def test_auto_is_on_when_the_gateway_is_reachable_from_elsewhere(host):
    assert gateway(host=host, auth="auto").auth_enabled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gateway:\n  auth: 'on'\n", "gateway.auth is on"),
        ("gateway:\n  host: 0.0.0.0\n", "gateway.host 0.0.0.0 is not a loopback address"),
    ],
)
def test_auth_without_tokens_is_a_config_error_saying_what_to_do(tmp_path, text, expected):
    path = tmp_path / "shepherd.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert expected in str(error.value)
    assert "shepherd token" in str(error.value)


def test_exposed_gateway_without_auth_warns_loudly(caplog):
    config = GatewayConfig(host="0.0.0.0", auth="off")
    assert not config.auth_enabled
    assert bearer_auth(config) == []
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "AUTH IS OFF" in warning.getMessage() and "0.0.0.0" in warning.getMessage()


def test_loopback_gateway_without_auth_does_not_warn(caplog):
    assert bearer_auth(GatewayConfig(auth="off")) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_plain_token_from_the_environment_is_hashed_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CI_TOKEN", BOTH)
    path = tmp_path / "shepherd.yml"
    path.write_text(
        "gateway:\n  tokens:\n    - name: ci\n      scopes: [read, submit]\n"
        "      token: ${CI_TOKEN}\n"
    )
    config = load_config(path)
    [token] = config.gateway.tokens
    assert token.sha256 == token_digest(BOTH)
    assert token.token is None
    assert BOTH not in config.model_dump_json() + repr(config)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"scopes": ["read"], "token": "shp_short"}, "shorter than 16"),
        ({"scopes": ["read"], "token": BOTH, "sha256": token_digest(BOTH)}, "not both"),
        ({"scopes": ["read"]}, "give sha256"),
        ({"scopes": ["admin"], "token": BOTH}, "'read' or 'submit'"),
        ({"scopes": [], "token": BOTH}, "at least 1"),
        ({"scopes": ["read"], "sha256": "abc"}, "pattern"),
    ],
)
def test_bad_token_entries_are_refused_without_quoting_the_token(entry, message):
    with pytest.raises(ValidationError) as error:
        GatewayConfig(tokens=[{"name": "ci", **entry}])
    assert message in str(error.value)
    assert "shp_" not in str(error.value)


def test_the_same_token_twice_is_refused():
    with pytest.raises(ValidationError, match="same token"):
        GatewayConfig(
            tokens=[
                {"name": "a", "scopes": ["read"], "token": BOTH},
                {"name": "b", "scopes": ["submit"], "sha256": token_digest(BOTH)},
            ]
        )


def test_minted_tokens_are_long_random_and_recognisable():
    first, second = mint_token(), mint_token()
    assert first != second
    assert first.startswith("shp_") and len(first) >= 40


async def test_shepherd_token_prints_a_token_and_the_entry_that_admits_it(capsys, tmp_path: Path):
    assert shepherd(["token", "--scopes", "read,submit", "--name", "ci"]) == 0
    token, _, rest = capsys.readouterr().out.partition("\n")
    [entry] = yaml.safe_load(rest)
    assert entry == {"name": "ci", "scopes": ["read", "submit"], "sha256": token_digest(token)}
    assert token not in rest

    path = tmp_path / "shepherd.yml"
    path.write_text(yaml.safe_dump({"gateway": {"auth": "on", "tokens": [entry]}}))
    async with client(load_config(path).gateway) as http:
        assert (await http.post("/start-job", headers=bearer(token))).status_code == 200
        assert (await http.get("/jobs/j/status", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize("scopes", ["admin", "read,write", ""])
def test_shepherd_token_refuses_unknown_scopes(scopes, capsys):
    with pytest.raises(SystemExit) as exit_:
        shepherd(["token", "--scopes", scopes, "--name", "ci"])
    assert exit_.value.code == 2
    assert "read, submit" in capsys.readouterr().err


def test_openapi_declares_bearer_auth_on_every_protected_operation():
    spec = build_openapi()
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if path in OPEN_PATHS:  # /health and the API's own description
                assert "security" not in operation
                continue
            scope = "read" if method == "get" else "submit"
            assert operation["security"] == [{"bearer": [scope]}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)


def test_openapi_documents_the_upload_route():
    upload = build_openapi()["paths"]["/jobs/{job_id}/input/{file}"]["put"]
    assert {"201", "400", "401", "403", "413"} <= set(upload["responses"])
    assert upload["security"] == [{"bearer": ["submit"]}]
    assert [p["name"] for p in upload["parameters"]] == ["job_id", "file"]
