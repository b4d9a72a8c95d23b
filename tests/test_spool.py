"""The spool keeps a batch's id with the batch, pending and claimed."""

from __future__ import annotations

from pathlib import Path

from jobtrace.spool import Spool


def test_a_spooled_batch_id_survives_claiming(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "http://127.0.0.1:1")
    path = spool.write([("metric", "j", "loss", 0, 1.0, 1.0)], "01abc.2")
    assert spool.batch_id(path) == "01abc.2"
    claimed = spool.claim(path)
    assert claimed is not None and spool.batch_id(claimed) == "01abc.2"
    assert spool.read(claimed) == [("metric", "j", "loss", 0, 1.0, 1.0)]


def test_a_batch_without_a_usable_id_is_spooled_without_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "memory://x")
    assert spool.batch_id(spool.write([("metric", "j", "n", 0, 1.0, 1.0)])) is None
    assert spool.batch_id(spool.write([("metric", "j", "n", 1, 1.0, 1.0)], "../etc")) is None
    assert len(spool.pending()) == 2
