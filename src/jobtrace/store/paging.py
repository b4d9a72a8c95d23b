"""Pages of query results, with one meaning of ``index`` everywhere: an element offset.

A reader asks for ``limit`` elements starting at element ``index`` of a stable order (every
order ends with a unique key, so following pages returns each element exactly once) and
gets a :class:`Page` carrying the total, from which a REST layer builds its envelope
(``first``/``next``/``prev`` links, ``isComplete``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import sqlalchemy as sa

from jobtrace.errors import QueryError

__all__ = ["DEFAULT_PAGE_LENGTH", "MAX_PAGE_LENGTH", "Page", "check_paging", "order_by"]

T = TypeVar("T")

#: Page length when a reader gives none (Dioptra's default).
DEFAULT_PAGE_LENGTH: Final = 10
#: Longest page a REST request may ask for; the store itself accepts any length.
MAX_PAGE_LENGTH: Final = 1000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """``data``: up to ``limit`` elements from element ``index``; ``total``: all matches."""

    data: list[T]
    index: int
    limit: int | None
    total: int

    @property
    def is_complete(self) -> bool:
        """True when no element follows this page."""
        return self.index + len(self.data) >= self.total

    @property
    def next_index(self) -> int | None:
        """The ``index`` of the next page, or None on the last."""
        return None if self.is_complete else self.index + len(self.data)

    @property
    def prev_index(self) -> int | None:
        """The ``index`` of the previous page, or None on the first."""
        if self.index == 0:
            return None
        return max(0, self.index - (self.limit or self.index))

    def map(self, fn: Callable[[T], Any]) -> Page[Any]:
        """The same page with ``fn`` applied to each element."""
        return Page([fn(x) for x in self.data], self.index, self.limit, self.total)


def check_paging(index: int, limit: int | None) -> None:
    """Raise :class:`QueryError` unless ``index >= 0`` and ``limit`` is None or ``>= 1``."""
    if type(index) is not int or index < 0:
        raise QueryError(f"index must be an integer >= 0, got {index!r}")
    if limit is not None and (type(limit) is not int or limit < 1):
        raise QueryError(f"page length must be an integer >= 1, got {limit!r}")


def order_by(
    keys: Sequence[sa.ColumnElement[Any]], descending: bool
) -> list[sa.ColumnElement[Any]]:
    """ORDER BY terms for ``keys`` in one direction, missing values last either way.

    ``(key IS NULL)`` rather than ``NULLS LAST``: the same on every SQLite and PostgreSQL.
    """
    out: list[sa.ColumnElement[Any]] = []
    for key in keys:
        out.append(sa.case((key.is_(None), 1), else_=0))
        out.append(key.desc() if descending else key.asc())
    return out
