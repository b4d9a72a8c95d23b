"""Phanos's dict configuration: handlers built from their dotted class paths."""

from __future__ import annotations

import copy
import importlib
import inspect
from typing import Any

import jobtrace.compat.phanos as _api  # what a test may replace there is looked up there
from jobtrace.compat.phanos._base import EXTERNAL_PREFIX
from jobtrace.compat.phanos._handlers import AsyncBaseHandler


def inherits_from(child: Any, parent: type) -> bool:
    """Whether the class ``child`` derives from a class named like ``parent``."""
    return inspect.isclass(child) and parent.__name__ in [c.__name__ for c in child.__mro__[1:]]


def import_external(full_name: str) -> Any:
    """The object a dotted path names (``"sys.stdout"``). Phanos's own paths
    (``phanos.publisher.StreamHandler``) name this package's classes."""
    parts = full_name.split(".")
    if parts[0] == "phanos":
        return getattr(_api, parts[-1])
    obj: Any = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


def _to_callable(elem: Any) -> Any:
    return import_external(elem) if isinstance(elem, str) else elem


def parse_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments with ``ext://dotted.name`` strings replaced by the objects they name."""
    return {
        name: import_external(arg[len(EXTERNAL_PREFIX):])
        if isinstance(arg, str) and arg.startswith(EXTERNAL_PREFIX) else arg
        for name, arg in arguments.items()
    }  # fmt: skip


def create_handlers(configs: dict[str, Any]) -> dict[str, Any]:
    """Sync handlers from their dict configs (``class``, ``handler_name``, arguments)."""
    handlers = {}
    for ref, conf in configs.items():
        kwargs = copy.deepcopy(conf)
        cls = _to_callable(kwargs.pop("class"))
        if inherits_from(cls, AsyncBaseHandler):
            raise ValueError("Cannot create async handler in sync profiler")
        handlers[ref] = cls(**parse_arguments(kwargs))
    return handlers


async def create_async_handlers(configs: dict[str, Any]) -> dict[str, Any]:
    """Sync and async handlers from their dict configs (async ones via ``create``)."""
    handlers = {}
    for ref, conf in configs.items():
        kwargs = copy.deepcopy(conf)
        cls = _to_callable(kwargs.pop("class"))
        arguments = parse_arguments(kwargs)
        if inherits_from(cls, AsyncBaseHandler):
            handlers[ref] = await cls.create(**arguments)
        else:
            handlers[ref] = cls(**arguments)
    return handlers
