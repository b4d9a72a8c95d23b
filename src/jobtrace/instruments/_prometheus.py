"""prometheus_client's side of the instruments: its constructor signatures and helpers.

Code written for prometheus_client runs after changing only its import:

>>> from jobtrace.instruments import Counter, Histogram    # was: from prometheus_client …
>>> c = Counter("my_requests_total", "HTTP Failures", ["method", "endpoint"])
>>> c.labels("get", "/").inc()
>>> h = Histogram("latency_seconds", "Description of histogram", namespace="shop")
>>> h.name
'shop_latency_seconds'

A declaration is read in prometheus_client's form when it uses one of its keywords
(``labelnames``, ``namespace``, ``subsystem``, ``unit``, ``multiprocess_mode``) or registry
(a ``CollectorRegistry``), passes the
label names as the third positional argument (a list, where jobtrace's form has the units
string), or passes a second positional argument that reads as prose (it contains a space)
where jobtrace's and Phanos's form has the ``job``. In that form the second argument is the
documentation, the name is ``namespace_subsystem_name`` with ``_unit`` appended, and a
counter's ``_total`` is dropped (the exposition adds it back).

prometheus_client's ``registry=`` (a ``CollectorRegistry``) is honoured: the instrument goes
to a jobtrace registry tied to it, exposed there by an
:class:`~jobtrace.instruments.exposition.InstrumentCollector`; prometheus_client's default
``REGISTRY`` means jobtrace's default one. And when prometheus_client is already imported
(its ``start_http_server`` serves its ``REGISTRY``), the first instrument declared in its
form also exposes jobtrace's default registry there, once per process.
"""

from __future__ import annotations

import functools
import inspect
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from jobtrace.instruments.registry import InstrumentRegistry

__all__ = ["PROMETHEUS_KEYWORDS", "Guard", "adapt_registry", "expose_default", "full_name"]

#: Keywords only prometheus_client's constructors take.
PROMETHEUS_KEYWORDS: Final = ("labelnames", "namespace", "subsystem", "unit", "multiprocess_mode")

#: prometheus_client's multiprocess modes as jobtrace's gauge merge modes.
GAUGE_MODES: Final = {
    "all": "sum", "liveall": "live-sum", "sum": "sum", "livesum": "live-sum",
    "max": "max", "livemax": "max", "min": "min", "livemin": "min",
    "mostrecent": "last", "livemostrecent": "last",
}  # fmt: skip


def is_prometheus_form(
    job: Any, units: Any, rest: tuple[Any, ...], options: dict[str, Any], foreign_registry: bool
) -> bool:
    """Whether a declaration uses prometheus_client's signature (see the module docstring).
    ``rest`` holds the positional arguments after the units (labels, logger);
    ``foreign_registry`` says a prometheus_client registry was given."""
    if foreign_registry or any(options.get(k) not in (None, "", ()) for k in PROMETHEUS_KEYWORDS):
        return True
    if units is not None and not isinstance(units, str):
        return True  # label names where jobtrace's form has the units
    return (
        isinstance(job, str)
        and any(c.isspace() for c in job)
        and all(value is None for value in rest)
    )


def full_name(kind: str, name: str, namespace: str, subsystem: str, unit: str) -> str:
    """prometheus_client's full metric name: ``namespace_subsystem_name[_unit]``."""
    full = "_".join(part for part in (namespace, subsystem, name) if part)
    if kind == "counter":
        full = full.removesuffix("_total")
    if unit and not full.endswith(f"_{unit}"):
        full = f"{full}_{unit}"
    return full


_adapted: dict[int, tuple[Any, InstrumentRegistry]] = {}
_adapt_lock = threading.Lock()
_exposed = threading.Event()


def adapt_registry(registry: Any) -> InstrumentRegistry:
    """The jobtrace registry standing for a prometheus_client ``CollectorRegistry``."""
    from jobtrace.instruments.registry import REGISTRY, InstrumentRegistry

    prometheus = sys.modules.get("prometheus_client")
    if prometheus is not None and registry is getattr(prometheus, "REGISTRY", None):
        expose_default()
        return REGISTRY
    with _adapt_lock:
        known = _adapted.get(id(registry))
        if known is not None and known[0] is registry:
            return known[1]
        from jobtrace.instruments.exposition import InstrumentCollector

        ours = InstrumentRegistry()
        registry.register(InstrumentCollector(ours))
        _adapted[id(registry)] = (registry, ours)  # the registry is kept: its id stays unique
        return ours


def expose_default() -> None:
    """Expose jobtrace's default registry in prometheus_client's ``REGISTRY`` (once, and
    only if prometheus_client is imported already: recording never imports it)."""
    prometheus = sys.modules.get("prometheus_client")
    if _exposed.is_set() or prometheus is None or not hasattr(prometheus, "REGISTRY"):
        return
    with _adapt_lock:
        if _exposed.is_set():
            return
        _exposed.set()
        from jobtrace.instruments.exposition import InstrumentCollector

        target = prometheus.REGISTRY
        # A service that registered a collector itself (as the README shows) keeps just it.
        existing = getattr(target, "_collector_to_names", {})
        if not any(isinstance(c, InstrumentCollector) for c in list(existing)):
            target.register(InstrumentCollector())


class Guard:
    """A context manager that is also a decorator (sync and ``async``): prometheus_client's
    ``time()``, ``count_exceptions()`` and ``track_inprogress()``. ``enter()`` runs first
    and its result goes to ``leave(state, exception type)``; neither may raise."""

    __slots__ = ("_enter", "_leave", "_states")

    def __init__(
        self, enter: Callable[[], Any], leave: Callable[[Any, type[BaseException] | None], None]
    ) -> None:
        self._enter = enter
        self._leave = leave
        self._states: list[Any] = []

    def __enter__(self) -> Guard:
        self._states.append(self._enter())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: Any) -> None:
        self._leave(self._states.pop(), exc_type)

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        enter, leave = self._enter, self._leave
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                state = enter()
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    leave(state, type(exc))
                    raise
                leave(state, None)
                return result

            return guarded_async

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            state = enter()  # per call, so recursive and concurrent calls each time their own
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                leave(state, type(exc))
                raise
            leave(state, None)
            return result

        return guarded


def timer(observe: Callable[[float], None]) -> Guard:
    """Observes the seconds a block or call took."""
    return Guard(time.perf_counter, lambda t0, _: observe(max(time.perf_counter() - t0, 0.0)))


def exception_counter(inc: Callable[[], None], exception: Any = Exception) -> Guard:
    """Counts the blocks or calls that raised ``exception`` (they still raise)."""

    def leave(_: Any, exc_type: type[BaseException] | None) -> None:
        if exc_type is not None and issubclass(exc_type, exception):
            inc()

    return Guard(lambda: None, leave)


def in_progress(inc: Callable[[], None], dec: Callable[[], None]) -> Guard:
    """Raises a gauge while a block or call runs."""
    return Guard(inc, lambda _, __: dec())
