from pathlib import Path

import pytest

from schemas.config import BareSheepConfig, token_digest
from schemas.config_file import ConfigError, interpolate, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shepherd.yml"
    path.write_text(text)
    return path


def test_defaults_match_the_local_services():
    config = load_config(None)
    assert config.broker.url.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert config.storage.endpoint == "127.0.0.1:9000"
    assert config.storage.bucket == "shepherd"
    assert config.gateway.port == 5000


def test_variables_are_interpolated_with_defaults():
    env = {"HOST": "mq"}
    assert interpolate("amqp://${HOST}:${PORT:-5672}", env) == "amqp://mq:5672"
    parsed = {"broker": {"url": "amqp://${HOST}/"}, "list": ["${HOST}", 1, None]}
    assert interpolate(parsed, env) == {"broker": {"url": "amqp://mq/"}, "list": ["mq", 1, None]}


def test_unset_variable_is_an_error_naming_it_and_its_key(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"SHEPHERD_NOPE_X is not set \(used as \$\{SHEPHERD_NOPE_X\} in data_root\)",
    ):
        load_config(write(tmp_path, "data_root: ${SHEPHERD_NOPE_X}\n"))


TOKEN_FILE = """gateway:
  host: 0.0.0.0
  auth: "on"
  tokens:
    - name: ci
      token: ${TOK}
      scopes: [submit]
  port: ${PORT}
storage:
  bucket: ${BUCKET}
"""


@pytest.mark.parametrize(
    "value",
    [
        'abc\n  auth: "off"',  # a newline: no new key
        "secret #not-a-comment",  # a '#': no comment
        "*alias",  # a leading '*': no YAML alias
        "0123",  # leading zero: no octal number
        "back\\nslash\\t",  # backslashes: no escapes
        "  spaced  ",
        "ŧøķęñ",
    ],
    ids=["newline", "hash", "star", "leading-zero", "backslashes", "spaces", "unicode"],
)
def test_variables_arrive_verbatim_and_never_change_the_structure(tmp_path, monkeypatch, value):
    value += "-long-enough-for-a-token"
    monkeypatch.setenv("TOK", value)
    monkeypatch.setenv("PORT", "0123")
    monkeypatch.setenv("BUCKET", "jobs")
    config = load_config(write(tmp_path, TOKEN_FILE))
    assert config.gateway.auth == "on" and config.gateway.auth_enabled
    (token,) = config.gateway.tokens
    assert token.sha256 == token_digest(value)  # the whole value, as it was
    assert config.gateway.port == 123  # a number field reads the digits in base ten
    assert config.storage.bucket == "jobs"


@pytest.mark.parametrize(("written", "auth"), [("on", "on"), ("off", "off"), ('"on"', "on")])
def test_gateway_auth_reads_on_and_off_quoted_or_not(tmp_path, written, auth):
    token = f"{{name: a, sha256: '{'0' * 64}', scopes: [read]}}"
    text = f"gateway:\n  auth: {written}\n  tokens: [{token}]\n"
    assert load_config(write(tmp_path, text)).gateway.auth == auth


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SHEPHERD_STORAGE__BUCKET", "frombucket")
    config = load_config(write(tmp_path, "storage:\n  bucket: filebucket\n"))
    assert config.storage.bucket == "frombucket"


def test_relative_paths_resolve_against_the_file(tmp_path):
    config = load_config(
        write(
            tmp_path,
            ("sheep:\n  s1:\n    type: bare\n    port: 9101\n    working_directory: models\n"),
        )
    )
    sheep = config.sheep["s1"]
    assert isinstance(sheep, BareSheepConfig)
    assert sheep.working_directory == tmp_path / "models"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (
            "sheep:\n  s1:\n    type: bare\n    port: 99999\n    working_directory: m\n",
            "sheep.s1.bare.port",
        ),
        ("sheep:\n  s1:\n    type: rocket\n    port: 1\n", "sheep.s1"),
        ("sheep:\n  ../x:\n    type: bare\n    port: 1\n    working_directory: m\n", "sheep"),
        ("brokr:\n  url: x\n", "brokr"),
        ("gateway:\n  port: many\n", "gateway.port"),
        (
            "sheep_classes:\n  a100:\n    type: bare\n    port: 5999\n    working_directory: m\n",
            "sheep_classes.a100.port: a class names no port",
        ),
    ],
)
def test_invalid_config_names_the_field(tmp_path, text, field):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert field in str(error.value)


def test_yaml_syntax_errors_are_reported(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "broker: [\n"))


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yml")
