"""@profile: context strings for functions, methods, static and class methods (either
order), sync and async; hooks, also on exceptions; default metrics; handlers by name."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from typing import Any

import pytest

import jobtrace
from jobtrace.instruments import (
    REGISTRY,
    RESPONSE_SIZE,
    TIME_PROFILER,
    Counter,
    Histogram,
    InstrumentRegistry,
    LoggerHandler,
    NamedLoggerHandler,
    StreamHandler,
    profile,
    profiler,
)
from jobtrace.instruments.calls import Profiler
from jobtrace.instruments.handlers import BaseHandler, ProfileRecord
from tests.instruments_helpers import clean_instruments

__all__ = ["clean_instruments"]


def contexts() -> dict[tuple[str, ...], int]:
    """Observations per label set of the time histogram."""
    histogram = REGISTRY.get(TIME_PROFILER)
    assert histogram is not None
    return {labels: cell.count for labels, cell in histogram.series()}


class Shop:
    @profile
    def checkout(self, cart: list[int]) -> int:
        return self.price(cart) + Shop.tax() + Shop.fee()

    @profile
    def price(self, cart: list[int]) -> int:
        return sum(cart)

    @staticmethod
    @profile
    def tax() -> int:
        return 1

    @profile
    @classmethod
    def fee(cls) -> int:
        return 2

    @profile
    @staticmethod
    def audit() -> str:
        return "ok"

    @classmethod
    @profile
    def open(cls) -> str:
        return "open"


@profile
def handler_function(x: int) -> int:
    return x


@profile
async def fetch(n: int) -> int:
    await asyncio.sleep(0)
    return await parse(n)


@profile
async def parse(n: int) -> int:
    return n


class Recording(BaseHandler):
    def __init__(self, name: str = "recording") -> None:
        super().__init__(name)
        self.calls: list[list[ProfileRecord]] = []

    def handle(self, records: list[ProfileRecord], profiler_name: str = "profiler") -> None:
        self.calls.append(records)


def test_calls_are_timed_by_phanos_context_string() -> None:
    assert Shop().checkout([1, 2]) == 6
    assert contexts() == {
        ("Shop:checkout",): 1,
        ("Shop:checkout.price",): 1,
        ("Shop:checkout.tax",): 1,
        ("Shop:checkout.fee",): 1,
    }


def test_static_and_class_methods_work_with_the_decorator_on_either_side() -> None:
    assert (Shop.tax(), Shop.fee(), Shop.audit(), Shop.open()) == (1, 2, "ok", "open")
    assert (Shop().audit(), Shop().open()) == ("ok", "open")
    assert contexts() == {
        ("Shop:tax",): 1,
        ("Shop:fee",): 1,
        ("Shop:audit",): 2,
        ("Shop:open",): 2,
    }


def test_a_plain_function_is_owned_by_its_module() -> None:
    handler_function(1)
    assert contexts() == {("test_profile:handler_function",): 1}


def test_the_wrapper_looks_like_the_function() -> None:
    assert handler_function.__name__ == "handler_function"
    assert Shop.checkout.__qualname__ == "Shop.checkout"


def test_async_calls_nest_within_their_own_task() -> None:
    async def main() -> list[int]:
        return await asyncio.gather(*(fetch(i) for i in range(20)))

    assert asyncio.run(main()) == list(range(20))
    # Each task's context is its own: no call nests under another task's call.
    assert contexts() == {("test_profile:fetch",): 20, ("test_profile:fetch.parse",): 20}


def test_threads_each_have_their_own_context() -> None:
    barrier = threading.Barrier(8)

    @profile
    def outer() -> None:
        barrier.wait()
        handler_function(1)

    workers = [threading.Thread(target=outer) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert contexts() == {
        ("test_profile:outer",): 8,
        ("test_profile:outer.handler_function",): 8,
    }


def test_an_exception_propagates_unchanged_and_the_call_is_still_timed() -> None:
    @profile
    def fail() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        fail()
    assert contexts() == {("test_profile:fail",): 1}


def test_the_error_raised_label_splits_failed_calls() -> None:
    profiler.config(error_raised_label=True)

    @profile
    def maybe(fail: bool) -> None:
        if fail:
            raise ValueError

    maybe(False)
    with pytest.raises(ValueError):
        maybe(True)
    assert contexts() == {("test_profile:maybe", "False"): 1, ("test_profile:maybe", "True"): 1}


# -- hooks ----------------------------------------------------------------------------------------


def test_hooks_receive_the_function_arguments_and_result() -> None:
    seen: list[tuple[str, Any, tuple[Any, ...], dict[str, Any]]] = []
    profiler.before_func = lambda f, a, k: seen.append(("before", f.__name__, a, k))
    profiler.after_func = lambda r, a, k: seen.append(("after", r, a, k))
    profiler.before_root_func = lambda f, a, k: seen.append(("before_root", f.__name__, a, k))
    profiler.after_root_func = lambda r, a, k: seen.append(("after_root", r, a, k))

    @profile
    def root(x: int, *, y: int) -> int:
        return handler_function(x) + y

    assert root(1, y=2) == 3
    assert seen == [
        ("before_root", "root", (1,), {"y": 2}),
        ("before", "root", (1,), {"y": 2}),
        ("before", "handler_function", (1,), {}),
        ("after", 1, (1,), {}),
        ("after", 3, (1,), {"y": 2}),
        ("after_root", 3, (1,), {"y": 2}),
    ]


def test_after_hooks_run_when_the_call_raises_and_get_the_exception() -> None:
    results: list[Any] = []
    profiler.after_func = lambda r, a, k: results.append(("after", r))
    profiler.after_root_func = lambda r, a, k: results.append(("after_root", r))
    error = RuntimeError("boom")

    @profile
    def explode() -> None:
        raise error

    with pytest.raises(RuntimeError):
        explode()
    assert results == [("after", error), ("after_root", error)]


def test_a_hook_that_raises_is_logged_once_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*_: Any) -> None:
        raise ZeroDivisionError

    profiler.before_func = broken
    profiler.after_root_func = broken
    with caplog.at_level(logging.ERROR, logger="jobtrace.instruments"):
        assert handler_function(5) == 5
        assert handler_function(6) == 6
    assert len([r for r in caplog.records if "before_func" in r.getMessage()]) == 1
    assert contexts() == {("test_profile:handler_function",): 2}


def test_hooks_are_called_in_async_calls_too() -> None:
    names: list[str] = []
    profiler.before_func = lambda f, a, k: names.append(f.__name__)
    asyncio.run(fetch(3))
    assert names == ["fetch", "parse"]


# -- default metrics ---------------------------------------------------------------------------


def test_time_profiler_can_be_deleted_and_response_size_turned_on() -> None:
    profiler.config(job="shop", response_size_profile=True)
    profiler.delete_metric(TIME_PROFILER)

    @profile
    def page() -> bytes:
        return b"x" * 1500

    page()
    assert REGISTRY.get(TIME_PROFILER) is None
    size = REGISTRY.get(RESPONSE_SIZE)
    assert size is not None
    ((labels, cell),) = size.series()
    assert labels == ("test_profile:page",)
    assert (cell.count, cell.sum) == (1, 1500)


def test_config_without_time_profile_measures_nothing_by_default() -> None:
    profiler.config(time_profile=False)
    handler_function(1)
    assert REGISTRY.get(TIME_PROFILER) is None


def test_handle_records_false_turns_profiling_off() -> None:
    profiler.config(handle_records=False)
    called: list[int] = []
    profiler.before_func = lambda f, a, k: called.append(1)
    assert handler_function(4) == 4
    assert called == []
    assert REGISTRY.get(TIME_PROFILER) is None


def test_nothing_is_registered_before_the_first_profiled_call() -> None:
    assert REGISTRY.get(TIME_PROFILER) is None
    handler_function(1)
    assert REGISTRY.get(TIME_PROFILER) is not None


def test_first_calls_on_two_threads_at_once_set_up_the_profiler_once() -> None:
    # The first call's setup registers the default histogram; a second thread's first call
    # arriving meanwhile used to register it again, and the registry's refusal was raised
    # into that call. It now runs unprofiled instead, without waiting for the setup.
    errors: list[BaseException] = []
    other_call: list[threading.Thread] = []

    class InterleavingRegistry(InstrumentRegistry):
        def register(self, metric: Any) -> None:
            if not other_call:  # the first registration: another thread's first call now
                other_call.append(threading.Thread(target=call))
                other_call[0].start()
                other_call[0].join()
            super().register(metric)

    prof = Profiler("race", registry=InterleavingRegistry())

    @prof.profile
    def work() -> int:
        return 1

    def call() -> None:
        try:
            work()
        except Exception as exc:
            errors.append(exc)

    call()
    assert errors == []
    time_histogram = prof._registry.get(TIME_PROFILER)
    assert time_histogram is not None and time_histogram.labels("test_profile:work").count == 1


def test_a_failed_setup_is_logged_and_the_call_runs_unprofiled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = InstrumentRegistry()
    Histogram(TIME_PROFILER, registry=registry)  # the profiler's default name, taken
    prof = Profiler("taken", registry=registry)

    @prof.profile
    def work() -> int:
        return 1

    assert work() == 1 and work() == 1
    assert caplog.text.count("could not create its default metrics") == 1


def test_profile_is_the_top_level_name() -> None:
    assert jobtrace.profile is profile


# -- handlers ----------------------------------------------------------------------------------


def test_handlers_get_each_root_calls_records_off_the_callers_thread() -> None:
    threads: list[str] = []

    class Where(Recording):
        def handle(self, records: list[ProfileRecord], profiler_name: str = "profiler") -> None:
            threads.append(threading.current_thread().name)
            super().handle(records, profiler_name)

    handler = Where()
    profiler.config(job="shop")
    profiler.add_handler(handler)
    Shop().checkout([1])
    handler_function(2)
    assert handler.calls == []  # nothing on the caller's thread
    assert profiler.flush()
    assert threads and threading.current_thread().name not in set(threads) - {"MainThread"}
    first, second = handler.calls
    assert [r["method"] for r in first] == [
        "Shop:checkout.price",
        "Shop:checkout.tax",
        "Shop:checkout.fee",
        "Shop:checkout",
    ]
    assert first[-1]["item"] == "Shop"
    assert first[-1]["job"] == "shop"
    assert first[-1]["value"][0] == "observe"
    assert [r["method"] for r in second] == ["test_profile:handler_function"]


def test_handlers_are_added_and_removed_by_name() -> None:
    one, two = Recording("one"), Recording("two")
    profiler.add_handler(one)
    profiler.add_handler(two)
    handler_function(1)
    profiler.delete_handler("one")
    handler_function(2)
    profiler.flush()
    assert (len(one.calls), len(two.calls)) == (1, 2)
    assert set(profiler.handlers) == {"two"}


def test_a_failing_handler_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(BaseHandler):
        def handle(self, records: list[ProfileRecord], profiler_name: str = "profiler") -> None:
            raise OSError("disk full")

    good = Recording()
    profiler.add_handler(Broken("broken"))
    profiler.add_handler(good)
    with caplog.at_level(logging.ERROR, logger="jobtrace.instruments"):
        handler_function(1)
        handler_function(2)
        profiler.flush()
    assert len(good.calls) == 2
    assert profiler.dispatcher.failed == 2
    assert len([r for r in caplog.records if "broken" in r.getMessage()]) == 1


def test_stream_and_logger_handlers_write_one_line_per_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = io.StringIO()
    profiler.add_handler(StreamHandler("stream", out))
    profiler.add_handler(LoggerHandler("log", logging.getLogger("shop"), logging.INFO))
    profiler.add_handler(NamedLoggerHandler("named", "shop.named", logging.WARNING))
    with caplog.at_level(logging.INFO):
        handler_function(1)
        profiler.flush()
    line = out.getvalue().strip()
    assert line.startswith("profiler: profiler, method: test_profile:handler_function, value: ")
    assert line.endswith(" s")
    assert [r.name for r in caplog.records if "handler_function" in r.getMessage()] == [
        "shop",
        "shop.named",
    ]


def test_operations_of_an_added_metric_travel_with_the_root_calls_records() -> None:
    orders = Counter("orders", "shop", "orders", ["status"])
    profiler.add_metric(orders)
    handler = Recording()
    profiler.add_handler(handler)
    profiler.before_root_func = lambda f, a, k: orders.inc(1, {"status": "ok"})
    handler_function(1)
    orders.inc(5, {"status": "ok"})  # outside a profiled call: counted, not handed on
    profiler.flush()
    ((records),) = handler.calls
    op = records[0]
    assert (op["item"], op["metric"], op["labels"], op["value"]) == (
        "orders",
        "counter",
        {"status": "ok"},
        ("inc", 1),
    )
    assert orders.labels("ok").value == 6
    profiler.delete_metric("orders")
    handler_function(1)
    profiler.flush()
    assert len(handler.calls[1]) == 1  # only the time record now


def test_a_full_handler_queue_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    handler = Recording()
    profiler.add_handler(handler)
    profiler.dispatcher.capacity = 0
    with caplog.at_level(logging.WARNING, logger="jobtrace.instruments"):
        handler_function(1)
        handler_function(2)
    profiler.dispatcher.capacity = 100_000
    assert profiler.dispatcher.dropped == 2
    assert len([r for r in caplog.records if "queue full" in r.getMessage()]) == 1
    profiler.dispatcher.dropped = 0
