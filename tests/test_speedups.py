"""The compiled hot paths (``jobtrace._speedups``) and the pure-Python ones they replace.

The tests here run on whichever implementation is loaded; one of them runs the tracing and
recorder tests again in a subprocess on the pure-Python implementation, so both are
exercised by every run of the suite.
"""

from __future__ import annotations

import gc
import inspect
import os
import pickle
import subprocess
import sys
import uuid
import weakref
from pathlib import Path
from typing import Any

import pytest

import jobtrace
from jobtrace import _config, model
from jobtrace.recorder import get_recorder
from jobtrace.sinks.memory import MemorySink
from jobtrace.tracing import spans

ROOT = Path(__file__).resolve().parent.parent
# Read at import, as jobtrace does: the test fixtures clear JOBTRACE_* variables later.
PURE_PYTHON_REQUESTED = bool(os.environ.get(_config.ENV_NO_EXTENSIONS))


def span_records(sink: MemorySink) -> list[model.Record]:
    jobtrace.flush()
    return sink.of_kind(model.SPAN)


@jobtrace.trace("module-level")
def traced_square(n: int) -> int:
    """Square a number."""
    return n * n


def test_ci_builds_the_compiled_hot_paths() -> None:
    if os.environ.get("CI") != "true" or PURE_PYTHON_REQUESTED:
        pytest.skip("only CI promises a compiler (the extension is optional elsewhere)")
    assert spans.ACCELERATED, "jobtrace._speedups did not build: tracing runs in pure Python"


