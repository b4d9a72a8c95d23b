"""The spool: exact round trips, ownership, quarantine, the cap and tmp-file hygiene."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from jobtrace.errors import BatchRefusedError
from jobtrace.spool import Spool, SpoolFile, SpoolFullError, spools


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


def test_a_batch_round_trips_exactly_nan_and_128_bit_ids_included(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "memory://exact")
    records = [
        ("metric", "j", "loss", 0, math.nan, 1.0),
        (
            "span",
            2**127 + 5,
            7,
            None,
            "s",
            1,
            2,
            {"k": [1, "x"]},
            None,
            None,
            "j",
            "h",
            1,
            "t",
            "svc",
        ),
    ]
    path = spool.write(records, "b1")
    assert path.name.endswith(".spool")
    back = spool.read(path)
    assert math.isnan(back[0][4]) and back[0][:4] == records[0][:4]
    assert back[1] == records[1]
    assert spool.files() == [SpoolFile(path, "pending", path.stat().st_size, 2, "b1")]


def test_a_record_marshal_cannot_hold_is_spooled_as_json_lines(tmp_path: Path) -> None:
    class Odd:
        def __repr__(self) -> str:
            return "Odd()"

    spool = Spool(tmp_path, "memory://odd")
    path = spool.write([("metric", "j", "n", 0, 1.0, 1.0), ("item", *[None] * 12, {"o": Odd()})])
    assert path.name.endswith(".jsonl")
    assert spool.read(path)[1][-1] == {"o": "Odd()"}


def test_a_live_owners_files_are_not_pending_for_others_until_released(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "memory://owned")
    path = spool.write([("metric", "j", "n", 0, 1.0, 1.0)], "b", own=True)
    assert spool.pending() == []
    assert [f.state for f in spool.files()] == ["owned"]
    released = spool.release(path)
    assert spool.pending() == [released]


def test_a_claim_of_a_dead_process_or_of_an_earlier_holder_of_our_pid_is_taken_over(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path, "memory://stale")
    path = spool.write([("metric", "j", "n", 0, 1.0, 1.0)])
    dead = path.with_name(path.name + ".claimed-999999999")
    ours_unknown = path.with_name("0-1-1~x.spool.claimed-" + str(os.getpid()))
    path.rename(dead)
    ours_unknown.write_bytes(dead.read_bytes())
    assert sorted(spool.pending()) == sorted([dead, ours_unknown])


def test_a_damaged_file_is_quarantined_not_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path, "memory://damaged")
    good = spool.write([("metric", "j", "n", 0, 1.0, 1.0)], "good")
    bad = spool.write([("metric", "j", "n", 1, 1.0, 1.0)], "bad")
    bad.write_bytes(bad.read_bytes()[:-3])  # a torn write
    written: list[tuple[int, str | None]] = []
    delivered, quarantined = spool.replay(lambda records, bid: written.append((len(records), bid)))
    assert (delivered, quarantined) == (1, 1)
    assert written == [(1, "good")] and not good.exists()
    assert spool.pending() == []
    [moved] = [f for f in spool.files() if f.state == "quarantined"]
    assert moved.path.parent.name == "quarantine" and moved.batch_id == "bad"
    assert sum("quarantined" in r.getMessage() for r in caplog.records) == 1


def test_a_batch_the_sink_refuses_for_good_is_quarantined(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "memory://refused")
    spool.write([("metric", "j", "n", 0, 1.0, 1.0)])

    def refuse(records: object, batch_id: object) -> None:
        raise BatchRefusedError("no such table, ever")

    assert spool.replay(refuse) == (0, 1)
    assert [f.state for f in spool.files()] == ["quarantined"]


def test_a_sink_that_is_down_leaves_the_file_pending(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "memory://down")
    spool.write([("metric", "j", "n", 0, 1.0, 1.0)])

    def down(records: object, batch_id: object) -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        spool.replay(down)
    assert [f.state for f in spool.files()] == ["pending"]  # given back, still on disk


def test_a_failed_write_leaves_no_tmp_file_and_stale_ones_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, "memory://tmp")
    spool.write([("metric", "j", "n", 0, 1.0, 1.0)])
    stale = spool.directory / "1-999999999-0.spool.999999999.tmp"
    stale.write_bytes(b"half")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        spool.write([("metric", "j", "n", 1, 1.0, 1.0)])
    assert len([p for p in spool.directory.iterdir() if p.name.endswith(".tmp")]) == 1
    spool.pending()
    assert not stale.exists()


def test_past_the_cap_a_write_is_refused_unless_forced(tmp_path: Path) -> None:
    spool = Spool(tmp_path, "memory://cap", max_bytes=200)
    records = [("metric", "j", "n", i, 1.0, 1.0) for i in range(3)]
    spool.write(records)
    with pytest.raises(SpoolFullError):
        spool.write(records * 10)
    spool.write(records * 10, force=True)
    assert spool.size() > 200


def test_spools_finds_every_url_under_a_directory(tmp_path: Path) -> None:
    Spool(tmp_path, "memory://one").write([("metric", "j", "n", 0, 1.0, 1.0)])
    Spool(tmp_path, "postgresql://u:secret@h/db").write([("metric", "j", "n", 0, 1.0, 1.0)])
    found = {s.url: len(s.files()) for s in spools(tmp_path)}
    assert found == {"memory://one": 1, "postgresql://u:***@h/db": 1}
