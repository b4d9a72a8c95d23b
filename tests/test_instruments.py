"""Instruments: Phanos's constructors and operations, bound series, label mistakes, drops,
exact totals under many threads, custom metrics, and the in-process Collector."""

from __future__ import annotations

import logging
import math
import sys
import threading
from decimal import Decimal

import pytest

from jobtrace.errors import ConfigurationError
from jobtrace.instruments import (
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    InstrumentCollector,
    InstrumentRegistry,
    Summary,
    drops,
    merge_series,
    render,
)
from tests.instruments_helpers import clean_instruments

__all__ = ["clean_instruments"]


@pytest.fixture
def registry() -> InstrumentRegistry:
    return InstrumentRegistry()


def value_of(metric: Counter | Gauge, *labels: str) -> float:
    cell = metric.labels(*labels) if labels else metric.series()[0][1]
    return float(cell.value)


# -- operations -------------------------------------------------------------------------------


def test_counter_counts_phanos_style_and_through_bound_series(registry: InstrumentRegistry) -> None:
    requests = Counter("requests", "shop", "requests", {"method"}, registry=registry)
    requests.inc(1, {"method": "GET"})
    requests.inc(2.5, label_values={"method": "GET"})
    requests.labels(method="GET").inc()
    requests.labels("POST").inc(4)
    assert value_of(requests, "GET") == 4.5
    assert value_of(requests, "POST") == 4


def test_an_instrument_without_labels_forwards_straight_to_its_series(
    registry: InstrumentRegistry,
) -> None:
    total = Counter("total", registry=registry)
    total.inc()
    total.inc(2)
    assert total.inc == total.series()[0][1].inc  # bound once, no call in between
    assert value_of(total) == 3


def test_gauge_goes_up_down_and_is_set(registry: InstrumentRegistry) -> None:
    gauge = Gauge("in_flight", labels=["pool"], mode="live-sum", registry=registry)
    gauge.inc(3, {"pool": "a"})
    gauge.dec(1, {"pool": "a"})
    assert value_of(gauge, "a") == 2
    gauge.set(-7.5, {"pool": "a"})
    assert value_of(gauge, "a") == -7.5
    gauge.labels("b").set_to_current_time()
    assert value_of(gauge, "b") > 1e9


def test_histogram_counts_observations_into_their_le_bucket(registry: InstrumentRegistry) -> None:
    latency = Histogram("latency", buckets=(0.1, 1, 10), registry=registry)
    for value in (0.05, 0.1, 0.5, 1, 5, 50):
        latency.observe(value)
    cell = latency.series()[0][1]
    assert latency.buckets == (0.1, 1.0, 10.0, math.inf)
    assert cell.counts == [2, 2, 1, 1]  # upper bounds are inclusive, as Prometheus's `le`
    assert cell.sum == pytest.approx(56.65)


def test_summary_info_and_enum_keep_their_state(registry: InstrumentRegistry) -> None:
    summary = Summary("payload", registry=registry)
    summary.observe(3)
    summary.observe(Decimal("1.5"))  # a non-float number takes the slow path, converted
    info = Info("build", registry=registry)
    info.info_({"version": "1.2", "commit": 123})
    state = Enum("phase", "shop", {"starting", "running"}, registry=registry)
    state.state("running")
    assert (summary.series()[0][1].count, summary.series()[0][1].sum) == (2, 4.5)
    assert info.series()[0][1].value == {"version": "1.2", "commit": "123"}
    assert state.states == ("running", "starting")  # a set is sorted: the same everywhere
    assert state.series()[0][1].current == "running"


def test_a_custom_metric_subclasses_an_instrument_and_keeps_its_own_operations(
    registry: InstrumentRegistry,
) -> None:
    class Doubling(Counter):
        def __init__(self, name: str, job: str, units: str, labels: set[str]) -> None:
            super().__init__(name, job, units, labels, registry=registry)
            self.calls = 0

        def inc(self, value: float = 1.0, label_values: dict[str, str] | None = None) -> None:
            self.calls += 1
            super().inc(2 * value, label_values)

        def cleanup(self) -> None:
            super().cleanup()
            self.calls = 0

    doubled = Doubling("doubled", "job", "units", set())
    doubled.inc(3)
    assert doubled.calls == 1
    assert value_of(doubled) == 6