@pytest.mark.skipif(not spans.ACCELERATED, reason="already running the pure-Python code")
def test_the_pure_python_implementation_passes_the_same_tests() -> None:
    env = dict(os.environ, **{_config.ENV_NO_EXTENSIONS: "1"})
    tests = [
        "tests/test_tracing.py",
        "tests/test_recorder.py",
        "tests/test_speedups.py",
        "tests/test_trace_readers.py",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_implementations_agree_on_what_is_loaded() -> None:
    assert jobtrace.Trace is jobtrace.Span
    if spans.ACCELERATED:
        from jobtrace import _speedups

        assert jobtrace.Span is _speedups.Span
        assert isinstance(get_recorder().record, _speedups.Appender)
    else:
        assert jobtrace.Span is spans._PySpan


def test_a_traced_function_looks_like_the_function(memory_sink: MemorySink) -> None:
    assert traced_square.__name__ == "traced_square"
    assert traced_square.__qualname__ == "traced_square"
    assert traced_square.__doc__ == "Square a number."
    assert traced_square.__module__ == __name__
    assert inspect.signature(traced_square) == inspect.signature(traced_square.__wrapped__)
    assert traced_square.__jobtrace_traced__ is True
    assert weakref.ref(traced_square)() is traced_square
    # Pickled by reference, like the function it replaces (process pools rely on it).
    assert pickle.loads(pickle.dumps(traced_square)) is traced_square
    assert traced_square(7) == 49
    [record] = span_records(memory_sink)
    assert record[4] == "module-level"


def test_traced_methods_bind_like_functions(memory_sink: MemorySink) -> None:
    class Box:
        def __init__(self, value: int) -> None:
            self.value = value

        @jobtrace.trace("get")
        def get(self, extra: int = 0) -> int:
            return self.value + extra

        @classmethod
        @jobtrace.trace("make")
        def make(cls, value: int) -> Box:
            return cls(value)

        @staticmethod
        @jobtrace.trace("double")
        def double(value: int) -> int:
            return 2 * value

    box = Box.make(4)
    assert box.get() == 4 and box.get(extra=1) == 5 and Box.get(box) == 4
    assert Box.double(3) == 6 and box.double(2) == 4
    names = [r[4] for r in span_records(memory_sink)]
    assert names == ["make", "get", "get", "get", "double", "double"]
    infos = [r[7]["function"] for r in span_records(memory_sink) if r[4] == "get"]
    assert infos[1]["kwargs"] == "{'extra': 1}"
    assert infos[0]["args"].startswith("(<") and infos[0]["args"].endswith(">,)")


@pytest.mark.parametrize(
    "args",
    [
        (),
        (1,),
        (1, "x"),
        ("é€😀", b"\x00'", 1.5, None, True, -3, "'\"", float("nan")),
        ("a" * 2000,),
        ("x" * 600, "€" * 600),
        ([1, {"a": (2,)}],),
        tuple(range(20)),
    ],
)
def test_argument_lists_are_shown_as_repr_of_the_tuple(
    memory_sink: MemorySink, args: tuple[Any, ...]
) -> None:
    @jobtrace.trace("f")
    def f(*positional: Any) -> None:
        pass

    f(*args)
    [record] = span_records(memory_sink)
    text = record[7]["function"]["args"]
    full = repr(args)
    assert text == (full if len(full) <= 1000 else full[:999] + "…")


def test_an_exception_propagates_with_its_traceback(memory_sink: MemorySink) -> None:
    @jobtrace.trace("boom")
    def boom() -> None:
        raise KeyError("missing")

    with pytest.raises(KeyError) as caught:
        boom()
    assert caught.value.args == ("missing",)
    assert caught.traceback[-1].name == "boom"  # raised where it was raised
    [record] = span_records(memory_sink)
    assert record[8] == "KeyError" and record[9] == "'missing'"


def test_a_span_in_a_reference_cycle_is_collected(memory_sink: MemorySink) -> None:
    collected: list[bool] = []

    class Marker:
        def __del__(self) -> None:
            collected.append(True)

    with jobtrace.Trace("cyclic") as span:
        span.set("self", span)
        span.set("marker", Marker())
    jobtrace.flush()
    memory_sink.records.clear()
    del span
    gc.collect()
    assert collected == [True]


def test_records_without_containers_are_left_out_of_garbage_collection(
    memory_sink: MemorySink,
) -> None:
    with jobtrace.Trace("plain", info={"path": "/data/a.csv", "rows": 3}):
        pass
    with jobtrace.Trace("nested", info={"columns": ["a", "b"]}):
        pass
    traced_square(3)
    plain, nested, call = span_records(memory_sink)
    # Flat values cannot form a cycle: nothing for the collector to walk, however many
    # records wait in the buffer. A record holding a list stays collectable.
    if spans.ACCELERATED:
        assert not gc.is_tracked(plain) and not gc.is_tracked(call)
    assert gc.is_tracked(nested)


def test_settings_changed_at_run_time_reach_the_hot_path(memory_sink: MemorySink) -> None:
    jobtrace.configure(enabled=False)
    with jobtrace.Trace("off") as unsampled:
        pass
    traced_square(2)
    assert span_records(memory_sink) == []
    assert not isinstance(unsampled, jobtrace.Span)
    jobtrace.configure(enabled=True, trace_max_spans=2)
    with jobtrace.Trace("root"):
        for _ in range(5):
            traced_square(2)
    records = span_records(memory_sink)
    assert [r[4] for r in records] == ["module-level", "module-level", "root"]
    assert records[-1][7] == {spans.DROPPED_KEY: 3}


def test_a_full_buffer_spills_the_oldest_records_in_order() -> None:
    sink = MemorySink.named("speedups-full")
    recorder = get_recorder()
    _config.configure(url="memory://speedups-full", buffer_size=4, install_signal_handlers=False)
    recorder.flush()
    # The recorder is the process's own: an earlier test in this process may have counted
    # drops on it, so only what this test adds is checked.
    dropped = recorder.dropped
    with recorder._locked(None):  # hold the writer so nothing drains meanwhile
        before = recorder.spilled
        for i in range(10):
            recorder.record((model.METRIC, "job", "m", i, float(i), 0.0))
        # The two oldest go to disk whenever a record finds the buffer full.
        assert recorder.spilled - before == 6
        assert [r[3] for r in recorder._buf] == [6, 7, 8, 9]
    assert recorder.flush(timeout=None)
    assert [r[3] for r in sink.of_kind(model.METRIC)] == list(range(10))
    assert recorder.dropped == dropped


def test_a_full_buffer_with_a_full_spool_drops_and_counts_by_kind_without_raising() -> None:
    sink = MemorySink.named("speedups-capped")
    recorder = get_recorder()
    _config.configure(
        url="memory://speedups-capped",
        buffer_size=4,
        spool_max_bytes=0,
        install_signal_handlers=False,
    )
    recorder.flush()
    job = f"capped-{uuid.uuid4().hex}"  # drops counted before, in this process, were others'
    metrics_dropped = recorder.dropped_by_kind.get(model.METRIC, 0)
    with recorder._locked(None):
        for i in range(10):
            recorder.record((model.METRIC, job, "m", i, float(i), 0.0))
        assert recorder.dropped_by_kind.get(model.METRIC, 0) - metrics_dropped == 6
        assert recorder.records_dropped(job) == {model.METRIC: 6}
    assert recorder.flush(timeout=None)
    assert [r[3] for r in sink.of_kind(model.METRIC)] == [6, 7, 8, 9]


def test_update_and_traceparent_work_on_either_span_type(memory_sink: MemorySink) -> None:
    with jobtrace.Trace("x") as span:
        assert isinstance(span, jobtrace.Span)
        span.update({"a": 1})
        header = span.traceparent()
        trace_id, span_id, parent = span.ids
        assert repr(span) == f"<Span 'x' trace={trace_id} span={span_id}>"
    assert header == f"00-{trace_id}-{span_id}-01" and parent is None
    assert [r[7] for r in span_records(memory_sink)] == [{"a": 1}]
