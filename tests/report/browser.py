"""Headless Debian Chromium driven by selenium (chromedriver from the `chromium-driver` package)."""
from __future__ import annotations

import contextlib
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


def full_page_screenshot(html: Path, png: Path, width: int = 1280, section: tuple[str, str] | None = None) -> Path:
    """The whole page (or, with ``section=(id, next id)``, the part between two headings) as one PNG: how the
    README's and docs/'s report screenshots are taken."""
    import base64

    d = driver(width, 900)
    try:
        d.get(html.resolve().as_uri())
        w, h = d.execute_script("return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": width, "height": h, "deviceScaleFactor": 1, "mobile": False})
        top, bottom = 0, h
        if section:
            top, bottom = d.execute_script(
                "return Array.from(arguments).map(i => document.getElementById(i).getBoundingClientRect().top"
                " + window.scrollY)",
                *section)
        shot = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
            "x": 0, "y": top, "width": max(w, width), "height": bottom - top, "scale": 1}})
        png.write_bytes(base64.b64decode(shot["data"]))
    finally:
        d.quit()
    return png


@contextlib.contextmanager
def opened(html: Path, width: int = 1280, height: int = 900):
    """A headless Chromium showing ``html`` (the test is skipped, saying why, when no browser can run); quit on
    leaving. ``errors(d)`` gives the console errors it logged."""
    import pytest

    why = available()
    if why:
        pytest.skip(why)
    d = driver(width, height)
    try:
        d.get(html.resolve().as_uri())
        yield d
    finally:
        d.quit()


def errors(d) -> list:
    """The page's console errors so far."""
    return [e for e in d.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
