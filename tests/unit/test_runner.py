"""The runner as a sheep sees it: a real ``shepherd-runner`` process behind a ZMQ socket."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest
import zmq

MODELS = Path(__file__).resolve().parents[2] / "examples" / "models"
HEARTBEAT = 0.2
TIMEOUT = 10.0
"""Seconds any expected frame may take; a broken runner fails the test instead of hanging."""

Message = dict[str, Any]


class Sheep:
    """The sheep's end of the conversation: a DEALER with routing id ``sheep``."""

    def __init__(self, context: zmq.Context[zmq.Socket[bytes]], address: str) -> None:
        self.context = context
        self.address = address
        self.socket = self._connect()

    def _connect(self) -> zmq.Socket[bytes]:
        socket = self.context.socket(zmq.DEALER)
        socket.routing_id = b"sheep"
        socket.linger = 0
        socket.connect(self.address)
        return socket

    def restart(self) -> None:
        """What a restarted sheep does: a new socket, same routing id."""
        self.socket.close()
        self.socket = self._connect()

    def send(self, message: Message | bytes) -> None:
        self.socket.send(message if isinstance(message, bytes) else json.dumps(message).encode())

    def recv(self, timeout: float = TIMEOUT) -> Message:
        if not self.socket.poll(timeout * 1000):
            pytest.fail(f"no frame from the runner within {timeout}s")
        return json.loads(self.socket.recv())

    def recv_until(self, *types: str, timeout: float = TIMEOUT) -> tuple[Message, list[Message]]:
        """The first frame of one of ``types``, and every other frame received before it."""
        deadline = time.monotonic() + timeout
        others: list[Message] = []
        while True:
            message = self.recv(max(0.0, deadline - time.monotonic()))
            if message["type"] in types:
                return message, others
            others.append(message)

    def hello(self) -> Message:
        self.send({"type": "hello", "sheep_id": "sheep-1"})
        ready, _ = self.recv_until("ready", "failed")
        return ready

    def run(self, job_dir: Path, job_id: str, payload: bytes | None = None) -> None:
        inputs = job_dir / job_id / "inputs"
        inputs.mkdir(parents=True)
        if payload is not None:
            (inputs / "input.json").write_bytes(payload)
        self.send(
            {
                "type": "run",
                "job_id": job_id,
                "inputs_dir": str(inputs),
                "outputs_dir": str(job_dir / job_id / "outputs"),
            }
        )

    def close(self) -> None:
        self.socket.close()


