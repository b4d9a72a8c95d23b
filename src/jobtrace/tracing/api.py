"""The five ways to add a trace point, as OSProfiler offers them.

>>> import jobtrace
>>> with jobtrace.Trace("load", info={"path": path}) as span:      # doctest: +SKIP
...     span.set("rows", len(rows))
>>> @jobtrace.trace("parse", hide_args=True)                         # doctest: +SKIP
... def parse(text): ...
>>> jobtrace.start("step"); ...; jobtrace.stop({"ok": True})        # doctest: +SKIP

Everything is decided when decorating: the span name, the function's qualified name, which
of args and result to keep, and which wrapper fits the function (plain, ``async def``,
generator, async generator). Each call gets its own info dict. Exceptions propagate
unchanged; the span records their type and message.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any, TypeVar

from jobtrace.tracing import spans
from jobtrace.tracing.spans import (
    UNSAMPLED,
    AnySpan,
    Span,
    _check_info,
    _check_name,
    _settings,
    _short_repr,
    _warn_once,
    begin,
    current_span_var,
)

F = TypeVar("F", bound=Callable[..., Any])

#: ``with jobtrace.Trace("name", info={...}) as span:`` — a trace point around a block. It is
#: the :class:`Span` type itself: the object is its own span and context manager.
Trace = Span


# -- start() / stop() -------------------------------------------------------------------------


def start(name: str, info: dict[str, Any] | None = None) -> None:
    """Open a trace point that a later :func:`stop` in the same context closes."""
    if not _settings.enabled:
        return
    _, span = begin(name, info)  # Span() checks the name and copies the info
    if isinstance(span, Span):
        span._manual = True  # only start() spans may be closed by stop()


def stop(info: dict[str, Any] | None = None) -> None:
    """Close the trace point the last :func:`start` opened; ``info`` is added to it."""
    if not _settings.enabled:
        return
    span = current_span_var.get()
    if span is UNSAMPLED:
        current_span_var.set(None)  # an unsampled start: nothing to record
        return
    if not isinstance(span, Span) or not getattr(span, "_manual", False):
        _warn_once("stop", "jobtrace: stop() without a matching start(); ignored")
        return
    span.update(_check_info(info))
    # Restore the parent by reference, not by token: start() and stop() may run in
    # different (copied) contexts, where a token cannot be used.
    current_span_var.set(span._parent)
    span.end()


# -- @trace ------------------------------------------------------------------------------------


def trace(
    name: str,
    info: dict[str, Any] | None = None,
    hide_args: bool = False,
    hide_result: bool = True,
    allow_multiple_trace: bool = True,
) -> Callable[[F], F]:
    """Decorate a function (sync or ``async``, generator or async generator) as a trace point.

    The span's info holds ``function.name`` (the qualified name), ``function.args`` and
    ``function.kwargs`` unless ``hide_args``, and ``function.result`` unless ``hide_result``.
    """
    span_name = _check_name(name)
    base_info = _check_info(info)

    def decorator(fn: F) -> F:
        if not allow_multiple_trace and getattr(fn, "__jobtrace_traced__", False):
            raise ValueError(f"{fn!r} is already traced (allow_multiple_trace=False)")
        wrapped = _wrap(fn, span_name, base_info, hide_args, hide_result)
        wrapped.__jobtrace_traced__ = True  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorator


def _qualified(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn)))
    return f"{module}.{qualname}" if module else qualname


def _wrap(
    fn: Callable[..., Any],
    name: str,
    base_info: dict[str, Any] | None,
    hide_args: bool,
    hide_result: bool,
) -> Callable[..., Any]:
    import inspect  # here, not at module level: it costs `import jobtrace` ~5 ms

    qualname = _qualified(fn)
    settings = _settings
    var = current_span_var

    # Decided here, once: each call only builds its own (fresh) info dicts.
    def call_info(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if hide_args:
            function: dict[str, Any] = {"name": qualname}
        else:
            function = {"name": qualname, "args": _short_repr(args), "kwargs": _short_repr(kwargs)}
        if base_info is None:
            return {"function": function}
        info = dict(base_info)
        info["function"] = function
        return info

    keep_result = not hide_result

    def finish(span: AnySpan, result: Any) -> None:
        if isinstance(span, Span) and span.info is not None:
            span.info["function"]["result"] = _short_repr(result)

    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def traced_agen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            if not settings.enabled:
                async for item in fn(*args, **kwargs):
                    yield item
                return
            holder, span = begin(name, call_info(args, kwargs))
            if holder._token is not None:  # the span is current only while the generator runs
                var.reset(holder._token)
            agen = fn(*args, **kwargs)
            sent: Any = None
            error: BaseException | None = None
            try:
                while True:
                    # The span is current only while the generator's own code runs: the
                    # consumer's context must not see it between items.
                    token = var.set(span)
                    try:
                        item = await (agen.athrow(error) if error is not None else agen.asend(sent))
                    except StopAsyncIteration:
                        span.end()
                        return
                    except BaseException as exc:
                        span.end(exc)
                        raise
                    finally:
                        var.reset(token)
                    error = None
                    try:
                        sent = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        span.end()
                        raise
                    except BaseException as exc:
                        error = exc
            finally:
                span.end()  # no-op if already ended

        return traced_agen

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def traced_gen(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            if not settings.enabled:
                result: Any = yield from fn(*args, **kwargs)
                return result
            holder, span = begin(name, call_info(args, kwargs))
            if holder._token is not None:  # the span is current only while the generator runs
                var.reset(holder._token)
            gen = fn(*args, **kwargs)
            sent: Any = None
            error: BaseException | None = None
            try:
                while True:
                    token = var.set(span)
                    try:
                        item = gen.throw(error) if error is not None else gen.send(sent)
                    except StopIteration as stop:
                        if keep_result:
                            finish(span, stop.value)
                        span.end()
                        value: Any = stop.value
                        return value
                    except BaseException as exc:
                        span.end(exc)
                        raise
                    finally:
                        var.reset(token)
                    error = None
                    try:
                        sent = yield item
                    except GeneratorExit:
                        gen.close()
                        span.end()
                        raise
                    except BaseException as exc:
                        error = exc
            finally:
                span.end()

        return traced_gen

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def traced_async(*args: Any, **kwargs: Any) -> Any:
            if not settings.enabled:
                return await fn(*args, **kwargs)
            # Runs when awaited, in the awaiting task's context: timed until it finishes.
            holder, span = begin(name, call_info(args, kwargs))
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                holder.__exit__(None, exc, None)
                raise
            if keep_result:
                finish(span, result)
            holder.__exit__(None, None, None)
            return result

        return traced_async

    if spans._c is not None:  # the compiled wrapper: one C call around the function
        wrapper = spans._c.TracedFunction(fn, name, qualname, base_info, hide_args, hide_result)
        return functools.update_wrapper(wrapper, fn)

    @functools.wraps(fn)
    def traced(*args: Any, **kwargs: Any) -> Any:
        if not settings.enabled:
            return fn(*args, **kwargs)
        holder, span = begin(name, call_info(args, kwargs))
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            holder.__exit__(None, exc, None)
            raise
        if keep_result:
            finish(span, result)
        holder.__exit__(None, None, None)
        return result

    return traced


# -- @trace_cls and TracedMeta -------------------------------------------------------------------


def rewrap(member: Any, decorate: Callable[[Any], Any]) -> Any:
    """``decorate`` applied to a class member as found in a class's ``__dict__``, keeping
    its kind: a staticmethod or classmethod stays one, around the decorated function."""
    if isinstance(member, staticmethod):
        return staticmethod(decorate(member.__func__))
    if isinstance(member, classmethod):
        return classmethod(decorate(member.__func__))
    return decorate(member)


def _trace_members(
    cls: type,
    name: str,
    info: dict[str, Any] | None,
    hide_args: bool,
    hide_result: bool,
    trace_private: bool,
    trace_static_methods: bool,
    trace_class_methods: bool,
) -> None:
    import inspect

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        return _wrap(fn, name, info, hide_args, hide_result)

    for attr, value in list(vars(cls).items()):
        if attr.startswith("__") and attr.endswith("__"):
            continue  # dunders: construction, repr and friends are not the interesting work
        if attr.startswith("_") and not trace_private:
            continue
        if isinstance(value, staticmethod):
            wanted = trace_static_methods
        elif isinstance(value, classmethod):
            wanted = trace_class_methods
        else:
            wanted = inspect.isfunction(value) and not getattr(value, "__jobtrace_traced__", False)
        if wanted:
            traced = rewrap(value, decorate)
            if inspect.isfunction(traced):  # a plain method: marked, so it is traced once
                traced.__jobtrace_traced__ = True  # type: ignore[attr-defined]
            setattr(cls, attr, traced)


def trace_cls(
    name: str,
    info: dict[str, Any] | None = None,
    hide_args: bool = False,
    hide_result: bool = True,
    trace_private: bool = False,
    trace_static_methods: bool = False,
    trace_class_methods: bool = False,
) -> Callable[[type], type]:
    """Trace every public method of a class (private ones too with ``trace_private``)."""
    span_name = _check_name(name)
    base_info = _check_info(info)

    def decorator(cls: type) -> type:
        _trace_members(
            cls, span_name, base_info, hide_args, hide_result,
            trace_private, trace_static_methods, trace_class_methods,
        )  # fmt: skip
        return cls

    return decorator


class TracedMeta(type):
    """A metaclass that traces a class's methods, configured by ``__trace_args__``::

    class Api(metaclass=jobtrace.TracedMeta):
        __trace_args__ = {"name": "rpc", "info": None, "hide_args": False}
    """

    def __init__(cls, cls_name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(cls_name, bases, namespace)
        options = dict(
            namespace.get("__trace_args__") or getattr(cls, "__trace_args__", None) or {}
        )
        if "name" not in options:
            raise TypeError(f"{cls_name}: TracedMeta needs __trace_args__ = {{'name': ...}}")
        _trace_members(
            cls,
            _check_name(options.pop("name")),
            _check_info(options.pop("info", None)),
            bool(options.pop("hide_args", False)),
            bool(options.pop("hide_result", True)),
            bool(options.pop("trace_private", False)),
            bool(options.pop("trace_static_methods", False)),
            bool(options.pop("trace_class_methods", False)),
        )
        if options:
            raise TypeError(f"{cls_name}: unknown __trace_args__ keys {sorted(options)}")
