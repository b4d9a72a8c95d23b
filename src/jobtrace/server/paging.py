"""The one paging envelope of the API.

``index`` is always an element offset (the position of the page's first element in the
whole result), ``pageLength`` the number of elements per page (default 10, at most 1000).
The ``first``, ``next`` and ``prev`` links repeat every query parameter of the request with
only ``index`` changed, so following ``next`` from the first page visits every element
exactly once::

    {"index": 20, "isComplete": false, "totalNumResults": 57,
     "first": "/api/v1/jobs?index=0&pageLength=10",
     "next": "/api/v1/jobs?index=30&pageLength=10",
     "prev": "/api/v1/jobs?index=10&pageLength=10",
     "data": [...]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request

from jobtrace.limits import MAX_INT
from jobtrace.server.errors import APIError
from jobtrace.store.paging import DEFAULT_PAGE_LENGTH, MAX_PAGE_LENGTH, Page

__all__ = ["MAX_PAGE_LENGTH", "PAGE_LENGTH", "PageDep", "Paging", "envelope", "paging"]

PAGE_LENGTH = DEFAULT_PAGE_LENGTH


@dataclass(frozen=True, slots=True)
class Paging:
    index: int
    page_length: int


def paging(
    index: Annotated[
        int,
        Query(
            le=MAX_INT,  # a 64-bit OFFSET: 2**64 reached the database and came back a 500
            description="Offset of the page's first element in the whole result.",
        ),
    ] = 0,
    page_length: Annotated[
        int,
        Query(
            alias="pageLength",
            description=f"Elements per page, 1 to {MAX_PAGE_LENGTH}.",
        ),
    ] = PAGE_LENGTH,
) -> Paging:
    """The paging query parameters, checked (a FastAPI dependency)."""
    if index < 0:
        raise APIError(400, f"index must be 0 or more, got {index}", kind="invalid_paging")
    if not 1 <= page_length <= MAX_PAGE_LENGTH:
        raise APIError(
            400,
            f"pageLength must be between 1 and {MAX_PAGE_LENGTH}, got {page_length}",
            kind="invalid_paging",
            detail={"maxPageLength": MAX_PAGE_LENGTH},
        )
    return Paging(index, page_length)


PageDep = Annotated[Paging, Depends(paging)]


def _link(request: Request, index: int, page_length: int) -> str:
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in _PAGING_KEYS]
    params += [("index", str(index)), ("pageLength", str(page_length))]
    return f"{request.url.path}?{urlencode(params)}"


_PAGING_KEYS = frozenset({"index", "pageLength"})


def envelope(request: Request, page: Page[Any], page_length: int | None = None) -> dict[str, Any]:
    """Wrap a store :class:`~jobtrace.store.paging.Page` whose elements are already in
    their wire form; the links keep ``pageLength`` (``page.limit`` unless given)."""
    length = page_length or page.limit or max(1, len(page.data))
    next_index, prev_index = page.next_index, page.prev_index
    return {
        "index": page.index,
        "isComplete": next_index is None,
        "totalNumResults": page.total,
        "first": _link(request, 0, length),
        "next": None if next_index is None else _link(request, next_index, length),
        "prev": None if prev_index is None else _link(request, prev_index, length),
        "data": page.data,
    }