class RunnerProcess:
    def __init__(self, process: subprocess.Popen[bytes], address: str) -> None:
        self.process = process
        self.address = address

    def stop(self) -> int:
        """SIGTERM, then the exit code (killing it if it does not stop in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


@pytest.fixture(scope="module")
def context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


@contextmanager
def runner_process(
    model_dir: Path, stdout: IO[bytes] | None = None, stderr: IO[bytes] | int = subprocess.PIPE
) -> Iterator[RunnerProcess]:
    """``shepherd-runner`` in ``model_dir`` on a private ipc address, stopped afterwards."""
    socket_dir = tempfile.mkdtemp(prefix="shr-")  # ipc paths must stay short
    address = f"ipc://{socket_dir}/runner.sock"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner.cli",
            "--bind",
            address,
            "--heartbeat-interval",
            str(HEARTBEAT),
        ],
        cwd=model_dir,
        stdout=stdout,
        stderr=stderr,
    )
    runner = RunnerProcess(process, address)
    try:
        yield runner
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
        shutil.rmtree(socket_dir, ignore_errors=True)


@contextmanager
def ready_sheep(
    context: zmq.Context[zmq.Socket[bytes]], model: str
) -> Iterator[tuple[RunnerProcess, Sheep]]:
    with runner_process(MODELS / model / "1") as runner:
        sheep = Sheep(context, runner.address)
        ready = sheep.hello()
        assert ready["type"] == "ready"
        assert ready["model"] == f"{model}:1"
        assert ready["pid"] == runner.process.pid
        try:
            yield runner, sheep
        finally:
            sheep.close()


@pytest.fixture(scope="module")
def echo(context: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Sheep]:
    with ready_sheep(context, "echo") as (_, sheep):
        yield sheep


@pytest.fixture(scope="module")
def sleeper(context: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Sheep]:
    with ready_sheep(context, "sleep") as (_, sheep):
        yield sheep


@pytest.fixture(scope="module")
def iris(context: zmq.Context[zmq.Socket[bytes]]) -> Iterator[Sheep]:
    with ready_sheep(context, "iris") as (_, sheep):
        yield sheep


def test_echo_copies_input_byte_for_byte(echo: Sheep, tmp_path: Path):
    payload = b'{"b":  2,\n "a": "\xc3\xa9"}  \n'
    echo.run(tmp_path, "job-echo", payload)
    done, _ = echo.recv_until("done", "failed")
    assert done["type"] == "done", done
    assert done["job_id"] == "job-echo"
    accounting = done["accounting"]
    assert accounting["wall_seconds"] >= 0
    assert accounting["cpu_user_seconds"] >= 0 and accounting["cpu_system_seconds"] >= 0
    # The peak of this job alone (Linux resets the high-water mark as it starts), yet the
    # interpreter and the model are resident throughout.
    assert accounting["max_rss_bytes"] > 1024 * 1024
    assert (tmp_path / "job-echo" / "outputs" / "output.json").read_bytes() == payload


@pytest.mark.parametrize(
    ("frames", "job_id", "problem"),
    [
        ([b"not json"], None, "Invalid JSON"),
        ([b'{"type": "explode"}'], None, "type"),
        ([b'{"type": "run", "job_id": "job-x"}'], "job-x", "inputs_dir"),
        ([b'{"type": "hello", "sheep_id": "s"}', b"extra"], None, "expected 1 frame, got 2"),
        ([b"", b'{"type": "hello", "sheep_id": "s"}'], None, "expected 1 frame, got 2"),
        ([b"a", b"b", b"c"], None, "expected 1 frame, got 3"),
        ([b""], None, "Invalid JSON"),
        ([b"\xff\xfe\x00"], None, "Invalid JSON"),
        ([b"[1, 2]"], None, "Input should be an object"),
        ([b"[" * 100_000 + b"]" * 100_000], None, "recursion limit exceeded"),
        ([b'{"type": "hello", "sheep_id": 5}'], None, "hello.sheep_id"),
        ([b'{"type": "run", "job_id": "../x"}'], None, "run.job_id"),
        ([b'{"type": "run", "job_id": "' + b"a" * (64 << 20) + b'"}'], None, "run.job_id"),
    ],
    ids=[
        "not-json",
        "unknown-type",
        "run-missing-fields",
        "two-frames",
        "delimiter-envelope",
        "three-frames",
        "empty",
        "not-utf8",
        "array",
        "deeply-nested",
        "wrong-field-type",
        "unsafe-job-id",
        "huge",
    ],
)
def test_garbage_is_refused_and_runner_keeps_serving(
    echo: Sheep, tmp_path: Path, frames: list[bytes], job_id: str | None, problem: str
):
    echo.socket.send_multipart(frames)
    failed, _ = echo.recv_until("failed")
    assert failed["job_id"] == job_id
    assert failed["error"]["type"] == "ProtocolError"
    assert problem in failed["error"]["message"]

    echo.run(tmp_path, "job-after", b"{}")
    done, _ = echo.recv_until("done", "failed")
    assert done["type"] == "done", done


def test_restarted_sheep_gets_ready_again(echo: Sheep, tmp_path: Path):
    echo.restart()
    assert echo.hello()["type"] == "ready"
    echo.run(tmp_path, "job-restarted", b"[]")
    done, _ = echo.recv_until("done", "failed")
    assert done["type"] == "done", done


def test_failing_model_reports_error_and_keeps_serving(
    context: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
):
    with ready_sheep(context, "fail") as (_, sheep):
        for job_id in ("job-f1", "job-f2"):
            sheep.run(tmp_path, job_id, b"{}")
            failed, _ = sheep.recv_until("done", "failed")
            assert failed["type"] == "failed"
            assert failed["job_id"] == job_id
            assert failed["error"]["type"] == "ValueError"
            assert failed["error"]["message"] == "requested failure"
            assert 'raise ValueError("requested failure")' in failed["error"]["traceback"]


def test_heartbeats_and_progress_while_a_job_runs(sleeper: Sheep, tmp_path: Path):
    sleeper.run(tmp_path, "job-sleep", b'{"seconds": 1.0, "value": 42}')
    done, before = sleeper.recv_until("done", "failed")
    assert done["type"] == "done", done
    assert done["accounting"]["wall_seconds"] >= 1.0
    heartbeats = [m for m in before if m["type"] == "heartbeat" and m["job_id"] == "job-sleep"]
    assert len(heartbeats) >= 3
    progress = [m for m in before if m["type"] == "progress"]
    assert [m["fraction"] for m in progress][-1] == 1.0
    assert all(m["job_id"] == "job-sleep" for m in progress)
    output = tmp_path / "job-sleep" / "outputs" / "output.json"
    assert json.loads(output.read_bytes()) == {"value": 42}

    idle, _ = sleeper.recv_until("heartbeat", timeout=HEARTBEAT * 5)
    assert idle["job_id"] is None


def test_the_next_job_is_held_and_started_the_moment_the_current_one_ends(
    sleeper: Sheep, tmp_path: Path
):
    sleeper.run(tmp_path, "job-long", b'{"seconds": 0.5, "value": 1}')
    sleeper.run(tmp_path, "job-next", b'{"seconds": 0, "value": 2}')
    sleeper.run(tmp_path, "job-extra", b'{"seconds": 0, "value": 3}')  # one too many
    said: list[Message] = []
    while not (said and said[-1]["type"] == "done" and said[-1]["job_id"] == "job-next"):
        message, _ = sleeper.recv_until("started", "done", "failed")
        said.append(message)
    outline = [(m["type"], m["job_id"]) for m in said]
    assert ("failed", "job-extra") in outline
    (busy,) = [m for m in said if m["type"] == "failed"]
    assert busy["error"]["type"] == "RunnerBusy"
    jobs = [pair for pair in outline if pair[1] != "job-extra"]
    # Once the first job is done the runner starts the next, with no word from the sheep.
    assert jobs == [
        ("started", "job-long"),
        ("done", "job-long"),
        ("started", "job-next"),
        ("done", "job-next"),
    ]
    output = tmp_path / "job-next" / "outputs" / "output.json"
    assert json.loads(output.read_bytes()) == {"value": 2}


def test_a_held_job_is_withdrawn_and_a_started_one_is_not(sleeper: Sheep, tmp_path: Path):
    sleeper.run(tmp_path, "job-long", b'{"seconds": 0.5, "value": 1}')
    sleeper.run(tmp_path, "job-held", b'{"seconds": 0, "value": 2}')
    started, _ = sleeper.recv_until("started")
    assert started["job_id"] == "job-long"
    sleeper.send({"type": "withdraw", "job_id": "job-held"})
    sleeper.send({"type": "withdraw", "job_id": "job-long"})  # it has started: left alone
    withdrawn, waiting = sleeper.recv_until("withdrawn", "done", "failed")
    assert (withdrawn["type"], withdrawn["job_id"]) == ("withdrawn", "job-held")
    done, between = sleeper.recv_until("done", "failed")
    assert (done["type"], done["job_id"]) == ("done", "job-long")
    idle, after = sleeper.recv_until("heartbeat")
    assert idle["job_id"] is None
    said = waiting + between + after
    assert not [m for m in said if m["type"] in ("started", "withdrawn")], said
    assert not (tmp_path / "job-held" / "outputs").exists()


def test_log_offsets_bound_what_each_job_printed(context, tmp_path: Path):
    """With stdout and stderr in files, ``started`` and the outcome say where each job's
    part of them starts and ends, even when the next job was held and started at once."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "shepherd-runner.yaml").write_text("runner: talk:Talk\n")
    (model / "talk.py").write_text(
        "import sys\n\nfrom runner import Runner\n\n\nclass Talk(Runner):\n"
        "    def process(self, inputs_dir, outputs_dir):\n"
        "        word = (inputs_dir / 'input.json').read_text()\n"
        "        print('out ' + word)\n"
        "        print('err ' + word, file=sys.stderr)\n"
    )
    logs = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with (
        logs[0].open("ab") as stdout,
        logs[1].open("ab") as stderr,
        runner_process(model, stdout=stdout, stderr=stderr) as runner,
    ):
        sheep = Sheep(context, runner.address)
        try:
            assert sheep.hello()["type"] == "ready"
            for word in ("one", "two"):  # the second held behind the first
                sheep.run(tmp_path, f"job-{word}", word.encode())
            spans: dict[str, list[list[int]]] = {}
            while len(spans) < 3 or any(len(s) < 2 for s in spans.values()):
                message, _ = sheep.recv_until("started", "done", "failed")
                assert message["type"] != "failed", message
                spans.setdefault(message["job_id"], []).append(message["logs"])
                if message["job_id"] == "job-one" and message["type"] == "done":
                    sheep.run(tmp_path, "job-three", b"three")
        finally:
            sheep.close()
        runner.stop()
    texts = [path.read_bytes() for path in logs]
    for word in ("one", "two", "three"):
        (start_out, start_err), (end_out, end_err) = spans[f"job-{word}"]
        assert texts[0][start_out:end_out] == f"out {word}\n".encode()
        assert texts[1][start_err:end_err] == f"err {word}\n".encode()


