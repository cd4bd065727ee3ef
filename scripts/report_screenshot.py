"""Screenshot a run's eval/report.html with headless Chromium (Playwright), for the README.

    python scripts/report_screenshot.py runs/default/eval/report.html docs/img/report.png [--height 1400]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=1400, help="height of the captured top of the page, in CSS pixels")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=a.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": a.width, "height": a.height})
        page.goto(Path(a.report).resolve().as_uri())
        page.screenshot(path=a.out, full_page=False)
        browser.close()
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
