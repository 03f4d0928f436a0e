"""``shepherd-client``: the SDK from a shell (``pip install './client[cli]'``).

    shepherd-client submit echo:1 '{"x": 1}' --wait        # the result, once done
    shepherd-client logs job-3f2a... --follow
    shepherd-client jobs --state failed --model echo --limit 50
    seq 1000 | jq -c '[., 2]' | shepherd-client map power:1 > squares.jsonl

The gateway is ``--url`` / ``SHEPHERD_URL`` (default http://127.0.0.1:5000), the token
``--token`` / ``SHEPHERD_TOKEN``. Every command takes ``--json`` for scripts. Exit codes: 0 the
job is done (or the command did what it said), 1 the job failed or was cancelled, 2 a usage
error (bad arguments, or a request the gateway refused), 3 the gateway unreachable or
unavailable, 130 interrupted (Ctrl-C; ``map`` first cancels the jobs it submitted).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from shepherd_client.errors import JobFailed, MapItemFailed, ShepherdError, Unavailable
from shepherd_client.http import RETRY_FOR
from shepherd_client.models import JobStatus
from shepherd_client.sync import Client

EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
#: Columns a table may take when printed to a pipe or a file (no terminal to fit).
PIPED_WIDTH = 400
#: Ctrl-C, as shells report a command killed by SIGINT (128 + 2).
EXIT_INTERRUPTED = 130
F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Settings:
    def __init__(self, url: str, token: str | None, as_json: bool, retry_for: float) -> None:
        self.client = Client(url, token, retry_for=retry_for)
        self.as_json = as_json


@click.group()
@click.option("--url", envvar="SHEPHERD_URL", default="http://127.0.0.1:5000", show_default=True)
@click.option("--token", envvar="SHEPHERD_TOKEN", default=None, help="A bearer token.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--retry-for",
    envvar="SHEPHERD_RETRY_FOR",
    type=click.FloatRange(min=0),
    default=RETRY_FOR,
    show_default=True,
    help="Seconds to keep retrying while the gateway is unavailable or unreachable.",
)
@click.pass_context
def main(
    context: click.Context, url: str, token: str | None, as_json: bool, retry_for: float
) -> None:
    """Submit jobs to Shepherd and follow them."""
    settings = Settings(url, token, as_json, retry_for)
    context.obj = settings
    context.call_on_close(settings.client.close)


def handled(command: F) -> F:
    """The command, with the SDK's errors turned into a message and an exit code."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except JobFailed as failed:
            _fail(EXIT_FAILED, str(failed), failed.traceback)
        except MapItemFailed as failed:
            _fail(EXIT_FAILED, str(failed))
        except Unavailable as unavailable:
            _fail(EXIT_UNREACHABLE, str(unavailable))
        except ShepherdError as refused:
            _fail(EXIT_USAGE, f"{refused.status}: {refused}")
        except KeyboardInterrupt:  # map has cancelled the jobs it submitted that had not ended
            _fail(EXIT_INTERRUPTED, "interrupted")

    return run  # type: ignore[return-value]


def _fail(code: int, message: str, detail: str | None = None) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    if detail:
        err.print(detail.rstrip())
    sys.exit(code)


def _emit(settings: Settings, value: Any, text: str | None = None) -> None:
    """``value`` as JSON with ``--json``, else ``text`` (or the value, readably)."""
    if settings.as_json or text is None:
        click.echo(json.dumps(value))
    else:
        out.print(text)


def _status(settings: Settings, status: JobStatus) -> None:
    error = status.error
    why = f" ({error['type']}: {error['message']})" if error else ""
    _emit(settings, status.raw, f"{status.job_id} {status.state}{why}")


def _ended(status: JobStatus) -> None:
    """Exit 1 for a job that failed or was cancelled."""
    if status.state != "done":
        sys.exit(EXIT_FAILED)


@main.command()
@click.argument("model")
@click.argument("payload", required=False)
@click.option(
    "--file",
    "files",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="An input file, or a directory of them (repeatable).",
)
@click.option("--input", "inputs", multiple=True, help="An input uploaded by other means.")
@click.option("--job-id", help="The job's id (made by the gateway if not given).")
@click.option("--sheep", help="Run on this named sheep.")
@click.option("--sheep-class", help="Run on any sheep of this class.")
@click.option(
    "--priority",
    type=click.Choice(["high", "normal", "low"]),
    help="Which waiting job a sheep takes first (default: the model's).",
)
@click.option("--timeout", type=float, help="Seconds the job may run.")
@click.option("--callback-url", help="A webhook for the job's end.")
@click.option("--metadata", help="A JSON object echoed back in the job's status.")
@click.option("--wait", "wait_", is_flag=True, help="Wait, then print the result.")
@click.pass_obj
@handled
def submit(
    settings: Settings,
    model: str,
    payload: str | None,
    files: tuple[Path, ...],
    inputs: tuple[str, ...],
    job_id: str | None,
    sheep: str | None,
    sheep_class: str | None,
    priority: str | None,
    timeout: float | None,
    callback_url: str | None,
    metadata: str | None,
    wait_: bool,
) -> None:
    """Submit a job of MODEL (name:version) with a JSON PAYLOAD."""
    job = settings.client.submit(
        model,
        _json_argument("PAYLOAD", payload),
        files=list(files) or None,
        inputs=list(inputs) or None,
        job_id=job_id,
        sheep=sheep,
        sheep_class=sheep_class,
        priority=priority,
        timeout=timeout,
        callback_url=callback_url,
        metadata=_json_argument("--metadata", metadata),
    )
    if not wait_:
        _emit(settings, {"job_id": job.id}, job.id)
        return
    _emit(settings, job.result(), None)


