"""Credentials stay out of config errors and out of the runner's environment."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from schemas.config import (
    BrokerConfig,
    Config,
    GatewayConfig,
    NotifierConfig,
    RegistryConfig,
    StorageConfig,
    TokenConfig,
    WebhookSubscription,
)
from schemas.config_file import ConfigError, load_config
from services.sheep.bare import runner_environment

BROKER_PASSWORD = "amqp-pw-7f3a9c"
SECRET_KEY = "s3-secret-1b8e4d"
REGISTRY_PASSWORD = "registry-pw-5c2f0a"
WEBHOOK_SECRET = "whsec_OWQ3ZTZiNWEtd2ViaG9vay1zZWNyZXQta2V5"
CALLBACK_SECRET = "whsec_Y2FsbGJhY2stc2VjcmV0LTNmOGEyYi1rZXk="
TOKEN = "shp_gateway-token-4e1f2a3b"


def configured() -> Config:
    return Config(
        broker=BrokerConfig(url=SecretStr(f"amqp://shepherd:{BROKER_PASSWORD}@mq:5672/")),
        storage=StorageConfig(
            access_key=SecretStr("shepherd-s3"), secret_key=SecretStr(SECRET_KEY)
        ),
        registry=RegistryConfig(username="ci", password=SecretStr(REGISTRY_PASSWORD)),
        notifier=NotifierConfig(
            webhooks=[
                WebhookSubscription(
                    name="hook", url="https://hook", secret=SecretStr(WEBHOOK_SECRET)
                )
            ],
            callback_secret=SecretStr(CALLBACK_SECRET),
        ),
        gateway=GatewayConfig(
            tokens=[TokenConfig(name="ci", scopes=["read"], token=SecretStr(TOKEN))]
        ),
    )


def everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


@pytest.mark.parametrize(
    "text",
    [
        f"broker:\n  url: amqp://guest:{BROKER_PASSWORD}@h/ : x\n",
        f"storage: {{secret_key: {SECRET_KEY}\n",
        f"storage:\n  secret_key: {SECRET_KEY}\n\tbucket: x\n",
    ],
)
def test_yaml_errors_say_where_without_quoting_the_line(tmp_path: Path, text):
    path = tmp_path / "shepherd.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "not valid YAML: line" in str(error.value)
    said = everything_said(error.value)
    assert BROKER_PASSWORD not in said and SECRET_KEY not in said


@pytest.mark.parametrize(
    "url",
    [
        f"amqp//guest:{BROKER_PASSWORD}@mq",  # aio-pika would log this verbatim, forever
        f"http://guest:{BROKER_PASSWORD}@mq:5672/",
        f"amqp://guest:{BROKER_PASSWORD}@mq:port/",
        f"guest:{BROKER_PASSWORD}",
    ],
)
def test_a_malformed_broker_url_is_refused_without_quoting_it(tmp_path: Path, url):
    path = tmp_path / "shepherd.yml"
    path.write_text(f"broker:\n  url: '{url}'\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "broker.url" in str(error.value) and "amqp://" in str(error.value)
    assert BROKER_PASSWORD not in everything_said(error.value)


def test_validation_errors_never_quote_the_input():
    with pytest.raises(ValidationError) as error:
        Config(
            storage={"secret_key": [SECRET_KEY]},
            registry={"password": {"x": REGISTRY_PASSWORD}},
        )
    said = everything_said(error.value)
    assert "storage.secret_key" in said and "registry.password" in said
    assert SECRET_KEY not in said and REGISTRY_PASSWORD not in said


def test_environment_overrides_that_are_not_json_are_a_config_error(monkeypatch):
    monkeypatch.setenv("SHEPHERD_GATEWAY", "{not json " + TOKEN)
    with pytest.raises(ConfigError, match="gateway") as error:
        load_config(None)
    assert TOKEN not in everything_said(error.value)


def test_secrets_are_every_credential_held_in_plain_form():
    assert set(configured().secrets()) == {
        BROKER_PASSWORD,
        "shepherd-s3",
        SECRET_KEY,
        REGISTRY_PASSWORD,
        WEBHOOK_SECRET,
        CALLBACK_SECRET,
    }


@pytest.mark.parametrize(
    ("text", "revealing"),
    [
        (f"amqp://shepherd:{BROKER_PASSWORD}@mq/", True),
        (SECRET_KEY, True),
        (f"docker login -p {REGISTRY_PASSWORD}", True),
        (WEBHOOK_SECRET, True),
        (f"signed with {CALLBACK_SECRET}", True),
        (TOKEN, True),
        (TOKEN + "x", False),
        ("/home/shepherd", False),
        ("en_US.UTF-8", False),
    ],
)
def test_reveals_secret(text, revealing):
    assert configured().reveals_secret(text) is revealing


def test_short_default_credentials_count_only_as_the_whole_text():
    config = Config()  # guest:guest and minioadmin, as `make services` sets them up
    assert config.reveals_secret("guest")
    assert not config.reveals_secret("/home/guest")


def test_the_runner_environment_carries_no_credentials(monkeypatch):
    config = configured()  # before SHEPHERD_* below would override it
    for name in list(os.environ):
        monkeypatch.delenv(name)
    kept = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/shepherd",
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "1",
        "HF_HOME": "/models/hf",
    }
    dropped = {
        "SHEPHERD_BROKER__URL": "amqp://x",
        "SHEPHERD_STORAGE__SECRET_KEY": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "MINIO_ROOT_PASSWORD": "x",
        "RABBITMQ_DEFAULT_PASS": "x",
        "AMQP_URL": "amqp://x",
        "DOCKER_AUTH_CONFIG": "{}",
        "BACKUP_URL": f"amqp://shepherd:{BROKER_PASSWORD}@mq/",
        "CI_TOKEN": TOKEN,
        "NOTES": f"registry password is {REGISTRY_PASSWORD}",
    }
    for name, value in {**kept, **dropped}.items():
        monkeypatch.setenv(name, value)
    env = runner_environment([], config.reveals_secret)
    assert env == {**kept, "PYTHONUNBUFFERED": "1"}
    assert runner_environment(["0", "2"], config.reveals_secret)["CUDA_VISIBLE_DEVICES"] == "0,2"
