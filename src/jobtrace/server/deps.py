"""Dependencies shared by the routes: the app's store and reads through it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from jobtrace.store.core import Store

__all__ = ["StoreDep", "get_store", "read"]

T = TypeVar("T")


def get_store(request: Request) -> Store:
    """The store the app was created for (one per worker process)."""
    store: Store = request.app.state.store
    return store


StoreDep = Annotated[Store, Depends(get_store)]


def read(store: Store, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a query function ``fn(conn, …)`` on a pooled connection; a database failure
    becomes a :class:`~jobtrace.errors.StoreError` (answered as a 503)."""
    result: T = store._read(fn, *args, **kwargs)
    return result
