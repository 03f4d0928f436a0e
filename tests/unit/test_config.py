from pathlib import Path

import pytest

from schemas.config import BareSheepConfig, ConfigError, interpolate, load_config


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


def test_unset_variable_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="SHEPHERD_NOPE_X"):
        load_config(write(tmp_path, "data_root: ${SHEPHERD_NOPE_X}\n"))


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
