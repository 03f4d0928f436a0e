"""The dashboard (``/ui``) in a real browser, Debian's Chromium, against the real stack:
rows move live, a job's page shows its output, logs and timeline, a running job is cancelled
from its page, and with auth on the page asks for a token and refuses a wrong one.
Screenshots of each view land in ``test-artifacts/dashboard/``."""

from __future__ import annotations

import shutil

import pytest

from schemas.config import TokenConfig
from services.gateway.dashboard import CONTENT_SECURITY_POLICY
from tests.conftest import serving
from tests.support.browser import Browser, chromium, need_chromium
from tests.support.stack import MODELS, bare_sheep

TALKER = (
    "import time\n"
    "from runner import JsonRunner\n\n"
    "class Talker(JsonRunner):\n"
    "    def predict(self, payload):\n"
    "        print(f'hello from the runner: {payload[\"say\"]}', flush=True)\n"
    "        for step in range(4):\n"
    "            self.report_progress(step / 4, f'step {step}')\n"
    "            time.sleep(payload.get('seconds', 0) / 4)\n"
    "        return {'said': payload['say']}\n"
)
"""Prints a line, reports progress while it takes ``seconds``, returns what it was told."""
SUBMITTER = "s" * 32
READER = "r" * 32


@pytest.fixture(autouse=True)
def _chromium() -> None:
    need_chromium()


@pytest.fixture
def models(tmp_path):
    """The example sleep model, and the talker."""
    models = tmp_path / "models"
    shutil.copytree(MODELS / "sleep", models / "sleep")
    (models / "talker" / "1").mkdir(parents=True)
    (models / "talker" / "1" / "shepherd-runner.yaml").write_text("runner: talker:Talker\n")
    (models / "talker" / "1" / "talker.py").write_text(TALKER)
    return models


def talk(job_id: str, say: str, seconds: float) -> dict:
    return {
        "job_id": job_id,
        "model": {"name": "talker", "version": "1"},
        "payload": {"say": say, "seconds": seconds},
    }


async def no_policy_violations(browser: Browser) -> None:
    refused = [line for line in await browser.console() if "Content Security Policy" in line]
    assert not refused, refused


