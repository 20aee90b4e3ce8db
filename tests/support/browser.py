"""Headless Chromium for the console's browser tests (Debian's chromium + chromium-driver).

``needs_browser`` skips, saying why, where either is missing; ``chromium()``
yields a selenium driver and always quits it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

DRIVER = shutil.which("chromedriver")
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

needs_browser = pytest.mark.skipif(
    DRIVER is None or BROWSER is None,
    reason="headless Chromium not installed (apt-get install chromium chromium-driver; "
           ".ci/run does this)")


@contextmanager
def chromium() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium (the dev extra) is not installed")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = str(BROWSER)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,900", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    """Poll ``check()`` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {check}")
