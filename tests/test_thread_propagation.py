"""propagate_threads(): plain threads and thread pools join the span that handed them work,
and the patches never get in the host program's way."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jobtrace
from jobtrace import model
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store
from jobtrace.tracing import threads
from jobtrace.tracing.executors import ThreadPoolExecutor as TracedPool
from tests.cli_helpers import cli_env, jobtrace_cli

WORKERS = 20


@pytest.fixture
def propagating() -> Iterator[None]:
    threads.propagate_threads()
    try:
        yield
    finally:
        threads.stop_propagating_threads()


def spans(sink: MemorySink) -> list[dict[str, Any]]:
    jobtrace.flush()
    return [model.to_dict(r) for r in sink.of_kind(model.SPAN)]


def work(i: int) -> int:
    with jobtrace.Trace(f"work-{i}"):
        return i * 2


def start_threads(n: int, target: Any = work) -> None:
    started = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in started:
        t.start()
    for t in started:
        t.join()


def test_without_it_each_plain_thread_starts_a_trace_of_its_own(memory_sink: MemorySink) -> None:
    with jobtrace.Trace("batch"):
        start_threads(WORKERS)
    found = spans(memory_sink)
    assert len({s["trace_id"] for s in found}) == WORKERS + 1


def test_twenty_plain_threads_are_children_of_the_starting_span(
    memory_sink: MemorySink, propagating: None
) -> None:
    with jobtrace.Trace("batch"):
        start_threads(WORKERS)
    found = spans(memory_sink)
    [root] = [s for s in found if s["name"] == "batch"]
    children = [s for s in found if s["name"].startswith("work-")]
    assert len(children) == WORKERS
    assert {s["trace_id"] for s in found} == {root["trace_id"]}
    assert {s["parent_id"] for s in children} == {root["span_id"]}
    assert {s["thread"] for s in children}.isdisjoint({"MainThread"})


def test_pool_tasks_join_the_span_that_submitted_each(
    memory_sink: MemorySink, propagating: None
) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        with jobtrace.Trace("first"):
            assert list(pool.map(work, range(WORKERS))) == [i * 2 for i in range(WORKERS)]
        # The pool's threads were started under "first"; tasks submitted under "second"
        # must not inherit that.
        with jobtrace.Trace("second"):
            pool.submit(work, 99).result()
        pool.submit(work, 100).result()  # no span open: a root
    by_name = {s["name"]: s for s in spans(memory_sink)}
    first, second = by_name["first"], by_name["second"]
    for i in range(WORKERS):
        assert by_name[f"work-{i}"]["parent_id"] == first["span_id"]
    assert by_name["work-99"]["parent_id"] == second["span_id"]
    assert by_name["work-100"]["parent_id"] is None
    assert by_name["work-100"]["trace_id"] not in {first["trace_id"], second["trace_id"]}


def test_a_pool_initializer_belongs_to_no_submitters_trace(
    memory_sink: MemorySink, propagating: None
) -> None:
    def init() -> None:
        with jobtrace.Trace("init"):
            pass

    with (
        jobtrace.Trace("request"),
        concurrent.futures.ThreadPoolExecutor(max_workers=2, initializer=init) as pool,
    ):
        pool.submit(work, 1).result()
    by_name = {s["name"]: s for s in spans(memory_sink)}
    assert by_name["init"]["parent_id"] is None
    assert by_name["work-1"]["parent_id"] == by_name["request"]["span_id"]


def test_a_subclass_overriding_run_joins_the_trace_too(
    memory_sink: MemorySink, propagating: None
) -> None:
    class Worker(threading.Thread):
        def __init__(self) -> None:
            super().__init__(name="worker")
            self.result = 0

        def run(self) -> None:
            self.result = work(21)

    with jobtrace.Trace("parent"):
        worker = Worker()
        worker.start()
        worker.join()
    assert worker.result == 42
    by_name = {s["name"]: s for s in spans(memory_sink)}
    assert by_name["work-21"]["parent_id"] == by_name["parent"]["span_id"]
    assert by_name["work-21"]["thread"] == "worker"


def test_the_job_follows_the_work_into_threads(memory_sink: MemorySink, propagating: None) -> None:
    with jobtrace.job("threaded", report=False, profile=False) as job:
        start_threads(3)
    assert {s["job_id"] for s in spans(memory_sink)} == {job.id}


def test_jobtraces_own_pool_and_thread_run_once_in_context_under_the_patch(
    memory_sink: MemorySink, propagating: None
) -> None:
    with jobtrace.Trace("parent"):
        with TracedPool(max_workers=2) as pool:
            assert pool.submit(work, 1).result() == 2
        t = jobtrace.tracing.Thread(target=work, args=(2,))
        t.start()
        t.join()
    by_name = {s["name"]: s for s in spans(memory_sink)}
    parent = by_name["parent"]["span_id"]
    assert by_name["work-1"]["parent_id"] == by_name["work-2"]["parent_id"] == parent


def test_threads_started_before_run_as_before(memory_sink: MemorySink) -> None:
    go = threading.Event()

    def waits(i: int) -> None:
        go.wait(timeout=30)
        work(i)

    with jobtrace.Trace("before"):
        early = threading.Thread(target=waits, args=(1,))
        early.start()
    threads.propagate_threads()
    try:
        go.set()
        early.join()
    finally:
        threads.stop_propagating_threads()
    assert {s["name"]: s for s in spans(memory_sink)}["work-1"]["parent_id"] is None


def test_installing_twice_and_uninstalling_restores_the_originals() -> None:
    start, bootstrap = threading.Thread.start, threading.Thread._bootstrap_inner  # type: ignore[attr-defined]
    submit = concurrent.futures.ThreadPoolExecutor.submit
    threads.propagate_threads()
    threads.propagate_threads()
    assert threads.propagating()
    assert threading.Thread.start is not start
    threads.stop_propagating_threads()
    threads.stop_propagating_threads()
    assert not threads.propagating()
    assert threading.Thread.start is start
    assert threading.Thread._bootstrap_inner is bootstrap  # type: ignore[attr-defined]
    assert concurrent.futures.ThreadPoolExecutor.submit is submit


def test_a_patch_laid_over_ours_keeps_working_after_uninstall_and_reinstall(
    memory_sink: MemorySink,
) -> None:
    original = threading.Thread.start
    calls: list[str] = []
    threads.propagate_threads()
    ours = threading.Thread.start

    def theirs(self: threading.Thread) -> None:
        calls.append(self.name)
        ours(self)

    threading.Thread.start = theirs  # type: ignore[method-assign]
    try:
        threads.stop_propagating_threads()
        assert threading.Thread.start is theirs  # not ours to restore
        start_threads(1)
        threads.propagate_threads()  # ours, still in their chain, works again: no loop
        with jobtrace.Trace("again"):
            start_threads(1)
        threads.stop_propagating_threads()
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    assert len(calls) == 2
    by_name = {s["name"]: s for s in spans(memory_sink)}
    assert by_name["work-0"]["trace_id"] == by_name["again"]["trace_id"]


def test_a_failing_thread_still_reports_through_the_excepthook(propagating: None) -> None:
    seen: list[type[BaseException]] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.exc_type)
    try:
        with jobtrace.Trace("parent"):
            t = threading.Thread(target=lambda: 1 / 0)
            t.start()
            t.join()
    finally:
        threading.excepthook = previous
    assert seen == [ZeroDivisionError]


def test_the_pool_is_patched_when_first_imported(tmp_path: Path) -> None:
    """concurrent.futures.thread is not imported by jobtrace, nor by propagate_threads."""
    script = textwrap.dedent(
        """
        import sys
        import jobtrace, jobtrace.tracing
        from jobtrace.sinks.memory import MemorySink

        jobtrace.configure("memory://p")
        jobtrace.tracing.propagate_threads()
        assert "concurrent.futures.thread" not in sys.modules
        from concurrent.futures import ThreadPoolExecutor

        def work(i):
            with jobtrace.Trace("w"):
                pass

        with jobtrace.Trace("root"):
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(work, range(20)))
        jobtrace.flush()
        print(len({r[1] for r in MemorySink.named("p").of_kind("span")}))
        """
    )
    path = tmp_path / "pool.py"
    path.write_text(script)
    done = subprocess.run(
        [sys.executable, str(path)],
        env=cli_env(tmp_path / ".jobtrace"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]


def test_jobtrace_run_puts_twenty_workers_in_one_trace(tmp_path: Path) -> None:
    script = tmp_path / "fanout.py"
    script.write_text(
        textwrap.dedent(
            """
            import threading
            from concurrent.futures import ThreadPoolExecutor
            import jobtrace

            def work(i):
                with jobtrace.Trace("work"):
                    pass

            with jobtrace.Trace("fan-out"):
                workers = [threading.Thread(target=work, args=(i,)) for i in range(20)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(work, range(20)))
            """
        )
    )
    jobtrace_cli("run", "--no-report", str(script), cwd=tmp_path, check=True)
    store = Store(f"sqlite:///{tmp_path / '.jobtrace' / 'jobtrace.db'}")
    try:
        [summary] = store.list_traces()
        assert (summary["name"], summary["spans"], summary["service"]) == ("fan-out", 41, "fanout")
        spans_ = store.get_trace(summary["trace_id"])
    finally:
        store.close()
    assert spans_ is not None
    root = next(s for s in spans_ if s["name"] == "fan-out")
    assert all(s["parent_id"] == root["span_id"] for s in spans_ if s["name"] == "work")
    assert {s["job_id"] for s in spans_} == {root["job_id"]} and root["job_id"]
