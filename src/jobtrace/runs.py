"""Runs side by side: jobs as flat rows of their fields, params, latest metrics and tags.

>>> import jobtrace
>>> runs = jobtrace.search_runs("metrics.loss < 0.5", experiment="mnist")   # doctest: +SKIP
>>> runs[["run_id", "params.lr", "metrics.loss"]]                           # doctest: +SKIP

:func:`search_runs` is MLflow's ``mlflow.search_runs`` for a jobtrace store: a pandas
DataFrame (a list of dicts without pandas) with one row per job. ``jobtrace jobs list
--columns`` shows the same values as table columns; :class:`Column` names one of them.
Everything is read through the :class:`~jobtrace.store.Store` read API
(:meth:`~jobtrace.store.Store.find_job_metrics`), so it works on any store that offers it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from jobtrace import model
from jobtrace.errors import QueryError

if TYPE_CHECKING:
    from jobtrace.store.metrics import JobMetrics
    from jobtrace.store.paging import Page
    from jobtrace.store.reader import Reader

__all__ = ["RUN_FIELDS", "Column", "column_value", "parse_columns", "search_runs"]

#: The job fields of a run row, in order: the job record's from ``name`` to ``pid``, after
#: ``run_id`` (the job's id, as MLflow names it).
_JOB_FIELDS: Final = model.FIELDS[model.JOB]
RUN_FIELDS: Final = (
    "run_id",
    *_JOB_FIELDS[_JOB_FIELDS.index("name") : _JOB_FIELDS.index("pid") + 1],
)
_TIMES: Final = frozenset({"start_time", "end_time"})
#: Column prefixes, as typed (lower case) -> the kind of value they name.
_KINDS: Final = {
    "param": "param",
    "params": "param",
    "metric": "metric",
    "metrics": "metric",
    "tag": "tag",
    "tags": "tag",
}
#: How search_runs names each kind of column, as MLflow does.
_PLURAL: Final = {"param": "params", "metric": "metrics", "tag": "tags"}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a runs table: a job field (``kind`` ``field``), or the param, latest
    metric value or tag named ``key``; ``label`` is the column's name as asked for."""

    kind: str
    key: str
    label: str


def parse_columns(spec: str | Sequence[str]) -> list[Column]:
    """Columns from ``"param.lr,metric.loss,tag.team"`` (or a list of such names).

    ``param.``/``params.``, ``metric.``/``metrics.`` and ``tag.``/``tags.`` name a param, a
    latest metric value and a tag; a plain name is a job field (:data:`RUN_FIELDS`, ``id``
    too). Raises :class:`~jobtrace.errors.QueryError` naming a bad column."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[Column] = []
    for raw in names:
        if not isinstance(raw, str):
            raise QueryError(f"a column must be a name, got {raw!r}")
        label = raw.strip()
        if not label:
            raise QueryError("empty column name; separate columns with single commas")
        head, dot, key = label.partition(".")
        kind = _KINDS.get(head.lower()) if dot else None
        if kind is not None and key:
            out.append(Column(kind, key, label))
            continue
        field = "run_id" if label == "id" else label
        if dot or field not in RUN_FIELDS:
            raise QueryError(
                f"unknown column {label!r}; use param.NAME, metric.NAME, tag.NAME or a job "
                f"field ({', '.join(('id', *RUN_FIELDS[1:]))})"
            )
        out.append(Column("field", field, label))
    return out


def column_value(column: Column, run: JobMetrics) -> Any:
    """The value of ``column`` for one job and its latest metrics (None when missing)."""
    job = run.job
    if column.kind == "field":
        return job["id"] if column.key == "run_id" else job.get(column.key)
    if column.kind == "metric":
        for point in run.metrics:
            if point.name == column.key:
                return point.value
        return None
    document: Mapping[str, Any] | None = job.get("params" if column.kind == "param" else "tags")
    return None if not document else document.get(column.key)


def _time(epoch: float | None) -> datetime | None:
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError):  # a time an older version let be stored
        return None


def _row(run: JobMetrics, columns: Sequence[Column] | None) -> dict[str, Any]:
    job = run.job
    if columns is not None:
        row = {"run_id": job["id"]}
        for column in columns:
            value = column_value(column, run)
            is_time = column.kind == "field" and column.key in _TIMES
            row[_label(column)] = _time(value) if is_time else value
        return row
    row = {f: job["id"] if f == "run_id" else job.get(f) for f in RUN_FIELDS}
    for field in _TIMES:
        row[field] = _time(row[field])
    for kind, document in (("params", job.get("params")), ("tags", job.get("tags"))):
        for key, value in (document or {}).items():
            row[f"{kind}.{key}"] = value
    for point in run.metrics:
        row[f"metrics.{point.name}"] = point.value
    return row


def _order(order_by: str | Sequence[str] | None) -> tuple[str | None, bool | None]:
    """(sort field, descending) from MLflow's ``["metrics.loss DESC"]`` or one such text."""
    if order_by is None:
        return None, None
    keys = [order_by] if isinstance(order_by, str) else list(order_by)
    if not keys:
        return None, None
    if len(keys) > 1 or not isinstance(keys[0], str) or not keys[0].strip():
        raise QueryError(f"order_by takes one field, e.g. 'metrics.loss DESC'; got {order_by!r}")
    field, _, direction = keys[0].strip().partition(" ")
    direction = direction.strip().upper()
    if direction not in {"", "ASC", "DESC"}:
        raise QueryError(f"order_by direction must be ASC or DESC, got {direction!r}")
    # The row's names sort too: run_id is the job's id.
    return "id" if field == "run_id" else field, (direction == "DESC") if direction else None


