"""
What the browser tests share: ``main.py`` served on a free port, Debian's
Chromium driven headless by Playwright, numbered step screenshots (under
``artifacts/browser/`` unless a test names its own folder), the cells of a
column of the admin's lists, and soft checks that let one run report every broken
expectation of a flow.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from playwright.async_api import Browser, Locator, Page, async_playwright, expect

# Assertions wait as long as actions do (the contexts' default timeout): on a
# loaded machine the admin's first fetch of a table can take more than
# Playwright's default 5 s for an assertion.
expect.set_options(timeout=15_000)

from everyskill.database import environment_for
from tests.support import PROJECT_ROOT, free_port, wait_until_served

#: Where the screenshots of the last run are kept (git-ignored).
ARTIFACTS = PROJECT_ROOT / "artifacts" / "browser"

#: Debian's Chromium, or the binary EVERYSKILL_CHROMIUM names: never a browser
#: Playwright downloads.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1440, "height": 900}


def chromium_path() -> str:
    return os.environ.get("EVERYSKILL_CHROMIUM", "/usr/bin/chromium")


@contextmanager
def served_admin(
    database_url: str, tmp_path: Path, *, username: str, password: str
) -> Iterator[str]:
    """Run ``main.py`` on ``database_url`` (migrations, sample data into an
    empty database, the admin with this login) on a free port; yield its base
    URL; stop it with SIGTERM at the end.

    Its output goes to a file, not a pipe nobody reads while the browser
    makes its requests, and is shown when it fails to start.
    """
    port = free_port()
    env = {
        **os.environ,
        **environment_for(database_url),
        "EVERYSKILL_ADMIN_USERNAME": username,
        "EVERYSKILL_ADMIN_PASSWORD": password,
        "EVERYSKILL_ADMIN_CREDENTIALS": str(tmp_path / "credentials.json"),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = tmp_path / "main.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "main.py", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_served(f"{base}/", process)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- main.py output ---\n{log_path.read_text()}") from None
        yield base
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Browser]:
    """Headless Chromium with a fresh, empty profile."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


class Screenshots:
    """Numbered step screenshots, ``<NN>-<step>.png``, in a folder emptied at
    the start so that it holds the last run only."""

    def __init__(self, folder: Path = ARTIFACTS) -> None:
        self.folder = folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        self.count = 0

    async def step(self, page: Page, name: str) -> Path:
        self.count += 1
        return await self.named(page, f"{self.count:02d}-{name}")

    async def named(self, page: Page, name: str, *, full_page: bool = False) -> Path:
        path = self.folder / f"{name}.png"
        await page.screenshot(path=path, full_page=full_page)
        return path

    async def failure(self, page: Page) -> None:
        """``failure.png``, best effort: never hides the error being raised."""
        try:
            await asyncio.wait_for(self.named(page, "failure", full_page=True), 10)
        except Exception:  # noqa: BLE001 - the test's own error matters more
            pass


class Checks:
    """Expectations collected rather than raised at once, so that a run of a
    long flow reports every one that does not hold; :meth:`verify` raises
    them together at the end. Navigation stays with plain asserts: a later
    step cannot run without it."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def that(self, condition: bool, message: str) -> bool:
        if not condition:
            self.failures.append(message)
        return condition

    def equal(self, actual: object, expected: object, what: str) -> bool:
        return self.that(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")

    async def expect(self, assertion: Awaitable[None], what: str) -> bool:
        """Await a Playwright ``expect(...)`` assertion; record it if it fails."""
        try:
            await assertion
        except AssertionError as error:
            lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
            # Playwright's message, then its "Actual value"; not its call log.
            self.failures.append(f"{what}: {' / '.join(lines[:3])}")
            return False
        return True

    def verify(self) -> None:
        if self.failures:
            listed = "\n".join(f"  - {failure}" for failure in self.failures)
            raise AssertionError(f"{len(self.failures)} expectation(s) failed:\n{listed}")


def column(page: Page, header: str) -> Locator:
    """The cells of the admin listing's column headed ``header`` (found by the
    header's text, so the layout of the columns may change)."""
    assert "'" not in header
    position = (
        f"count(../../../thead/tr/th[normalize-space(.)='{header}']/preceding-sibling::th) + 1"
    )
    return page.locator(".table_wrapper tbody tr").locator(f"xpath=td[{position}]")
