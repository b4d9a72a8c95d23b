"""Reading a batch's files back from where the recorder wrote them, streamed.

:class:`~jobtrace.batch.BatchMetrics` keeps the rows of at most ``keep_in_memory`` files;
past that, :meth:`~jobtrace.batch.BatchMetrics.iter_file_metrics` and the exports read them
here: from a SQLite or PostgreSQL store (one query, rows fetched a page at a time), from a
``file://`` JSON-lines file (line by line) or from a ``memory://`` sink. Nothing else the
recorder writes to can hand items back, and a store that holds fewer files than the batch
recorded (records still spooled, or dropped) would give a silently short export: both are a
:class:`~jobtrace.errors.StoreError` raised before anything is read, naming what to do.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobtrace import _config, model
from jobtrace.batch.summary import file_metrics
from jobtrace.errors import StoreError

__all__ = ["stored_file_metrics"]

_FIELDS = model.FIELDS[model.ITEM]
#: Schemes whose sink can be read back (a server, ``http(s)://``, has no items route).
_READABLE = frozenset({"memory", "file", "sqlite", "postgresql", "postgres", "postgresql+psycopg"})
#: Rows fetched from a store per round trip.
PAGE_SIZE = 5000


def stored_file_metrics(batch_id: str, recorded: int, kept: int) -> Iterator[dict[str, Any]]:
    """TraceKit's per-file dicts of batch ``batch_id`` as the configured sink holds them.

    ``recorded`` is how many files this process recorded (the sink must hold at least as
    many); ``kept`` is the in-memory window, for the error messages. Checks eagerly, then
    returns a lazy iterator.
    """
    from jobtrace.recorder import flush

    settings = _config.current()
    url = settings.url
    safe_url = _config.mask_url(url)
    past = (
        f"batch {batch_id} has {recorded:,} files, more than the {kept:,} kept in memory "
        "(BatchMetrics(keep_in_memory=…))"
    )
    if not settings.enabled:
        raise StoreError(f"{past}, and recording is off, so no store holds them")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in _READABLE:
        raise StoreError(
            f"{past}, and {safe_url} cannot hand them back; read them with "
            f"`jobtrace batch items {batch_id} --csv --store URL` from the store it feeds"
        )
    flush()
    if scheme == "memory":
        found, rows = _from_memory(url, batch_id)
    elif scheme == "file":
        found, rows = _from_jsonl(Path(url.split("://", 1)[1]), batch_id)
    else:
        found, rows = _from_store(url, batch_id)
    if found < recorded:
        raise StoreError(
            f"{past}, and {safe_url} holds only {found:,} of them so far (the rest are "
            "spooled until the store takes them, or were dropped: see the job's summary); "
            "try again once the spool has been replayed"
        )
    return rows


def _from_memory(url: str, batch_id: str) -> tuple[int, Iterator[dict[str, Any]]]:
    from jobtrace.sinks.memory import MemorySink

    records = MemorySink.named(url.split("://", 1)[1]).records
    end = len(records)  # the records written so far; later ones are not this read's

    def mine() -> Iterator[model.Record]:
        for i in range(end):
            rec = records[i]
            if rec[0] == model.ITEM and rec[2] == batch_id:
                yield rec

    found = sum(1 for _ in mine())
    rows = (file_metrics(dict(zip(_FIELDS, rec[1:], strict=True))) for rec in mine())
    return found, rows


def _from_jsonl(path: Path, batch_id: str) -> tuple[int, Iterator[dict[str, Any]]]:
    import orjson

    needle = orjson.dumps(batch_id)  # as the line spells it, quotes and escapes included

    def mine() -> Iterator[dict[str, Any]]:
        try:
            with path.open("rb") as lines:
                for line in lines:
                    # Decode only lines that can be this batch's items (most are not).
                    if b'"item"' not in line or needle not in line:
                        continue
                    obj = orjson.loads(line)
                    if obj.get("kind") == model.ITEM and obj.get("job_id") == batch_id:
                        yield obj
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc

    found = sum(1 for _ in mine())
    return found, (file_metrics(obj) for obj in mine())


def _from_store(url: str, batch_id: str) -> tuple[int, Iterator[dict[str, Any]]]:
    from jobtrace.store import Store

    with Store(url, create=False) as store:
        found = store.count_items(batch_id)

    def rows() -> Iterator[dict[str, Any]]:
        with Store(url, create=False) as store:
            yield from map(file_metrics, store.iter_items(batch_id, page_size=PAGE_SIZE))

    return found, rows()
