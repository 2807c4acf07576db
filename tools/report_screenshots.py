"""Take the report screenshots the README and docs show, from a fresh `cliplab demo` run.

    .venv/bin/python tools/report_screenshots.py            # writes docs/report-screenshot.png, docs/report-plots.png
                                                            # and docs/report-after-{full,plots}.png
    .venv/bin/python tools/report_screenshots.py --html R   # screenshots of an existing report instead of a demo run

Needs Debian chromium + chromium-driver (`make browser` installs them as root) and selenium (the test extra). The demo
runs offline on the shipped tiny-shapes model in a temporary folder; nothing outside docs/ is written.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "report"))

import browser  # noqa: E402  (tests/report/browser.py: the same Chromium the report test drives)


def demo_report(work: Path) -> Path:
    # relative folder names, so the page shows "cliplab-demo/results" as a user's own demo run does
    subprocess.run([sys.executable, "-m", "cliplab", "demo", "--quiet", "--output-dir", "cliplab-demo",
                    "--cache-dir", "cache"], check=True, cwd=work)
    return work / "cliplab-demo" / "report.html"


def take(html: Path, docs: Path) -> list[Path]:
    shots = [
        browser.screenshot(html, docs / "report-screenshot.png", width=1280, height=1100),  # what one sees first
        browser.full_page_screenshot(html, docs / "report-plots.png", section=("plots", "images")),
        browser.full_page_screenshot(html, docs / "report-after-full.png"),
        browser.full_page_screenshot(html, docs / "report-after-plots.png", section=("plots", "images")),
    ]
    return shots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, help="an existing report.html (default: run the demo into a temporary folder)")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the PNGs go (default: docs/)")
    args = ap.parse_args(argv)
    why = browser.available()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="cliplab-shots-") as tmp:
        html = args.html or demo_report(Path(tmp))
        for png in take(html, args.docs):
            print(png.relative_to(ROOT) if png.is_relative_to(ROOT) else png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
