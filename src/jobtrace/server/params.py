"""Query parameters and request-body conventions shared by the routes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from jobtrace.server.errors import APIError
from jobtrace.server.wire import camel, snake
from jobtrace.store.search import FIELD_PREFIXES

__all__ = ["APIModel", "Descending", "Search", "SortBy", "sort_field"]

SortBy = Annotated[
    str | None,
    Query(alias="sortBy", max_length=300, description="Field to sort by (camelCase)."),
]
Descending = Annotated[bool | None, Query(description="Sort in descending order.")]
Search = Annotated[str | None, Query(max_length=2000, description="A search query.")]


class APIModel(BaseModel):
    """Request bodies: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def sort_field(
    sort_by: str | None, fields: Iterable[str], *, metric_prefix: bool = False
) -> str | None:
    """``sortBy`` checked against the store's sortable ``fields`` (camelCase or snake_case;
    ``metric.NAME``, ``param.NAME`` and ``tag.NAME`` too with ``metric_prefix``), or a 422
    listing them in camelCase."""
    if sort_by is None:
        return None
    head, dot, key = sort_by.partition(".")
    if metric_prefix and dot and key and head.lower() in FIELD_PREFIXES:
        return sort_by
    name = snake(sort_by)
    if name not in fields:
        dotted = ["metric.NAME", "param.NAME", "tag.NAME"] if metric_prefix else []
        allowed = [camel(f) for f in fields] + dotted
        raise APIError(
            422,
            f"cannot sort by {sort_by!r}; sortable fields: {', '.join(allowed)}",
            kind="invalid_query",
            detail={"field": "sortBy", "allowed": allowed},
        )
    return name
