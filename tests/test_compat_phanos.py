"""jobtrace.compat.phanos: Phanos's 0.0.x and 0.3.x API on jobtrace — contexts, milliseconds,
handlers on a background thread or before the root call returns, several profilers, the
``job`` label on merged /metrics, dict configuration and the RabbitMQ wire format."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobtrace.compat import phanos
from jobtrace.instruments import REGISTRY
from jobtrace.instruments.exposition import render
from jobtrace.instruments.merge import merge_series
from tests.instruments_helpers import clean_instruments

__all__ = ["clean_instruments"]


class FakeClock:
    """``datetime`` for the profiler: each ``now()`` is 250 ms after the previous one."""

    def __init__(self) -> None:
        self.at = datetime(2026, 1, 1)

    def now(self) -> datetime:
        self.at += timedelta(milliseconds=250)
        return self.at


class Collect(phanos.SyncBaseHandler):
    """Keeps every record it is handed, with the thread that handed it."""

    def __init__(self, name: str = "collect") -> None:
        super().__init__(name)
        self.records: list[dict[str, Any]] = []
        self.threads: set[int] = set()

    def handle(self, records: list[Any], profiler_name: str = "profiler") -> None:
        self.threads.add(threading.get_ident())
        self.records.extend({**r, "profiler": profiler_name} for r in records)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(phanos, "_now", fake.now)
    return fake


@pytest.fixture
def prof() -> Iterator[phanos.Profiler]:
    profiler = phanos.Profiler()
    yield profiler
    profiler.flush()


def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    now = time.time()
    text = render(merge_series(REGISTRY.rows(now=now), now=now)).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


# -- profiling ---------------------------------------------------------------------------------


def test_durations_are_milliseconds_by_context_and_handed_over_on_a_background_thread(
    prof: phanos.Profiler, clock: FakeClock
) -> None:
    prof.config(job="shop", error_raised_label=False)
    started, release = threading.Event(), threading.Event()

    class Slow(Collect):
        def handle(self, records: list[Any], profiler_name: str = "profiler") -> None:
            started.set()
            release.wait(10)
            super().handle(records, profiler_name)

    handler = Slow()
    prof.add_handler(handler)

    @prof.profile
    def checkout(cart: list[int]) -> int:
        return price(cart)

    @prof.profile
    def price(cart: list[int]) -> int:
        return sum(cart)

    assert checkout([1, 2]) == 3  # returns while the handler is still busy
    assert started.wait(10)
    assert handler.records == []
    release.set()
    assert prof.flush()
    contexts = [(r["method"], r["value"], r["units"]) for r in handler.records]
    # 250 ms per clock reading: the inner call spans one step, the root three.
    assert contexts == [
        ("test_compat_phanos:checkout.price", ("observe", 250.0), "mS"),
        ("test_compat_phanos:checkout", ("observe", 750.0), "mS"),
    ]
    assert handler.records[0]["job"] == "shop"
    assert handler.records[0]["profiler"] == phanos.TIME_PROFILER
    assert threading.get_ident() not in handler.threads


def test_handle_inline_hands_records_over_before_the_root_call_returns(
    prof: phanos.Profiler,
) -> None:
    prof.config(job="shop", handle_inline=True)
    handler = Collect()
    prof.add_handler(handler)
    seen_during_call: list[int] = []

    @prof.profile
    def work() -> int:
        seen_during_call.append(len(handler.records))
        return 1

    work()
    assert seen_during_call == [0]
    assert [r["method"] for r in handler.records] == ["test_compat_phanos:work"]
    assert handler.threads == {threading.get_ident()}


def test_the_environment_variable_makes_handing_over_inline_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBTRACE_PHANOS_INLINE_HANDLERS", "1")
    assert phanos.Profiler().handle_inline
    monkeypatch.delenv("JOBTRACE_PHANOS_INLINE_HANDLERS")
    assert not phanos.Profiler().handle_inline


cart_profiler = phanos.Profiler()


class Cart:
    @cart_profiler.profile
    def total(self) -> int:
        return self.tax()

    @cart_profiler.profile
    def tax(self) -> int:
        return 2


def test_a_method_root_is_named_by_its_class() -> None:
    cart_profiler.config(job="shop", handle_inline=True)
    handler = Collect()
    cart_profiler.add_handler(handler)
    Cart().total()
    assert [r["method"] for r in handler.records] == ["Cart:total.tax", "Cart:total"]


def test_an_error_sets_error_raised_on_the_calls_it_left_and_still_raises(
    prof: phanos.Profiler,
) -> None:
    prof.config(job="shop", handle_inline=True)
    handler = Collect()
    prof.add_handler(handler)

    @prof.profile
    def outer() -> None:
        with contextlib.suppress(KeyError):
            inner()

    @prof.profile
    def inner() -> None:
        raise KeyError("x")

    @prof.profile
    def failing() -> None:
        raise ValueError("boom")

    outer()
    with pytest.raises(ValueError, match="boom"):
        failing()
    flags = {r["method"]: r["labels"]["error_raised"] for r in handler.records}
    assert flags == {
        "test_compat_phanos:outer.inner": True,
        "test_compat_phanos:outer": False,
        "test_compat_phanos:failing": True,
    }


def test_response_size_is_the_root_results_getsizeof(prof: phanos.Profiler) -> None:
    prof.config(job="shop", response_size_profile=True, handle_inline=True)
    handler = Collect()
    prof.add_handler(handler)
    body = b"x" * 100

    @prof.profile
    def respond() -> bytes:
        return body

    respond()
    sizes = [r["value"] for r in handler.records if r["profiler"] == phanos.RESPONSE_SIZE]
    import sys

    assert sizes == [("observe", float(sys.getsizeof(body)))]


def test_nothing_is_measured_when_records_are_not_handled(prof: phanos.Profiler) -> None:
    prof.config(job="shop", handle_records=False, handle_inline=True)
    handler = Collect()
    prof.add_handler(handler)
    prof.profile(lambda: 1)()
    assert handler.records == []


def test_a_failing_hook_or_handler_never_breaks_the_call(
    prof: phanos.Profiler, caplog: pytest.LogCaptureFixture
) -> None:
    prof.config(job="shop", handle_inline=True)

    class Broken(phanos.SyncBaseHandler):
        def handle(self, records: list[Any], profiler_name: str = "profiler") -> None:
            raise OSError("disk full")

    prof.add_handler(Broken("broken"))
    prof.before_root_func = lambda func, args, kwargs: 1 / 0

    @prof.profile
    def work() -> str:
        return "done"

    with caplog.at_level(logging.ERROR, logger="jobtrace.compat.phanos"):
        assert work() == "done"
    assert any("before_root_func" in r.getMessage() for r in caplog.records)
    assert any("broken" in r.getMessage() for r in caplog.records)


# -- several profilers, metrics and /metrics -----------------------------------------------------


def test_each_profiler_keeps_its_own_metrics_and_handlers() -> None:
    shop, cart = phanos.Profiler(), phanos.Profiler()
    shop.config(job="shop", handle_inline=True)
    cart.config(job="cart", handle_inline=True)
    seen_shop, seen_cart = Collect(), Collect()
    shop.add_handler(seen_shop)
    cart.add_handler(seen_cart)
    orders = phanos.Counter("orders", "shop", "orders", {"status"})
    shop.add_metric(orders)

    @shop.profile
    def checkout() -> None:
        orders.inc(1.0, label_values={"status": "ok"})

    cart.profile(lambda: None)()
    checkout()
    assert shop.metrics is not cart.metrics and "orders" not in cart.metrics
    assert {r["profiler"] for r in seen_shop.records} == {"time_profiler", "orders"}
    assert {r["profiler"] for r in seen_cart.records} == {"time_profiler"}
    ordered = [r for r in seen_shop.records if r["profiler"] == "orders"]
    assert ordered[0]["method"] == "test_compat_phanos:checkout"
    assert ordered[0]["labels"] == {"status": "ok", "error_raised": False}


def test_the_job_of_each_profiler_is_the_job_label_on_merged_metrics() -> None:
    shop, cart = phanos.Profiler(), phanos.Profiler()
    shop.config(job="shop", response_size_profile=True)
    cart.config(job="cart", error_raised_label=False)
    pay = shop.profile(lambda: "paid")
    add = cart.profile(lambda: None)
    pay()
    pay()
    add()
    found = scrape()
    shop_calls = {
        labels: value
        for (name, labels), value in found.items()
        if name == "time_profiler_count" and ("job", "shop") in labels
    }
    assert list(shop_calls.values()) == [2.0]
    assert ("error_raised", "False") in next(iter(shop_calls))
    cart_calls = [
        v
        for (name, labels), v in found.items()
        if name == "time_profiler_count" and ("job", "cart") in labels
    ]
    assert cart_calls == [1.0]
    assert any(name == "response_size_count" and ("job", "shop") in labels
               for name, labels in found)  # fmt: skip


def test_the_exported_time_histogram_is_in_milliseconds(clock: FakeClock) -> None:
    prof = phanos.Profiler()
    prof.config(job="ms", error_raised_label=False)
    prof.profile(lambda: None)()
    found = scrape()
    total = [v for (name, labels), v in found.items()
             if name == "time_profiler_sum" and ("job", "ms") in labels]  # fmt: skip
    assert total == [250.0]


def test_a_deleted_default_metric_can_be_created_again_and_keeps_counting() -> None:
    prof = phanos.Profiler()
    prof.config(job="again", handle_inline=True, error_raised_label=False)
    handler = Collect()
    prof.add_handler(handler)
    call = prof.profile(lambda: None)
    call()
    prof.delete_metric(phanos.TIME_PROFILER)
    assert prof.time_profile is None
    call()
    assert handler.records.__len__() == 1
    prof.create_time_profiler()
    call()
    assert len(handler.records) == 2
    counts = [v for (name, labels), v in scrape().items()
              if name == "time_profiler_count" and ("job", "again") in labels]  # fmt: skip
    assert counts == [2.0]


def test_a_metric_operation_with_a_bad_value_or_labels_is_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gauge = phanos.Gauge("temperature", "lab", "C", {"room"})
    with caplog.at_level(logging.ERROR, logger="jobtrace.compat.phanos"):
        gauge.inc(-1.0, None, {"room": "a"})
        gauge.set("hot", None, {"room": "a"})
        gauge.set(21.5, None, {"floor": "1"})
    assert gauge.values == [] and gauge.method == [] and gauge.label_values == []
    gauge.set(21, None, {"room": "a"})  # an int is taken as a float
    assert gauge.values == [("set", 21.0)]
    assert len(caplog.records) == 3


# -- Phanos 0.0.x -------------------------------------------------------------------------------


def test_the_0_0_api_config_add_handler_custom_metric_and_current_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prof = phanos.PhanosProfiler()
    prof.config(
        logging.getLogger("old"), job="legacy", should_time_profile=True,
        should_resp_size_profile=False, should_handle_records=True, handle_inline=True,
    )  # fmt: skip
    handler = Collect("old")
    prof.addHandler(handler)
    cleaned: list[bool] = []

    class Doubling(phanos.Counter):
        def __init__(self) -> None:
            super().__init__(name="doubled", job="legacy", units="items")
            self.operations = {"double": self._double}
            self.default_operation = "double"

        def _double(self, value: float, args: Any, kwargs: Any) -> None:
            self._inc(value * 2)

        def cleanup(self) -> None:
            super().cleanup()
            cleaned.append(True)

    doubled = Doubling()
    prof.add_metric(doubled)
    contexts: list[str] = []

    def before(func: Any, args: Any, kwargs: Any) -> None:
        contexts.append(prof.current_node.context)
        doubled.store_operation(method=prof.current_node.context, value=3.0)

    prof.before_func = before
    prof.profile(lambda: None)()
    assert contexts == ["test_compat_phanos:<lambda>"]
    by_metric = {r["profiler"]: r for r in handler.records}
    assert by_metric["doubled"]["value"] == ("inc", 6.0)
    assert by_metric["doubled"]["labels"] == {"error_raised": False}  # 0.3's default label
    assert by_metric["doubled"]["method"] == "test_compat_phanos:<lambda>"
    assert cleaned and doubled.values == []
    prof.deleteHandler("old")
    assert prof.handlers == {}
    assert phanos.phanos_profiler is phanos.profiler


def test_request_size_profile_is_deprecated_but_works() -> None:
    prof = phanos.Profiler()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prof.config(job="x", request_size_profile=True)
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    assert prof.resp_size_profile is not None


# -- configuration -----------------------------------------------------------------------------


def test_dict_config_builds_handlers_from_phanos_class_paths() -> None:
    prof = phanos.Profiler()
    prof.dict_config(
        {
            "job": "dict",
            "logger": "dict_logger",
            "time_profile": True,
            "response_size_profile": True,
            "handle_inline": True,
            "handlers": {
                "out": {
                    "class": "phanos.publisher.StreamHandler",
                    "handler_name": "stdout",
                    "output": "ext://sys.stdout",
                }
            },
        }
    )
    import sys

    handler = prof.handlers["stdout"]
    assert isinstance(handler, phanos.StreamHandler) and handler.output is sys.stdout
    assert prof.resp_size_profile is not None and prof.job == "dict"
    with pytest.raises(KeyError, match="Job"):
        phanos.Profiler().dict_config({"time_profile": True})


def test_async_handlers_need_an_async_configured_profiler() -> None:
    prof = phanos.Profiler()
    async_handler = phanos.AsyncImpProfHandler("rabbit")
    with pytest.raises(RuntimeError, match="not configured"):
        prof.add_handler(async_handler)
    prof.config(job="x")
    with pytest.raises(ValueError, match="asynchronous"):
        prof.add_handler(async_handler)
    with pytest.raises(ValueError, match="async handler"):
        prof.dict_config({"job": "x", "handlers": {"r": {
            "class": "phanos.publisher.AsyncImpProfHandler", "handler_name": "r"}}})  # fmt: skip


def test_async_roots_await_async_handlers_when_inline() -> None:
    prof = phanos.Profiler()
    prof.async_config(job="aio", handle_inline=True, error_raised_label=False)
    got: list[str] = []

    class AsyncCollect(phanos.AsyncBaseHandler):
        @classmethod
        async def create(cls, handler_name: str, *args: Any, **kwargs: Any) -> AsyncCollect:
            return cls(handler_name)

        async def handle(self, records: list[Any], profiler_name: str = "profiler") -> None:
            await asyncio.sleep(0)
            got.extend(r["method"] for r in records)

    @prof.profile
    async def fetch() -> int:
        return await parse()

    @prof.profile
    async def parse() -> int:
        await asyncio.sleep(0)
        return 7

    async def main() -> int:
        prof.add_handler(await AsyncCollect.create("aio"))
        result = await fetch()
        assert sorted(got) == ["test_compat_phanos:fetch", "test_compat_phanos:fetch.parse"]
        return result

    assert asyncio.run(main()) == 7


def test_stream_and_logger_handlers_write_phanos_lines(caplog: pytest.LogCaptureFixture) -> None:
    record = {
        "item": "Shop", "metric": "histogram", "units": "mS", "job": "shop",
        "method": "Shop:checkout", "labels": {"error_raised": False}, "value": ("observe", 2.5),
    }  # fmt: skip
    out = io.StringIO()
    phanos.StreamHandler("s", out).handle([record], "time_profiler")  # type: ignore[list-item]
    expected = (
        "profiler: time_profiler, method: Shop:checkout, value: 2.5 mS, labels: error_raised=False"
    )
    assert out.getvalue() == expected + "\n"
    with caplog.at_level(logging.INFO, logger="named"):
        phanos.NamedLoggerHandler("l", "named", logging.INFO).handle([record], "time_profiler")  # type: ignore[list-item]
    assert [r.getMessage() for r in caplog.records] == [expected]


# -- RabbitMQ --------------------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_imp_prof_handler_publishes_phanos_messages_to_its_fanout_exchange(
    rabbitmq_url: str,
) -> None:
    import pika

    exchange = f"jobtrace.test.phanos.{uuid.uuid4().hex[:10]}"
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    channel.exchange_declare(exchange=exchange, exchange_type="fanout")
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(queue=queue, exchange=exchange)
    try:
        params = pika.URLParameters(rabbitmq_url)
        handler = phanos.ImpProfHandler(
            "rabbit", host=params.host, port=params.port, user="guest", password="guest",
            exchange_name=exchange,
        )  # fmt: skip
        prof = phanos.Profiler()
        prof.config(job="amqp", handle_inline=True, error_raised_label=False)
        prof.add_handler(handler)
        prof.profile(lambda: None)()
        deadline = time.monotonic() + 10  # the broker routes the message asynchronously
        method, _, body = channel.basic_get(queue=queue, auto_ack=True)
        while method is None and time.monotonic() < deadline:
            connection.process_data_events(time_limit=0.05)
            method, _, body = channel.basic_get(queue=queue, auto_ack=True)
        assert method is not None and method.routing_key == "amqp"
        message = orjson.loads(body)
        assert [r["method"] for r in message] == ["test_compat_phanos:<lambda>"]
        assert message[0]["units"] == "mS" and message[0]["job"] == "amqp"
    finally:
        channel.exchange_delete(exchange=exchange)
        connection.close()


def test_imp_prof_handler_refuses_to_start_without_a_broker() -> None:
    with pytest.raises(RuntimeError, match="Cannot connect"):
        phanos.ImpProfHandler("rabbit", host="127.0.0.1", port=1, retry=0)


def test_phanos_public_names_of_both_versions_are_here() -> None:
    profiler_names = (
        "config", "async_config", "dict_config", "async_dict_config", "add_handler",
        "delete_handler", "delete_handlers", "addHandler", "deleteHandler", "add_metric",
        "delete_metric", "delete_metrics", "create_time_profiler",
        "create_response_size_profiler", "profile", "flush", "before_func", "after_func",
        "before_root_func", "after_root_func", "handle_records", "error_raised_label",
        "current_node",
    )  # fmt: skip
    configured = phanos.Profiler()
    configured.config(job="names")
    assert [n for n in profiler_names if not hasattr(configured, n)] == []
    module_names = (
        "profiler", "phanos_profiler", "profile", "TIME_PROFILER", "RESPONSE_SIZE",
        "StreamHandler", "LoggerHandler", "NamedLoggerHandler", "ImpProfHandler",
        "AsyncImpProfHandler", "Histogram", "Summary", "Counter", "Info", "Gauge", "Enum",
        "MetricWrapper", "MethodTreeNode",
    )  # fmt: skip
    assert [n for n in module_names if not hasattr(phanos, n)] == []
    assert [n for n in phanos.__all__ if not hasattr(phanos, n)] == []
    assert phanos.publisher is phanos and phanos.metrics.Histogram is phanos.Histogram
    metric = phanos.Counter("named", "job", "units")
    assert (metric.default_operation, list(metric.operations)) == ("inc", ["inc"])
