"""jobtrace's instruments declared and used the prometheus_client way: its README examples,
re-typed here with only the import changed, and each constructor argument it documents —
while jobtrace's and Phanos's own signatures keep working."""

from __future__ import annotations

import asyncio
import time

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobtrace.errors import ConfigurationError
from jobtrace.instruments import REGISTRY, Counter, Enum, Gauge, Histogram, Info, Summary, drops
from jobtrace.instruments.exposition import render
from jobtrace.instruments.merge import merge_series
from tests.instruments_helpers import clean_instruments

__all__ = ["clean_instruments"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape() -> Samples:
    """Every sample of jobtrace's default registry, as /metrics shows it."""
    now = time.time()
    return parse(render(merge_series(REGISTRY.rows(now=now), now=now)).decode())


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(found: Samples, name: str, **labels: str) -> float:
    return found[name, frozenset(labels.items())]


# -- the README's examples ---------------------------------------------------------------------


def test_readme_three_step_demo_times_calls_with_a_summary_decorator() -> None:
    REQUEST_TIME = Summary("request_processing_seconds", "Time spent processing request")

    @REQUEST_TIME.time()
    def process_request(t: float) -> None:
        time.sleep(t)

    process_request(0.001)
    process_request(0.001)
    found = scrape()
    assert sample(found, "request_processing_seconds_count") == 2
    assert sample(found, "request_processing_seconds_sum") >= 0.002


def test_readme_counter_example() -> None:
    c = Counter("my_failures", "Description of counter")
    c.inc()  # Increment by 1
    c.inc(1.6)  # Increment by given value

    @c.count_exceptions()
    def f() -> None:
        raise ValueError("counted")

    with pytest.raises(ValueError):
        f()
    with c.count_exceptions():
        pass
    with pytest.raises(TypeError), c.count_exceptions(ValueError):
        raise TypeError("not counted")
    assert sample(scrape(), "my_failures_total") == pytest.approx(3.6)
    assert c.documentation == "Description of counter"


def test_readme_gauge_example() -> None:
    g = Gauge("my_inprogress_requests", "Description of gauge")
    g.inc()  # Increment by 1
    g.dec(10)  # Decrement by given value
    g.set(4.2)  # Set to a given value
    inside: list[float] = []

    @g.track_inprogress()
    def f() -> None:
        inside.append(sample(scrape(), "my_inprogress_requests"))

    f()
    with g.track_inprogress():
        inside.append(sample(scrape(), "my_inprogress_requests"))
    assert inside == [5.2, 5.2]
    assert sample(scrape(), "my_inprogress_requests") == pytest.approx(4.2)
    g.set_to_current_time()
    assert sample(scrape(), "my_inprogress_requests") == pytest.approx(time.time(), abs=60)

    d = Gauge("data_objects", "Number of objects")
    my_dict = {"a": 1}
    d.set_function(lambda: len(my_dict))
    assert sample(scrape(), "data_objects") == 1
    my_dict["b"] = 2
    assert sample(scrape(), "data_objects") == 2


def test_readme_summary_and_histogram_examples() -> None:
    s = Summary("request_latency_seconds", "Description of summary")
    s.observe(4.7)  # Observe 4.7 (seconds in this case)

    @s.time()
    def f() -> None:
        pass

    f()
    with s.time():
        pass
    h = Histogram("request_size_seconds", "Description of histogram")
    h.observe(4.7)
    with h.time():
        pass
    found = scrape()
    assert sample(found, "request_latency_seconds_count") == 3
    assert sample(found, "request_size_seconds_count") == 2
    assert sample(found, "request_size_seconds_bucket", le="5.0") == 2
    assert sample(found, "request_size_seconds_bucket", le="2.5") == 1


def test_readme_info_and_enum_examples() -> None:
    i = Info("my_build_version", "Description of info")
    i.info({"version": "1.2.3", "buildhost": "foo@bar"})
    e = Enum("my_task_state", "Description of enum", states=["starting", "running", "stopped"])
    e.state("running")
    found = scrape()
    assert sample(found, "my_build_version_info", version="1.2.3", buildhost="foo@bar") == 1
    assert sample(found, "my_task_state", my_task_state="running") == 1
    assert sample(found, "my_task_state", my_task_state="starting") == 0


def test_readme_labels_example() -> None:
    c = Counter("my_requests_total", "HTTP Failures", ["method", "endpoint"])
    c.labels("get", "/").inc()
    c.labels("post", "/submit").inc()
    c.labels(method="get", endpoint="/").inc()
    c.labels("get", "/never")  # initialised at zero
    found = scrape()
    assert sample(found, "my_requests_total", method="get", endpoint="/") == 2
    assert sample(found, "my_requests_total", method="post", endpoint="/submit") == 1
    assert sample(found, "my_requests_total", method="get", endpoint="/never") == 0
    c.remove("get", "/never")
    assert (
        "my_requests_total",
        frozenset({("method", "get"), ("endpoint", "/never")}),
    ) not in scrape()


def test_readme_exemplar_examples_count_the_values() -> None:
    c = Counter("my_requests_total", "HTTP Failures", ["method", "endpoint"])
    c.labels("get", "/").inc(exemplar={"trace_id": "abc123"})
    c.labels("post", "/submit").inc(1.0, {"trace_id": "def456"})
    h = Histogram("request_latency_seconds", "Description of histogram")
    h.observe(4.7, {"trace_id": "abc123"})
    found = scrape()
    assert sample(found, "my_requests_total", method="get", endpoint="/") == 1
    assert sample(found, "my_requests_total", method="post", endpoint="/submit") == 1
    assert sample(found, "request_latency_seconds_count") == 1
    assert drops.total == 0


# -- constructor arguments ----------------------------------------------------------------------


def test_namespace_subsystem_and_unit_make_the_full_name() -> None:
    c = Counter("sent", "Bytes sent", namespace="shop", subsystem="http", unit="bytes")
    assert c.name == "shop_http_sent_bytes" and c.units == "bytes"
    total = Counter("requests_total", "Requests", namespace="shop")
    assert total.name == "shop_requests"
    already = Histogram("latency_seconds", "Latency", unit="seconds")
    assert already.name == "latency_seconds"


def test_labelnames_buckets_and_documentation_by_keyword() -> None:
    h = Histogram(
        "upload_seconds", documentation="Upload time", labelnames=("bucket",),
        buckets=(0.1, 1.0),
    )  # fmt: skip
    assert h.label_names == ("bucket",) and h.buckets == (0.1, 1.0, float("inf"))
    h.labels("photos").observe(0.5)
    assert sample(scrape(), "upload_seconds_bucket", bucket="photos", le="1.0") == 1


def test_a_collector_registry_given_as_registry_exposes_the_instrument_there() -> None:
    registry = CollectorRegistry()
    c = Counter("private_events", "Events in a private registry", registry=registry)
    c.inc(3)
    assert REGISTRY.get("private_events") is None
    assert parse(generate_latest(registry).decode())["private_events_total", frozenset()] == 3
    # A second instrument on the same registry shares its one collector.
    Gauge("private_level", "Level", registry=registry).set(2)
    text = generate_latest(registry).decode()
    assert text.count("\nprivate_events_total 3.0") == 1 and "\nprivate_level 2.0" in text
    assert "# HELP private_level Level" in text


def test_prometheus_clients_default_registry_serves_jobtrace_instruments() -> None:
    c = Counter("served_requests", "Requests", registry=prometheus_client.REGISTRY)
    c.inc()
    Counter("more_requests", "Declared in prometheus_client's form").inc(2)
    found = parse(generate_latest(prometheus_client.REGISTRY).decode())
    assert found["served_requests_total", frozenset()] == 1
    assert found["more_requests_total", frozenset()] == 2


def test_multiprocess_mode_maps_to_a_merge_mode() -> None:
    assert Gauge("a", "A", multiprocess_mode="livesum").mode == "live-sum"
    assert Gauge("b", "B", multiprocess_mode="max").mode == "max"
    assert Gauge("c", "C", multiprocess_mode="mostrecent").mode == "last"
    with pytest.raises(ConfigurationError, match="multiprocess_mode"):
        Gauge("d", "D", multiprocess_mode="sideways")


def test_enum_takes_labelnames_positionally_and_states_by_keyword() -> None:
    e = Enum("phase", "Pipeline phase", ["pipeline"], states=["idle", "busy"])
    assert e.label_names == ("pipeline",) and e.states == ("idle", "busy")
    e.labels("etl").state("busy")
    assert sample(scrape(), "phase", pipeline="etl", phase="busy") == 1


def test_time_decorates_coroutines_too() -> None:
    h = Histogram("fetch_seconds", "Fetch time")

    @h.time()
    async def fetch() -> int:
        await asyncio.sleep(0)
        return 1

    assert asyncio.run(fetch()) == 1
    assert sample(scrape(), "fetch_seconds_count") == 1


def test_helpers_on_an_instrument_with_labels_record_nothing_and_count_it() -> None:
    h = Histogram("routes_seconds", "Route time", ["route"])
    with h.time():
        pass
    assert h.series() == [] and drops.by_reason == {"labels": 1}
    with h.labels("/").time():
        pass
    assert sample(scrape(), "routes_seconds_count", route="/") == 1


# -- jobtrace's and Phanos's own forms -----------------------------------------------------------


def test_jobtraces_and_phanos_signatures_still_work() -> None:
    orders = Counter("orders", "shop", "orders", ["status"])
    assert (orders.job, orders.units, orders.label_names) == ("shop", "orders", ("status",))
    assert orders.documentation == "orders"
    orders.inc(2, {"status": "ok"})
    queue = Gauge("queue_depth", job="shop", labels={"queue"}, mode="max")
    assert queue.mode == "max" and queue.job == "shop"
    phase = Enum("stage", "shop", ["a", "b"])
    assert phase.job == "shop" and phase.states == ("a", "b")
    latency = Histogram("latency", job="shop", units="s", buckets=(1, 2))
    assert latency.units == "s"
    assert sample(scrape(), "orders_total", status="ok") == 2
