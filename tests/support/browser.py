"""Debian's Chromium, headless, driven through its chromedriver by Selenium, for the
dashboard's tests.

    async with chromium(artifacts) as browser:
        await browser.go(f"{base}/ui")
        await browser.wait_for('tr[data-job="job-1"][data-state="done"]')
        await browser.screenshot("jobs")

Selenium blocks; every call runs on a thread, so the Shepherd the test serves on its event
loop keeps answering the page meanwhile.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

#: Where each test's screenshots are written (kept by CI as artifacts; ignored by git).
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 30.0
STALE_RETRIES = 5


def need_chromium() -> None:
    """Skip, saying what is missing, where Debian's chromium and chromium-driver are not
    installed (``make services`` installs them as root)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            pytest.skip(f"{path} is missing: apt-get install {package} (make services does)")


class Browser:
    def __init__(self, driver: webdriver.Chrome, artifacts: Path) -> None:
        self.driver = driver
        self.artifacts = artifacts

    async def go(self, url: str) -> None:
        await asyncio.to_thread(self.driver.get, url)

    async def wait_for(self, css: str, text: str = "", within: float = WAIT) -> WebElement:
        """The first element matching ``css`` (whose text holds ``text``), once there is one."""

        def found(driver: webdriver.Chrome) -> WebElement | bool:
            try:
                for element in driver.find_elements(By.CSS_SELECTOR, css):
                    if text in element.text:
                        return element
            except StaleElementReferenceException:  # replaced as it was read: look again
                pass
            return False

        try:
            return await asyncio.to_thread(WebDriverWait(self.driver, within).until, found)
        except TimeoutException:
            shown = await asyncio.to_thread(
                lambda: self.driver.find_element(By.TAG_NAME, "main").text
            )
            await self.screenshot("timed-out")
            raise AssertionError(
                f"no {css!r} holding {text!r} within {within} s; the page shows:\n{shown}"
            ) from None

    async def click(self, css: str, text: str = "") -> None:
        """Click the element, found again if the page replaced it meanwhile (live rows are)."""
        for _ in range(STALE_RETRIES):
            element = await self.wait_for(css, text)
            try:
                await asyncio.to_thread(element.click)
                return
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"{css!r} kept being replaced; never clicked")

    async def type(self, css: str, value: str) -> None:
        element = await self.wait_for(css)
        await asyncio.to_thread(element.clear)
        await asyncio.to_thread(element.send_keys, value)

    async def script(self, source: str) -> object:
        return await asyncio.to_thread(self.driver.execute_script, source)

    async def resize(self, width: int, height: int) -> None:
        await asyncio.to_thread(self.driver.set_window_size, width, height)

    async def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        await asyncio.to_thread(self.driver.save_screenshot, str(path))
        return path

    async def console(self) -> list[str]:
        """What the page logged to its console since last asked (CSP violations, errors)."""
        entries = await asyncio.to_thread(self.driver.get_log, "browser")
        return [entry["message"] for entry in entries]


@asynccontextmanager
async def chromium(name: str) -> AsyncIterator[Browser]:
    """A fresh headless Chromium (its own profile), screenshots under ARTIFACTS/<name>/."""
    need_chromium()
    artifacts = ARTIFACTS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = await asyncio.to_thread(
        webdriver.Chrome, options=options, service=Service(executable_path=CHROMEDRIVER)
    )
    try:
        yield Browser(driver, artifacts)
    finally:
        await asyncio.to_thread(driver.quit)