def test_iris_predicts_known_flowers(iris: Sheep, tmp_path: Path):
    rows = [[5.1, 3.5, 1.4, 0.2], [7.0, 3.2, 4.7, 1.4], [6.3, 3.3, 6.0, 2.5]]
    iris.run(tmp_path, "job-iris", json.dumps({"rows": rows}).encode())
    done, _ = iris.recv_until("done", "failed")
    assert done["type"] == "done", done
    output = json.loads((tmp_path / "job-iris" / "outputs" / "output.json").read_bytes())
    assert output == {"predictions": ["setosa", "versicolor", "virginica"]}


@pytest.mark.parametrize(
    ("payload", "error_type", "problem"),
    [
        (None, "InputError", "inputs/input.json is missing"),
        (b"{rows", "InputError", "not valid JSON"),
        (b'{"rows": [[1, 2, 3, 4], [1, 2]]}', "ValueError", "rows[1]"),
    ],
)
def test_iris_refuses_bad_input(
    iris: Sheep, tmp_path: Path, payload: bytes | None, error_type: str, problem: str
):
    iris.run(tmp_path, "job-bad", payload)
    failed, _ = iris.recv_until("done", "failed")
    assert failed["type"] == "failed"
    assert failed["error"]["type"] == error_type
    assert problem in failed["error"]["message"]


