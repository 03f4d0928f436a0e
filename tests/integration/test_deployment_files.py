"""The deployment files, checked offline: deploy/compose/ by ``docker-compose config``
(Debian's package), deploy/kubernetes/ by kubeconform against the schemas kept in
deploy/kubernetes/schemas/, and the Shepherd configuration each one carries by Shepherd's own
loader. ``make services`` installs both tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from schemas.broker_names import Names
from schemas.config import Config
from schemas.config_file import load_config
from schemas.job import PRIORITIES
from services.sheep.membership import Membership

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "deploy" / "compose"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SCHEMAS = KUBERNETES / "schemas"
SCHEMA_LOCATION = f"{SCHEMAS}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json"
"""kubeconform's lookup of a schema: ``deployment-apps-v1.json``, ``scaledobject-keda-...``"""
SECRETS = {
    "SHEPHERD_IMAGE": "127.0.0.1:5050/shepherd-services:0.1.0",
    "RABBITMQ_PASSWORD": "a-rabbit-password",
    "MINIO_ROOT_PASSWORD": "a-minio-password",
    "SHEPHERD_GATEWAY_TOKEN": "a-token-of-more-than-16-characters",
}


def kubeconform() -> Path:
    """The kubeconform ``make services`` built, at the version ``scripts/services.sh`` names."""
    script = (ROOT / "scripts" / "services.sh").read_text()
    version = re.search(r'^KUBECONFORM_VERSION="([^"]+)"', script, re.MULTILINE)
    assert version, "scripts/services.sh no longer names KUBECONFORM_VERSION"
    cache = Path(os.environ.get("SHEPHERD_CACHE_DIR", Path.home() / ".cache" / "shepherd"))
    binary = cache / "kubeconform" / version[1] / "kubeconform"
    if not binary.exists():
        pytest.fail(f"no kubeconform at {binary}; `make services` builds it", pytrace=False)
    return binary


def compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        pytest.fail("no docker-compose; `make services` installs it", pytrace=False)
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE / "compose.yaml"), *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_compose_file_is_valid_and_asks_for_what_it_lacks():
    checked = compose("config", "-q", env=SECRETS)
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(compose("config", env=SECRETS).stdout)
    assert {"rabbitmq", "minio", "setup", "gateway", "notifier", "sheep"} <= set(
        resolved["services"]
    )
    assert resolved["services"]["sheep"]["command"][:3] == ["sheep", "--class", "cpu"]
    lacking = compose(
        "config", "-q", env={k: v for k, v in SECRETS.items() if k != "SHEPHERD_IMAGE"}
    )
    assert lacking.returncode != 0 and "SHEPHERD_IMAGE" in lacking.stderr


def test_the_configurations_of_compose_and_kubernetes_load(tmp_path, monkeypatch):
    for name, value in {
        "SHEPHERD_AMQP_URL": "amqp://shepherd:pw@rabbitmq:5672/",
        "SHEPHERD_S3_ACCESS_KEY": "shepherd",
        "SHEPHERD_S3_SECRET_KEY": "a-minio-password",
        "SHEPHERD_GATEWAY_TOKEN": SECRETS["SHEPHERD_GATEWAY_TOKEN"],
    }.items():
        monkeypatch.setenv(name, value)
    compose_config = load_config(COMPOSE / "shepherd.yml")
    assert list(compose_config.sheep_classes) == ["cpu"] and compose_config.gateway.auth_enabled
    config_map = yaml.safe_load((KUBERNETES / "config.yaml").read_text())
    (tmp_path / "shepherd.yml").write_text(config_map["data"]["shepherd.yml"])
    kubernetes_config = load_config(tmp_path / "shepherd.yml")
    assert list(kubernetes_config.sheep_classes) == ["gpu"]


def test_the_kubernetes_manifests_validate_against_the_schemas():
    manifests = sorted(KUBERNETES.glob("*.yaml"))
    result = subprocess.run(
        [
            str(kubeconform()),
            *("-strict", "-summary", "-output", "text"),
            *("-schema-location", SCHEMA_LOCATION),
            *map(str, manifests),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    documents = sum(1 for path in manifests for doc in yaml.safe_load_all(path.read_text()) if doc)
    assert f"Valid: {documents}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


def test_kubeconform_refuses_a_broken_manifest(tmp_path):
    gateway = list(yaml.safe_load_all((KUBERNETES / "gateway.yaml").read_text()))
    gateway[0]["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    broken = tmp_path / "gateway.yaml"
    broken.write_text(yaml.safe_dump_all(gateway))
    scaled = yaml.safe_load_all((KUBERNETES / "autoscaling.yaml").read_text())
    scaled_object = next(doc for doc in scaled if doc["kind"] == "ScaledObject")
    scaled_object["spec"]["minReplicaCount"] = "none"
    (tmp_path / "autoscaling.yaml").write_text(yaml.safe_dump(scaled_object))
    result = subprocess.run(
        [
            str(kubeconform()),
            *(
                "-strict",
                "-schema-location",
                f"{SCHEMAS}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            ),
            str(broken),
            str(tmp_path / "autoscaling.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "imagePullPolicyy" in result.stdout  # a field Kubernetes does not know
    assert "minReplicaCount" in result.stdout  # a number that is not one


def test_the_autoscaler_counts_the_jobs_of_the_class_waiting_running_and_leased(tmp_path):
    names = Names("shepherd")
    scaled_object = next(
        doc
        for doc in yaml.safe_load_all((KUBERNETES / "autoscaling.yaml").read_text())
        if doc["kind"] == "ScaledObject"
    )
    [trigger] = scaled_object["spec"]["triggers"]
    assert trigger["metadata"]["protocol"] == "http"  # counts unacknowledged deliveries too
    assert trigger["metadata"]["operation"] == "sum"
    queues = re.compile(trigger["metadata"]["queueName"])
    config_map = yaml.safe_load((KUBERNETES / "config.yaml").read_text())
    (tmp_path / "shepherd.yml").write_text(config_map["data"]["shepherd.yml"])
    member = Membership.joining(Config(sheep_classes=_classes(tmp_path)), "gpu")
    counted = [
        *(names.class_lane("gpu", p) for p in PRIORITIES),
        *(names.pool_lane(p) for p in PRIORITIES),
        names.lease_queue(member.sheep_id),
    ]
    not_counted = [
        names.class_lane("cpu"),
        names.lease_queue("cpu-5f0c2e9b"),
        names.sheep_queue("gpu0"),
        names.status_queue,
        names.event_stream,
    ]
    assert all(queues.fullmatch(q) for q in counted)
    assert not any(queues.fullmatch(q) for q in not_counted)
    sheep = yaml.safe_load((KUBERNETES / "sheep-gpu.yaml").read_text())
    assert scaled_object["spec"]["scaleTargetRef"]["name"] == sheep["metadata"]["name"]
    assert sheep["spec"]["template"]["spec"]["containers"][0]["args"][:3] == [
        "sheep",
        "--class",
        "gpu",
    ]


def _classes(tmp_path: Path) -> dict:
    """The sheep classes of the ConfigMap's configuration, as a Config takes them."""
    raw = yaml.safe_load((tmp_path / "shepherd.yml").read_text())
    return raw["sheep_classes"]