@main.command()
@click.argument("job_id")
@click.pass_obj
@handled
def status(settings: Settings, job_id: str) -> None:
    """The job's status now."""
    _status(settings, settings.client.job(job_id).status())


@main.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="Seconds to wait at most.")
@click.pass_obj
@handled
def wait(settings: Settings, job_id: str, timeout: float | None) -> None:
    """Wait for the job's end; its final status (exit 1 unless done)."""
    final = settings.client.job(job_id).wait(timeout)
    _status(settings, final)
    _ended(final)


@main.command()
@click.argument("job_id")
@click.option("--timeout", type=float, help="Seconds to wait at most.")
@click.pass_obj
@handled
def result(settings: Settings, job_id: str, timeout: float | None) -> None:
    """Wait for the job, then print its output.json (exit 1 if it failed)."""
    value = settings.client.job(job_id).result(timeout)
    if isinstance(value, bytes):
        sys.stdout.buffer.write(value)
    else:
        _emit(settings, value, None)


@main.command()
@click.argument("job_id")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
@handled
def download(settings: Settings, job_id: str, directory: Path) -> None:
    """Write every output file of the job under DIRECTORY."""
    paths = settings.client.job(job_id).download(directory)
    _emit(settings, [str(p) for p in paths], "\n".join(str(p) for p in paths))


@main.command()
@click.argument("job_id")
@click.option("--stream", type=click.Choice(["stdout", "stderr"]), help="One stream only.")
@click.option("--tail", type=click.IntRange(min=1), help="The last N lines.")
@click.option("--follow", is_flag=True, help="Live, until the job ends.")
@click.pass_obj
@handled
def logs(
    settings: Settings, job_id: str, stream: str | None, tail: int | None, follow: bool
) -> None:
    """What the job's runner printed."""
    job = settings.client.job(job_id)
    if follow:
        for line in job.follow_logs():
            if stream in (None, line.stream):
                if settings.as_json:
                    click.echo(json.dumps({"stream": line.stream, "text": line.text}))
                else:
                    click.echo(line.text, nl=False, err=line.stream == "stderr")
        return
    printed = job.logs(stream, tail)
    if settings.as_json:
        click.echo(json.dumps(printed.__dict__))
        return
    click.echo(printed.stdout or "", nl=False)
    click.echo(printed.stderr or "", nl=False, err=True)


@main.command()
@click.argument("job_id")
@click.pass_obj
@handled
def cancel(settings: Settings, job_id: str) -> None:
    """Cancel the job (an ended one is left as it is)."""
    _status(settings, settings.client.job(job_id).cancel())


@main.command()
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--model", help="Only jobs of this model (name, or name:version).")
@click.option("--sheep", help="Only jobs this sheep ran.")
@click.option("--since", help="Only jobs accepted at or after this time (RFC 3339).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.pass_obj
@handled
def jobs(
    settings: Settings,
    states: tuple[str, ...],
    model: str | None,
    sheep: str | None,
    since: str | None,
    limit: int,
) -> None:
    """The jobs, newest first (with --json, one JSON line each)."""
    listing = settings.client.jobs(
        state=states or None, model=model, sheep=sheep, since=since, limit=limit
    )
    if settings.as_json:
        for job in listing:
            click.echo(json.dumps(job.raw))
        return
    rows = [
        (
            job.job_id,
            job.state,
            "{name}:{version}".format(**job.raw["model"]),
            job.raw.get("sheep_id") or "",
            job.raw["accepted_at"][:19].replace("T", " "),  # to the second, UTC
            f"{job.error['type']}: {job.error['message']}" if job.error else "",
        )
        for job in listing
    ]
    table = Table(box=None)
    table.add_column("job", no_wrap=True, min_width=max((len(r[0]) for r in rows), default=3))
    for title in ("state", "model", "sheep", "accepted (UTC)", "error"):
        table.add_column(title, no_wrap=title != "error")
    for row in rows:
        table.add_row(*row)
    (out if out.is_terminal else Console(width=PIPED_WIDTH, highlight=False)).print(table)


@main.command(name="map")
@click.argument("model")
@click.argument("source", type=click.File("r"), default="-")
@click.option("--concurrency", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--keep-going", is_flag=True, help="A failed item's error takes its line, and the map goes on."
)
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.pass_obj
@handled
def map_(
    settings: Settings, model: str, source: Any, concurrency: int, keep_going: bool, progress: bool
) -> None:
    """Run MODEL on each JSON line of SOURCE (default stdin); one JSON line out per line in,
    in input order."""
    results = settings.client.map(
        model,
        _json_lines(source),
        concurrency=concurrency,
        progress=progress,
        return_exceptions=keep_going,
    )
    for value in results:
        click.echo(json.dumps(_line(value)))


def _line(value: Any) -> Any:
    if isinstance(value, JobFailed):
        return {"error": {"type": value.error_type, "message": value.message}}
    if isinstance(value, ShepherdError):
        return {"error": {"status": value.status, "problem": value.problem}}
    return value


def _json_lines(source: Any) -> Iterator[Any]:
    for number, line in enumerate(source, start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError as exc:
                raise click.UsageError(f"line {number} is not JSON: {exc}") from None


def _json_argument(name: str, raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise click.UsageError(f"{name} is not JSON: {exc}") from None
