"""``shepherd-runner``: serve the model of the current directory to its sheep.

Exit codes: 0 after SIGTERM/SIGINT, 2 when the runner cannot start (bad arguments, runner
file, import, or ``load()`` raising); the reason is the last line on stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import NoReturn

from runner.config import RUNNER_FILE, build_runner
from runner.server import RunnerServer, StartupError

log = logging.getLogger("runner")

DEFAULT_BIND = "tcp://127.0.0.1:9101"


class Shutdown(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT so that sockets close on the way out.

    A BaseException, like KeyboardInterrupt, so that ``except Exception`` in model code
    running in the main thread (``load()``) cannot swallow it.
    """


def main(argv: list[str] | None = None) -> NoReturn:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s runner[%(process)d] %(name)s: %(message)s",
    )
    model = args.model or _model_from_cwd()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _shut_down)
    try:
        with RunnerServer(args.bind, model, args.heartbeat_interval, args.sheep_pid) as server:
            server.load(lambda: build_runner(args.config))
            log.info("serving %s on %s", model, args.bind)
            server.serve()
    except StartupError:  # the server has already said why, on stderr and to the sheep
        _exit(2)
    except Shutdown as exc:
        log.info("stopping on %s", exc)
    _exit(0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shepherd-runner",
        description="Load the model of the current directory and run its jobs for a sheep.",
    )
    parser.add_argument(
        "--bind", default=DEFAULT_BIND, help=f"ZMQ address of the ROUTER (default {DEFAULT_BIND})"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(RUNNER_FILE),
        help=f"runner file (default ./{RUNNER_FILE})",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=_positive_float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between heartbeats (default 2.0)",
    )
    parser.add_argument(
        "--sheep-pid",
        type=int,
        metavar="PID",
        help="the sheep that starts the runner, as its parent: the runner quits once it is "
        "gone (default: no such check)",
    )
    parser.add_argument(
        "--model",
        metavar="NAME:VERSION",
        help="model reported in 'ready' (default: from the <model>/<version> of the cwd)",
    )
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value


def _model_from_cwd() -> str:
    """Sheep start runners in ``<working_directory>/<model>/<version>/``."""
    cwd = Path.cwd()
    return f"{cwd.parent.name}:{cwd.name}"


def _shut_down(signum: int, frame: FrameType | None) -> None:
    for other in (signal.SIGTERM, signal.SIGINT):
        signal.signal(other, signal.SIG_IGN)  # a second signal must not interrupt clean-up
    raise Shutdown(signal.Signals(signum).name)


def _exit(code: int) -> NoReturn:
    """Exit, even if model code left non-daemon threads behind that would keep us alive."""
    if any(not t.daemon and t is not threading.main_thread() for t in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