# -- declaration mistakes raise at once -----------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda r: Counter("1bad", registry=r), "bad instrument name"),
        (lambda r: Counter("ok", labels=["bad-label"], registry=r), "bad label name"),
        (lambda r: Counter("ok", labels=["__private"], registry=r), "reserved"),
        (lambda r: Histogram("ok", labels=["le"], registry=r), "reserved"),
        (lambda r: Summary("ok", labels=["quantile"], registry=r), "reserved"),
        (lambda r: Enum("phase", states=["a"], labels=["phase"], registry=r), "reserved"),
        (lambda r: Counter("ok", labels="method", registry=r), "not the string"),
        (lambda r: Counter("ok", labels=["a", "a"], registry=r), "duplicate label"),
        (lambda r: Histogram("ok", buckets=(2, 1), registry=r), "increasing"),
        (lambda r: Enum("ok", registry=r), "declare its states"),
        (lambda r: Gauge("ok", mode="avg", registry=r), "unknown mode"),
    ],
)
def test_a_declaration_mistake_is_a_clear_error(
    registry: InstrumentRegistry, factory: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        factory(registry)  # type: ignore[operator]


def test_two_instruments_with_one_name_in_one_registry_are_an_error(
    registry: InstrumentRegistry,
) -> None:
    Counter("requests", registry=registry)
    with pytest.raises(ConfigurationError, match="already registered"):
        Gauge("requests", registry=registry)


def test_asking_for_a_series_with_wrong_labels_raises(registry: InstrumentRegistry) -> None:
    counter = Counter("requests", labels=["method"], registry=registry)
    with pytest.raises(ValueError, match="expected labels"):
        counter.labels(verb="GET")
    with pytest.raises(ValueError, match="expected 1 label values"):
        counter.labels("GET", "extra")


# -- recording mistakes are dropped and counted, with one log line ---------------------------------


def test_wrong_label_values_while_recording_are_dropped_counted_and_logged_once(
    registry: InstrumentRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter("requests", labels=["method"], registry=registry)
    with caplog.at_level(logging.WARNING, logger="jobtrace.instruments"):
        counter.inc(1, {"verb": "GET"})
        counter.inc(1, {"method": "GET", "extra": "x"})
        counter.inc(1)
    assert drops.by_reason == {"labels": 3}
    assert counter.series() == []
    assert len([r for r in caplog.records if "requests" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("operation", "reason"),
    [
        (lambda c, g, h, e: c.inc(-1), "negative"),
        (lambda c, g, h, e: c.inc(math.nan), "nan"),
        (lambda c, g, h, e: c.inc("many"), "type"),
        (lambda c, g, h, e: g.set(math.nan), "nan"),
        (lambda c, g, h, e: h.observe(None), "type"),
        (lambda c, g, h, e: e.state("exploded"), "state"),
        (lambda c, g, h, e: g.labels().inc(1, {"method": "GET"}), "labels"),
    ],
)
def test_bad_values_are_dropped_and_counted_never_raised(
    registry: InstrumentRegistry, operation: object, reason: str
) -> None:
    counter = Counter("c", registry=registry)
    gauge = Gauge("g", registry=registry)
    histogram = Histogram("h", registry=registry)
    enum = Enum("e", states=["ok"], registry=registry)
    operation(counter, gauge, histogram, enum)  # type: ignore[operator]
    assert drops.by_reason == {reason: 1}
    assert value_of(counter) == 0
    assert histogram.series()[0][1].counts == [0] * len(histogram.buckets)
    assert enum.series()[0][1].current == "ok"


@pytest.mark.parametrize(
    "operation",
    [
        lambda c, g, h, s: c.inc(10**400),
        lambda c, g, h, s: g.inc(10**400),
        lambda c, g, h, s: g.dec(10**400),
        lambda c, g, h, s: g.set(10**400),
        lambda c, g, h, s: h.observe(10**400),
        lambda c, g, h, s: s.observe(10**400),
    ],
)
def test_an_int_too_large_for_a_float_is_dropped_not_raised(
    registry: InstrumentRegistry, operation: object
) -> None:
    counter = Counter("c", registry=registry)
    gauge = Gauge("g", registry=registry)
    histogram = Histogram("h", registry=registry)
    summary = Summary("s", registry=registry)
    operation(counter, gauge, histogram, summary)  # type: ignore[operator]
    assert drops.by_reason == {"type": 1}
    assert value_of(counter) == 0 and value_of(gauge) == 0
    assert histogram.series()[0][1].count == 0 and histogram.series()[0][1].sum == 0
    assert summary.series()[0][1].count == 0
    assert [row.value for row in registry.rows()] == [0.0, 0.0, 0.0, 0.0]


def test_a_gauge_set_to_an_int_holds_a_float(registry: InstrumentRegistry) -> None:
    gauge = Gauge("g", registry=registry)
    gauge.set(2**62)
    gauge.inc(1)
    assert type(gauge.series()[0][1].value) is float


# -- concurrency ---------------------------------------------------------------------------------


@pytest.fixture
def frequent_thread_switches() -> object:
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    yield None
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_many_threads_incrementing_one_counter_lose_no_increment(
    registry: InstrumentRegistry,
) -> None:
    counter = Counter("hits", labels=["route"], registry=registry)
    plain = Counter("plain", registry=registry)
    histogram = Histogram("sizes", buckets=(1, 2), registry=registry)
    threads, per_thread = 16, 20_000
    barrier = threading.Barrier(threads)

    def work() -> None:
        cell = counter.labels(route="/")
        barrier.wait()
        for _ in range(per_thread):
            cell.inc()
            plain.inc(0.5)
            counter.inc(2, {"route": "/"})
            histogram.observe(1.5)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    total = threads * per_thread
    assert value_of(counter, "/") == 3 * total
    assert value_of(plain) == 0.5 * total
    assert histogram.series()[0][1].counts == [0, total, 0]
    assert histogram.series()[0][1].sum == 1.5 * total


# -- exposition in process -------------------------------------------------------------------------


def test_the_collector_exposes_this_process_state_parseably(registry: InstrumentRegistry) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    Counter("requests", labels=["method"], documentation="Requests served", registry=registry).inc(
        3, {"method": "GET"}
    )
    Gauge("temperature", mode="max", registry=registry).set(21.5)
    Histogram("latency", buckets=(0.1, 1), registry=registry).observe(0.5)
    Summary("payload", registry=registry).observe(10)
    Info("build", registry=registry).info({"version": "1.2"})
    Enum("phase", states=["starting", "running"], registry=registry).state("running")
    prom = CollectorRegistry()
    prom.register(InstrumentCollector(registry))  # type: ignore[arg-type]

    text = generate_latest(prom).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("requests_total", (("method", "GET"),))] == 3
    assert samples[("temperature", ())] == 21.5
    assert samples[("latency_bucket", (("le", "0.1"),))] == 0
    assert samples[("latency_bucket", (("le", "1.0"),))] == 1
    assert samples[("latency_bucket", (("le", "+Inf"),))] == 1
    assert samples[("latency_sum", ())] == 0.5
    assert samples[("payload_count", ())] == 1
    assert samples[("build_info", (("version", "1.2"),))] == 1
    assert samples[("phase", (("phase", "running"),))] == 1
    assert samples[("phase", (("phase", "starting"),))] == 0
    assert "# HELP requests_total Requests served" in text


def test_render_writes_openmetrics_too(registry: InstrumentRegistry) -> None:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    Counter("requests", registry=registry).inc(2)
    rows = registry.rows(now=1000.0)
    text = render(merge_series(rows, now=1000.0), openmetrics=True).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["requests"].samples[0].value == 2
