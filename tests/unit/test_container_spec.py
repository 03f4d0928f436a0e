"""What a docker sheep asks the engine for: image, command, mounts, labels, limits, GPUs."""

from pathlib import Path

from schemas.config import DockerSheepConfig
from schemas.job import ModelRef
from services.sheep.containers import LABEL_SHEEP, container_spec, gpu_ids
from services.sheep.images import image_name

MODEL = ModelRef(name="echo", version="1")


def spec(**config: object) -> dict:
    return container_spec(
        sheep_id="gpu0",
        namespace="shepherd",
        config=DockerSheepConfig(port=9101, **config),
        model=MODEL,
        image=image_name("127.0.0.1:5050", MODEL),
        data_dir=Path("/srv/shepherd/gpu0"),
        environment={"HF_HOME": "/cache"},
        address="tcp://127.0.0.1:9101",
    )


def test_a_gpu_device_becomes_an_nvidia_device_request_and_the_visible_devices():
    request = spec(devices=["/dev/nvidia0"])
    [device_request] = request["device_requests"]
    assert device_request["Driver"] == "nvidia"
    assert device_request["DeviceIDs"] == ["0"]
    assert device_request["Capabilities"] == [["gpu"]]
    assert request["environment"]["NVIDIA_VISIBLE_DEVICES"] == "0"


def test_gpu_ids_keep_indices_and_uuids():
    assert gpu_ids(["/dev/nvidia3", "1", "GPU-8a1b"]) == ["3", "1", "GPU-8a1b"]


def test_no_devices_asks_for_no_gpu():
    request = spec()
    assert request["device_requests"] is None
    assert "NVIDIA_VISIBLE_DEVICES" not in request["environment"]


def test_the_runner_binds_the_sheep_port_on_the_host_network_with_the_data_mounted():
    request = spec(cpus=1.5, memory="4g")
    assert request["image"] == "127.0.0.1:5050/echo:1"
    assert request["network_mode"] == "host"
    assert request["command"][:2] == ["--bind", "tcp://127.0.0.1:9101"]
    assert request["command"][-2:] == ["--model", "echo:1"]
    assert request["volumes"] == {
        "/srv/shepherd/gpu0": {"bind": "/srv/shepherd/gpu0", "mode": "rw"}
    }
    assert (request["nano_cpus"], request["mem_limit"]) == (1_500_000_000, "4g")
    assert request["labels"][LABEL_SHEEP] == "gpu0"
    assert request["environment"]["HF_HOME"] == "/cache"
