"""The soak, compressed: a million records through the recorder (50x its buffer) keep RSS
flat and every record arrives. ``bench/bench_soak.py`` runs the full ten million."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("extensions", "records"),
    [("compiled", 1_000_000), ("pure-python", 300_000)],
)
def test_records_far_past_the_buffer_keep_rss_flat_and_all_arrive(
    extensions: str, records: int, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRACE_")}
    env["JOBTRACE_DIR"] = str(tmp_path / "jt")
    if extensions == "pure-python":
        env["JOBTRACE_NO_EXTENSIONS"] = "1"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_soak.py"), "--records", str(records),
         "--strict"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    sent = records // 3
    assert f"{sent:,} sent per kind" in out.stdout
    assert f"'metric': {sent}, 'span': {sent}, 'item': {sent}" in out.stdout
    growth = re.search(r"RSS growth after warm-up: ([+-][\d.]+) MiB", out.stdout)
    assert growth is not None and float(growth.group(1)) <= 8.0, out.stdout
    assert len(re.findall(r"records  RSS", out.stdout)) == 10  # sampled as it went