async def test_jobs_move_live_and_a_job_shows_its_output_logs_and_timeline(
    config, names, models, job_id
):
    config.sheep = {"s1": bare_sheep(working_directory=models)}
    async with serving(config, names) as client, chromium("views") as browser:
        base = str(client.base_url)
        page = await client.get("/ui")
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        script = await client.get("/ui/static/js/main.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert script.headers["content-security-policy"] == CONTENT_SECURITY_POLICY

        await browser.go(f"{base}/ui")
        await browser.wait_for("#live.on")
        await browser.script("window.notReloaded = true")
        assert (await client.post("/start-job", json=talk(job_id, "bonjour", 3))).status_code == 202
        row = f'tr[data-job="{job_id}"]'
        await browser.wait_for(f'{row}[data-state="running"]')
        await browser.wait_for(f'{row}[data-state="done"]')
        assert await browser.script("return window.notReloaded") is True, "the page reloaded"
        await browser.wait_for(".counts li", "done 1")
        await browser.screenshot("jobs")

        await browser.click(f"{row} a")
        await browser.wait_for("h1", job_id)
        await browser.wait_for('pre[aria-label="Output"]', '"said": "bonjour"')
        await browser.wait_for('pre[data-log="stdout"]', "hello from the runner: bonjour")
        for stage in ("accepted", "queued", "running", "done"):
            await browser.wait_for(f'tr[data-stage="{stage}"] time[datetime]')
        await browser.wait_for('tr[data-stage="running"] td.num', " s")  # about 3 s on the runner
        await browser.wait_for("dl.facts", "Wall")
        await browser.wait_for("button", "Download")
        await browser.screenshot("job")

        await browser.go(f"{base}/ui#/sheep")
        await browser.wait_for('tr[data-sheep="s1"]', "talker:1")
        await browser.wait_for('tr[data-sheep="s1"]', "idle")
        await browser.screenshot("sheep")

        await browser.go(f"{base}/ui#/submit")
        await browser.type('input[name="model"]', "talker")
        await browser.type('input[name="version"]', "1")
        await browser.type('textarea[name="payload"]', '{"say": "from the form", "seconds": 0}')
        await browser.click('button[type="submit"]')
        await browser.wait_for('p[role="status"] a')
        submitted = await browser.script(
            "return document.querySelector('p[role=\"status\"] a').textContent"
        )
        await browser.screenshot("submit")
        await browser.click('p[role="status"] a')
        await browser.wait_for('pre[aria-label="Output"]', "from the form")
        assert (await client.get(f"/jobs/{submitted}/status")).json()["state"] == "done"

        await browser.go(f"{base}/ui#/overview")
        await browser.wait_for('.counts li[data-state="done"]', "done 2")
        await browser.wait_for("figure svg.chart")
        await browser.screenshot("overview")

        await browser.resize(390, 844)  # a phone's width
        await browser.go(f"{base}/ui#/jobs")
        await browser.wait_for(f'tr[data-job="{job_id}"][data-state="done"]')
        width = await browser.script("return document.documentElement.scrollWidth")
        assert isinstance(width, int) and width <= 390, f"the page is {width} px wide on a phone"
        await browser.screenshot("jobs-phone")
        await no_policy_violations(browser)


async def test_with_auth_on_a_token_is_asked_for_and_a_running_job_is_cancelled(
    config, names, models, job_id
):
    config.sheep = {"s1": bare_sheep(working_directory=models)}
    config.gateway.auth = "on"
    config.gateway.tokens = [
        TokenConfig(name="reader", token=READER, scopes=["read"]),
        TokenConfig(name="submitter", token=SUBMITTER, scopes=["submit", "read"]),
    ]
    async with serving(config, names) as client, chromium("auth") as browser:
        client.headers["Authorization"] = f"Bearer {SUBMITTER}"
        base = str(client.base_url)
        await browser.go(f"{base}/ui")
        await browser.wait_for("h1", "Sign in")
        await browser.screenshot("sign-in")
        await browser.type('input[name="token"]', "shp_not-a-token")
        await browser.click('button[type="submit"]')
        await browser.wait_for('[role="alert"]', "The token was refused")
        await browser.screenshot("refused")
        assert await browser.script("return sessionStorage.length") == 0

        await browser.type('input[name="token"]', SUBMITTER)
        await browser.click('button[type="submit"]')
        await browser.wait_for("#live.on")
        await browser.wait_for("h1", "Jobs")

        sleeper = {
            "job_id": job_id,
            "model": {"name": "sleep", "version": "1"},
            "payload": {"seconds": 60, "value": job_id},
        }
        assert (await client.post("/start-job", json=sleeper)).status_code == 202
        await browser.click(f'tr[data-job="{job_id}"][data-state="running"] a')
        await browser.wait_for("dl.facts", "running")
        await browser.wait_for("progress")
        await browser.screenshot("running")
        await browser.click("button.danger", "Cancel job")
        await browser.wait_for("dl.facts", "cancelled")
        await browser.screenshot("cancelled")
        status = (await client.get(f"/jobs/{job_id}/status")).json()
        assert status["state"] == "cancelled", status
        await no_policy_violations(browser)


async def test_the_dashboards_files_hold_no_data_and_its_api_calls_need_a_token(config, names):
    """The page is open (it asks for the token itself); what it reads is not."""
    config.sheep = {}
    config.gateway.auth = "on"
    config.gateway.tokens = [TokenConfig(name="reader", token=READER, scopes=["read"])]
    async with serving(config, names) as client:
        assert (await client.get("/ui")).status_code == 200
        slash = await client.get("/ui/")
        assert slash.status_code in (307, 308) and slash.headers["location"].endswith("/ui")
        assert (await client.get("/ui/static/js/api.js")).status_code == 200
        assert (await client.get("/ui/static/nothing.js")).status_code == 404
        for path in ("/jobs", "/job-counts", "/status", "/events"):
            answer = await client.get(path)
            assert answer.status_code == 401, (path, answer.status_code)
