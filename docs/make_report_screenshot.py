"""Render a demo job's report.html and take the README's screenshot of it with Chromium.

    PYTHONPATH=src python docs/make_report_screenshot.py   # writes docs/report.png

The demo profile is made with the record functions of jobtrace.profiles.folded, as the
sampler makes them, for a made-up training job: reading a dataset (mostly waiting on
I/O), feature engineering and a training loop (mostly on a CPU).
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

from jobtrace import model
from jobtrace.profiles.folded import load_job_profile, memory_record, stacks_record, timeline_record
from jobtrace.report.profile_html import render_profile_html

HERE = Path(__file__).resolve().parent
PROCESS = "process 31337 (main)"
T0 = 1_796_000_000.0
DURATION = 94.2

M = "<module> (train.py:1)"
MAIN = "main (train.py:120)"
LOAD = "load_dataset (data.py:31)"
FEAT = "build_features (features.py:14)"
FIT = "fit (model.py:77)"
EVAL = "evaluate (model.py:140)"
SAVE = "save_checkpoint (model.py:171)"

#: folded stack (below MAIN) → (wall seconds, CPU share)
STACKS = {
    f"{LOAD};read_parquet (pandas/io/parquet.py:667);_read_table (pyarrow/parquet.py:1793)": (
        14.0,
        0.35,
    ),
    f"{LOAD};download (storage.py:58);read (ssl.py:1134)": (9.5, 0.04),
    f"{LOAD};validate_rows (data.py:72)": (2.2, 0.97),
    f"{FEAT};tokenize (features.py:40);<listcomp> (features.py:44)": (8.8, 0.99),
    f"{FEAT};tokenize (features.py:40);normalize (text.py:9)": (3.1, 0.98),
    f"{FEAT};one_hot (features.py:61);get_dummies (pandas/core/reshape/encoding.py:43)": (
        4.4,
        0.96,
    ),
    f"{FIT};train_epoch (model.py:92);forward (nn.py:210);matmul (nn.py:35)": (17.5, 1.0),
    f"{FIT};train_epoch (model.py:92);backward (nn.py:260);matmul (nn.py:35)": (12.0, 1.0),
    f"{FIT};train_epoch (model.py:92);step (optim.py:48)": (4.0, 0.99),
    f"{FIT};train_epoch (model.py:92);next_batch (data.py:120);get (queue.py:171)": (6.3, 0.02),
    f"{EVAL};forward (nn.py:210);matmul (nn.py:35)": (5.2, 1.0),
    f"{EVAL};roc_auc (metrics.py:18)": (1.9, 0.99),
    f"{SAVE};dump (pickle.py:1071)": (1.6, 0.8),
    f"{SAVE};fsync (storage.py:101)": (2.9, 0.03),
}
READ_PARQUET = "read_parquet (pandas/io/parquet.py:667);_read_table (pyarrow/parquet.py:1793)"
DUMMIES = "one_hot (features.py:61);get_dummies (pandas/core/reshape/encoding.py:43)"
MEMORY = {
    f"{M};{MAIN};{LOAD};{READ_PARQUET}": 1_210,
    f"{M};{MAIN};{FEAT};{DUMMIES}": 640,
    f"{M};{MAIN};{FEAT};tokenize (features.py:40);<listcomp> (features.py:44)": 410,
    f"{M};{MAIN};{FIT};__init__ (nn.py:20)": 260,
    f"{M};{MAIN};{FIT};train_epoch (model.py:92);forward (nn.py:210);matmul (nn.py:35)": 180,
    f"{M};{MAIN};{LOAD};validate_rows (data.py:72)": 45,
}


def build() -> tuple[dict[str, object], object]:
    new = {i: f"{M};{MAIN};{text}" for i, text in enumerate(STACKS, 1)}
    samples = [
        (i, int(wall * 1e6), int(wall * share * 1e6))
        for i, (wall, share) in enumerate(STACKS.values(), 1)
    ]
    points = []
    for k in range(190):
        t = k * DURATION / 189
        rss = 180_000 + min(t, 26) / 26 * 1_300_000 + (480_000 if 26 < t < 46 else 0)
        rss += 60_000 * math.sin(t / 3)
        cpu = 25 + 15 * math.sin(t) if t < 26 else 97 + 2 * math.sin(t * 3)
        if 62 < t < 66 or t > 89:
            cpu = 8.0
        points.append((T0 + t, int(rss), round(cpu, 1)))
    mib = 1024 * 1024
    records = [
        stacks_record("demo", PROCESS, new, samples, T0, T0 + DURATION),
        timeline_record("demo", PROCESS, points, T0 + DURATION),
        memory_record(
            "demo",
            PROCESS,
            "approximate",
            2_840_000,
            {k: v * mib for k, v in MEMORY.items()},
            T0 + 40,
        ),
    ]
    profile = load_job_profile([(r[3], r[4], r[5], r[6]) for r in records])
    job = {
        "id": "01jdm4x7qk9v2c8h3n6p5r0tws",
        "name": "train-ranker",
        "experiment": "ranking",
        "status": "succeeded",
        "start_time": T0,
        "end_time": T0 + DURATION,
        "duration": DURATION,
        "cpu_user": 61.8,
        "cpu_sys": 4.1,
        "peak_memory_kb": 2_840_000,
        "exit_code": 0,
        "host": "gpu-worker-3",
        "pid": 31337,
    }
    assert set(job) <= set(model.FIELDS[model.JOB])
    return job, profile


def main() -> None:
    from playwright.sync_api import sync_playwright

    job, profile = build()
    out = HERE / "report.png"
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "report.html"
        page_path.write_text(render_profile_html(job, profile), encoding="utf-8")  # type: ignore[arg-type]
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1010}, device_scale_factor=1)
            page.goto(page_path.as_uri())
            page.wait_for_selector("#flame .fr")
            page.locator("#flame .fr", has_text="load_dataset").first.hover()
            page.screenshot(path=str(out), clip={"x": 0, "y": 0, "width": 1280, "height": 1010})
            browser.close()
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