def test_sigterm_during_a_job_exits_cleanly(
    context: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
):
    with ready_sheep(context, "sleep") as (runner, sheep):
        sheep.run(tmp_path, "job-endless", b'{"seconds": 60, "value": 0}')
        sheep.recv_until("progress")
        assert runner.stop() == 0


def test_load_failure_is_reported_to_the_sheep(
    context: zmq.Context[zmq.Socket[bytes]], tmp_path: Path
):
    model_dir = tmp_path / "broken" / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "shepherd-runner.yaml").write_text("runner: model:Broken\n")
    (model_dir / "model.py").write_text(
        "from runner import Runner\n\n"
        "class Broken(Runner):\n"
        "    def load(self):\n"
        "        raise RuntimeError('weights not found')\n\n"
        "    def process(self, inputs_dir, outputs_dir):\n"
        "        pass\n"
    )
    with runner_process(model_dir) as runner:
        sheep = Sheep(context, runner.address)
        failed = sheep.hello()
        sheep.close()
        assert failed["type"] == "failed"
        assert failed["job_id"] is None
        assert failed["error"]["type"] == "RuntimeError"
        assert "weights not found" in failed["error"]["traceback"]
        assert runner.process.wait(TIMEOUT) == 2
        assert runner.process.stderr is not None
        last_line = runner.process.stderr.read().decode().strip().splitlines()[-1]
        assert last_line == (
            "shepherd-runner: cannot start broken:1: RuntimeError: weights not found"
        )


@pytest.mark.parametrize(
    ("runner_file", "problem"),
    [
        ("options: {}\n", "shepherd-runner.yaml: runner: Field required"),
        ("runner: [oops\n", "shepherd-runner.yaml: not valid YAML"),
        ("runner: nowhere:Model\n", "shepherd-runner.yaml: runner: no module named 'nowhere'"),
        ("runner: runner:FunctionRunner\n", "options do not fit runner:FunctionRunner"),
    ],
)
def test_bad_runner_file_exits_with_one_clear_line(tmp_path: Path, runner_file: str, problem: str):
    model_dir = tmp_path / "bad" / "1"
    model_dir.mkdir(parents=True)
    (model_dir / "shepherd-runner.yaml").write_text(runner_file)
    with runner_process(model_dir) as runner:
        assert runner.process.wait(TIMEOUT) == 2
        assert runner.process.stderr is not None
        lines = runner.process.stderr.read().decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("shepherd-runner: cannot start bad:1: ")
        assert problem in lines[0]


def test_a_port_already_taken_exits_with_one_clear_line(tmp_path: Path):
    """A runner left behind by a crashed sheep still holds the port: the new one says so."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        process = subprocess.run(
            [sys.executable, "-m", "runner.cli", "--bind", address],
            cwd=MODELS / "echo" / "1",
            capture_output=True,
            timeout=TIMEOUT,
        )
    assert process.returncode == 2
    lines = process.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"shepherd-runner: cannot start echo:1: cannot bind {address}")
