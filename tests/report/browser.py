"""Headless Debian Chromium driven by selenium (chromedriver from the `chromium-driver` package)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def available() -> str | None:
    """None when a browser can run, else why not (shown as the skip reason)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        return ("Debian chromium/chromium-driver are not installed and could not be installed by `make test` "
                "(needs root and apt: apt-get install chromium chromium-driver)")
    return None


def driver(width: int = 1280, height: int = 900):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--window-size={width},{height}",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='cliplab-chrome-')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 1800) -> Path:
    d = driver(width, height)
    try:
        d.get(html.resolve().as_uri())
        d.save_screenshot(str(png))
    finally:
        d.quit()
    return png
