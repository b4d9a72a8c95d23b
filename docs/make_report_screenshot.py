"""Run the demo job and take the README's screenshot of its report.html with Chromium.

    PYTHONPATH=src python docs/make_report_screenshot.py   # writes docs/report.png

The job is ``examples/train_demo.py`` run by ``jobtrace run`` in a scratch directory, so
the picture is of a real profile: waiting on downloads, a thread pool, a large buffer at
the memory peak and a CPU-bound training loop. The pointer rests on the training loop's
frame to show the hover card.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "examples" / "train_demo.py"


def run_demo(directory: Path) -> Path:
    """Run the demo as a recorded job in ``directory``; the path of its report.html."""
    env = {**os.environ, "JOBTRACE_DIR": str(directory / ".jobtrace")}
    env.pop("JOBTRACE_URL", None)
    subprocess.run(
        [sys.executable, "-m", "jobtrace", "run", "-q", str(DEMO)],
        cwd=directory,
        env=env,
        check=True,
    )
    [page] = (directory / ".jobtrace" / "reports").glob("*/report.html")
    return page


def main() -> None:
    from playwright.sync_api import sync_playwright

    out = HERE / "report.png"
    with tempfile.TemporaryDirectory() as tmp:
        page_path = run_demo(Path(tmp))
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1010}, device_scale_factor=1)
            page.goto(page_path.as_uri())
            page.wait_for_selector("#flame .fr")
            page.locator("#flame .fr", has_text="train_epoch").first.hover()
            page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1280, "height": 1010})
            browser.close()
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