def search_runs(
    query: str | None = None,
    *,
    experiment: str | None = None,
    store: str | Reader | None = None,
    columns: str | Sequence[str] | None = None,
    max_results: int | None = 1000,
    order_by: str | Sequence[str] | None = None,
) -> Any:
    """Jobs matching ``query`` as a pandas DataFrame (a list of dicts without pandas).

    Each row holds ``run_id``, ``name``, ``experiment``, ``status``, ``start_time``,
    ``end_time`` (UTC datetimes), ``duration`` (seconds) and the other job fields
    (:data:`RUN_FIELDS`), then ``params.NAME``, ``metrics.NAME`` (the latest value) and
    ``tags.NAME`` columns for every param, metric and tag of the jobs found (missing
    values None, or NaN in a DataFrame). ``columns`` keeps ``run_id`` and the columns
    named instead, e.g. ``["params.lr", "metrics.loss"]``.

    ``query`` is jobtrace's search language, which also takes MLflow's filter strings:
    ``"metrics.loss < 0.5 AND params.lr = '0.1'"``. ``order_by`` is one field, MLflow's
    way: ``"metrics.loss"`` or ``["metrics.loss DESC"]`` (a job field, a metric, a param
    or a tag; default newest first). At most ``max_results`` rows (None: every match).
    ``store`` is a store URL (a database, a jobtrace server or a JSON-lines file) or an open
    store (default: the one ``jobtrace.configure``/``JOBTRACE_URL`` names).

    Example::

        runs = jobtrace.search_runs("metrics.loss < 0.5", order_by="metrics.loss")
        best = runs.iloc[0]["run_id"]
    """
    if max_results is not None and (
        isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1
    ):
        raise QueryError(f"max_results must be an integer >= 1 or None, got {max_results!r}")
    chosen = None if columns is None else parse_columns(columns)
    sort_by, descending = _order(order_by)

    def read(reader: Reader) -> Page[JobMetrics]:
        return reader.find_job_metrics(
            experiment=experiment,
            search=query,
            sort_by=sort_by,
            descending=descending,
            limit=max_results,
        )

    if store is None or isinstance(store, str):
        from jobtrace.store.reader import open_reader

        with open_reader(store) as opened:
            page = read(opened)
    else:
        page = read(store)
    rows = [_row(run, chosen) for run in page.data]
    names = _column_names(rows, chosen)
    for row in rows:  # every row has every column, as a DataFrame's rows do
        for name in names:
            row.setdefault(name, None)
    try:
        import pandas
    except ImportError:
        return [{name: row[name] for name in names} for row in rows]
    frame = pandas.DataFrame.from_records(rows, columns=names)
    for name in names:
        if name in _TIMES:
            frame[name] = pandas.to_datetime(frame[name], utc=True)
        elif name.startswith("metrics.") and not frame.empty:
            frame[name] = frame[name].astype("float64")  # None -> NaN, as MLflow's frame
    return frame


def _column_names(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column] | None) -> list[str]:
    if columns is not None:
        return list(dict.fromkeys(["run_id", *(_label(c) for c in columns)]))
    found: dict[str, set[str]] = {kind: set() for kind in _PLURAL.values()}
    for row in rows:
        for name in row:
            kind, dot, _ = name.partition(".")
            if dot and kind in found:
                found[kind].add(name)
    # MLflow's order: fields, then metrics, params and tags, each by name.
    return [
        *RUN_FIELDS,
        *sorted(found["metrics"]),
        *sorted(found["params"]),
        *sorted(found["tags"]),
    ]


def _label(column: Column) -> str:
    """A column's name in search_runs' rows: ``params.lr``, ``metrics.loss``, ``name``."""
    return column.key if column.kind == "field" else f"{_PLURAL[column.kind]}.{column.key}"
