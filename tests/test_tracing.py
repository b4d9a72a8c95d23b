"""Tracing through the public API: the five ways, context across threads, asyncio tasks,
generators and processes, sampling, the span cap, and bad input."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import jobtrace
from jobtrace import _config, model, profiler
from jobtrace.sinks.memory import MemorySink
from jobtrace.store import Store, schema
from jobtrace.tracing import Thread, child_env, current_span, in_process, wrap
from jobtrace.tracing.executors import ProcessPoolExecutor, ThreadPoolExecutor


def spans(sink: MemorySink) -> list[dict[str, Any]]:
    """Recorded spans as dicts with hex ids, oldest end first."""
    jobtrace.flush()
    return [model.to_dict(r) for r in sink.of_kind(model.SPAN)]


def by_name(sink: MemorySink) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in spans(sink)}


def test_with_trace_records_a_span_with_its_attributes(memory_sink: MemorySink) -> None:
    info = {"table": "users"}
    with jobtrace.Trace("query", info=info) as span:
        span.set("rows", 3)
    [s] = spans(memory_sink)
    assert s["name"] == "query" and s["parent_id"] is None
    assert s["info"] == {"table": "users", "rows": 3}
    assert info == {"table": "users"}  # the caller's dict is not touched
    assert len(s["trace_id"]) == 32 and len(s["span_id"]) == 16
    assert s["duration_ns"] >= 0 and s["start_ns"] > 1_600_000_000 * 10**9
    assert s["pid"] > 0 and s["thread"] == "MainThread" and s["job_id"] is None


def test_nested_points_have_the_right_parents(memory_sink: MemorySink) -> None:
    @jobtrace.trace("leaf")
    def leaf() -> None:
        pass

    with jobtrace.Trace("root"):
        with jobtrace.Trace("middle"):
            leaf()
        jobtrace.start("manual")
        leaf()
        jobtrace.stop({"done": True})
    s = spans(memory_sink)
    names = {x["span_id"]: x["name"] for x in s}
    parents = sorted((x["name"], names.get(x["parent_id"])) for x in s)
    assert parents == [
        ("leaf", "manual"),
        ("leaf", "middle"),
        ("manual", "root"),
        ("middle", "root"),
        ("root", None),
    ]
    assert len({x["trace_id"] for x in s}) == 1
    assert by_name(memory_sink)["manual"]["info"] == {"done": True}


def test_trace_decorator_keeps_args_and_result_per_call(memory_sink: MemorySink) -> None:
    @jobtrace.trace("add", info={"kind": "math"}, hide_result=False)
    def add(a: int, b: int = 0) -> int:
        return a + b

    @jobtrace.trace("secret", hide_args=True)
    def secret(password: str) -> str:
        return password

    assert add(1, b=2) == 3 and add(5) == 5
    secret("hunter2")
    s = spans(memory_sink)
    first, second, hidden = s
    qualname = f"{__name__}.test_trace_decorator_keeps_args_and_result_per_call.<locals>.add"
    assert first["info"] == {
        "kind": "math",
        "function": {"name": qualname, "args": "(1,)", "kwargs": "{'b': 2}", "result": "3"},
    }
    assert (
        second["info"]["function"]["args"] == "(5,)" and second["info"]["function"]["result"] == "5"
    )
    assert "args" not in hidden["info"]["function"] and "result" not in hidden["info"]["function"]
    assert "hunter2" not in str(hidden)


def test_exceptions_propagate_unchanged_and_are_recorded(memory_sink: MemorySink) -> None:
    class Boom(Exception):
        pass

    error = Boom("no <good>")

    @jobtrace.trace("fails")
    def fails() -> None:
        raise error

    with pytest.raises(Boom) as info, jobtrace.Trace("outer"):
        fails()
    assert info.value is error
    s = by_name(memory_sink)
    for name in ("fails", "outer"):
        assert s[name]["error_type"].endswith("Boom") and s[name]["error_message"] == "no <good>"


def test_trace_cls_and_traced_meta(memory_sink: MemorySink) -> None:
    @jobtrace.trace_cls("svc", trace_private=True, trace_static_methods=True)
    class Service:
        def public(self) -> int:
            return self._private()

        def _private(self) -> int:
            return 1

        @staticmethod
        def helper() -> int:
            return 2

        def __repr__(self) -> str:
            return "Service()"

    class Api(metaclass=jobtrace.TracedMeta):
        __trace_args__: typing.ClassVar[dict[str, Any]] = {"name": "rpc", "hide_args": True}

        def call(self, x: int) -> int:
            return x

        def _hidden(self) -> None:
            pass

    assert Service().public() == 1 and Service.helper() == 2 and Api().call(3) == 3
    Api()._hidden()
    repr(Service())
    functions = sorted(s["info"]["function"]["name"].rsplit(".", 1)[1] for s in spans(memory_sink))
    assert functions == ["_private", "call", "helper", "public"]
    with pytest.raises(TypeError, match="__trace_args__"):

        class Broken(metaclass=jobtrace.TracedMeta):
            pass


def test_threads_and_thread_pools_attach_to_the_submitting_span(memory_sink: MemorySink) -> None:
    def work(tag: str) -> None:
        with jobtrace.Trace(f"work-{tag}"):
            pass

    with jobtrace.Trace("root"):
        thread = Thread(target=work, args=("thread",))
        thread.start()
        thread.join()
        plain = __import__("threading").Thread(target=wrap(work), args=("wrapped",))
        plain.start()
        plain.join()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(work, [f"pool{i}" for i in range(8)]))
    s = by_name(memory_sink)
    root_id = s["root"]["span_id"]
    workers = [v for k, v in s.items() if k.startswith("work-")]
    assert len(workers) == 10
    assert all(
        w["parent_id"] == root_id and w["trace_id"] == s["root"]["trace_id"] for w in workers
    )
    assert {w["thread"] for w in workers} != {"MainThread"}


def test_concurrent_asyncio_tasks_keep_their_own_parents_and_durations(
    memory_sink: MemorySink,
) -> None:
    @jobtrace.trace("sleeper", hide_args=True)
    async def sleeper(seconds: float) -> float:
        with jobtrace.Trace(f"inner-{seconds}"):
            await asyncio.sleep(seconds)
        return seconds

    async def task(seconds: float) -> None:
        with jobtrace.Trace(f"task-{seconds}"):
            await sleeper(seconds)

    async def main() -> None:
        with jobtrace.Trace("main"):
            await asyncio.gather(*(task(t) for t in (0.2, 0.05, 0.1)))

    asyncio.run(main())
    s = spans(memory_sink)
    named = {x["name"]: x for x in s}
    ids = {x["span_id"]: x for x in s}
    for seconds in (0.2, 0.05, 0.1):
        task_span, inner = named[f"task-{seconds}"], named[f"inner-{seconds}"]
        sleeper_span = ids[inner["parent_id"]]
        assert sleeper_span["name"] == "sleeper"
        assert sleeper_span["parent_id"] == task_span["span_id"]
        assert task_span["parent_id"] == named["main"]["span_id"]
        assert seconds * 1e9 <= inner["duration_ns"]
    # Each duration reflects its own sleep, not its siblings': the timers fire in deadline
    # order, so the spans end in that order too (an order, not a timing bound, so a loaded
    # machine cannot fail it).
    inners = [named[f"inner-{seconds}"] for seconds in (0.05, 0.1, 0.2)]
    ends = [x["start_ns"] + x["duration_ns"] for x in inners]
    assert ends == sorted(ends)
    assert [x["duration_ns"] for x in inners] == sorted(x["duration_ns"] for x in inners)
    assert named["main"]["duration_ns"] >= 0.2e9


def test_an_async_function_is_timed_when_awaited_not_when_created(memory_sink: MemorySink) -> None:
    @jobtrace.trace("slow")
    async def slow() -> str:
        await asyncio.sleep(0.05)
        return "done"

    created_at: list[int] = []

    async def main() -> str:
        coroutine = slow()
        created_at.append(time.time_ns())
        await asyncio.sleep(0.2)  # created long before it runs
        return await coroutine

    assert asyncio.run(main()) == "done"
    [s] = spans(memory_sink)
    assert s["duration_ns"] >= 0.05e9
    # Timed from the first await: it starts after the 0.2 s pause, not when created.
    assert s["start_ns"] >= created_at[0] + 0.15e9


def test_a_generator_is_timed_until_exhausted_and_hidden_from_its_consumer(
    memory_sink: MemorySink,
) -> None:
    @jobtrace.trace("produce", hide_result=False)
    def produce(n: int) -> Any:
        for i in range(n):
            with jobtrace.Trace("item"):
                pass
            yield i
        return "finished"

    with jobtrace.Trace("consumer"):
        seen = []
        for value in produce(3):
            with jobtrace.Trace("handle"):  # between items: the consumer's own child
                seen.append(value)
    assert seen == [0, 1, 2]
    s = spans(memory_sink)
    ids = {x["span_id"]: x["name"] for x in s}
    parents = [(x["name"], ids.get(x["parent_id"])) for x in s]
    assert parents.count(("item", "produce")) == 3
    assert parents.count(("handle", "consumer")) == 3
    assert by_name(memory_sink)["produce"]["info"]["function"]["result"] == "'finished'"


def test_an_async_generator_is_timed_until_exhausted(memory_sink: MemorySink) -> None:
    @jobtrace.trace("stream")
    async def stream() -> Any:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield i

    async def main() -> list[int]:
        return [i async for i in stream()]

    assert asyncio.run(main()) == [0, 1, 2]
    [s] = spans(memory_sink)
    assert s["duration_ns"] >= 0.03e9


def test_a_closed_generator_still_records_its_span(memory_sink: MemorySink) -> None:
    @jobtrace.trace("endless")
    def endless() -> Any:
        while True:
            yield 1

    gen = endless()
    next(gen)
    gen.close()
    assert [s["name"] for s in spans(memory_sink)] == ["endless"]


def test_spans_belong_to_the_current_job(memory_sink: MemorySink) -> None:
    with jobtrace.job("traced") as job, jobtrace.Trace("in-job"):
        pass
    with jobtrace.Trace("no-job"):
        pass
    s = by_name(memory_sink)
    assert s["in-job"]["job_id"] == job.id and s["no-job"]["job_id"] is None


def test_sampling_is_decided_at_the_root_and_followed_by_children(memory_sink: MemorySink) -> None:
    _config.configure(
        url=f"memory://{memory_sink.name}", trace_sample_rate=0.5, install_signal_handlers=False
    )
    for _ in range(200):
        with jobtrace.Trace("root"), jobtrace.Trace("child"):
            pass
    s = spans(memory_sink)
    roots = [x for x in s if x["name"] == "root"]
    children = [x for x in s if x["name"] == "child"]
    assert 40 < len(roots) < 160  # about half
    assert {c["parent_id"] for c in children} == {r["span_id"] for r in roots}

    _config.configure(
        url=f"memory://{memory_sink.name}", trace_sample_rate=0.0, install_signal_handlers=False
    )
    with jobtrace.Trace("never") as span:
        span.set("x", 1)  # harmless on an unrecorded span
        assert current_span() is None
    assert "never" not in by_name(memory_sink)


def test_a_cap_on_spans_per_trace_counts_the_overflow(memory_sink: MemorySink) -> None:
    _config.configure(
        url=f"memory://{memory_sink.name}", trace_max_spans=5, install_signal_handlers=False
    )
    with jobtrace.Trace("root"):
        for _ in range(20):
            with jobtrace.Trace("child"):
                pass
    s = spans(memory_sink)
    assert [x["name"] for x in s] == ["child"] * 5 + ["root"]
    assert s[-1]["info"] == {"jobtrace.dropped_spans": 15}


def test_bad_input_never_raises(memory_sink: MemorySink, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jobtrace"):
        jobtrace.stop()  # no open trace point
        jobtrace.stop()
        with jobtrace.Trace(123) as span:  # type: ignore[arg-type]
            span.set("opaque", object())
        with jobtrace.Trace("ok", info="not a dict"):  # type: ignore[arg-type]
            pass
    assert sum("stop() without a matching start()" in r.getMessage() for r in caplog.records) == 1
    s = by_name(memory_sink)
    assert "123" in s and s["ok"]["info"] is None


def test_disabled_recording_records_no_spans(memory_sink: MemorySink) -> None:
    _config.configure(
        url=f"memory://{memory_sink.name}", enabled=False, install_signal_handlers=False
    )

    @jobtrace.trace("off")
    def off() -> int:
        return 1

    with jobtrace.Trace("off-block"):
        assert off() == 1
    jobtrace.start("off-manual")
    jobtrace.stop()
    assert spans(memory_sink) == []


def test_osprofiler_names_work_as_a_drop_in(memory_sink: MemorySink) -> None:
    p = profiler.init("secret-key")
    assert profiler.get() is p and p.hmac_key == "secret-key"
    with profiler.Trace("db", info={"q": "select 1"}):
        assert p.get_base_id() is not None and p.get_id() is not None
    profiler.start("manual")
    profiler.stop()
    profiler.clean()
    assert profiler.get() is None

    base = "8f5f5b3f-4a8a-4e7c-9f3b-2a9c0d1e2f3a"
    profiler.init("k", base_id=base, parent_id="1d2e3f4a-5b6c-7d8e-9f0a-1b2c3d4e5f6a")
    with profiler.Trace("joined"):
        pass
    profiler.clean()
    s = by_name(memory_sink)
    assert s["joined"]["trace_id"] == base.replace("-", "")
    assert s["joined"]["parent_id"] == "9f0a1b2c3d4e5f6a"
    assert s["db"]["trace_id"] != s["joined"]["trace_id"]


def store_spans(url: str) -> list[dict[str, Any]]:
    store = Store(url)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(schema.spans))]


def test_spans_reach_the_store_with_hex_ids(store_url: str) -> None:
    _config.configure(url=store_url, install_signal_handlers=False)
    with (
        jobtrace.Trace("root", info={"html": "<script>alert(1)</script>"}),
        jobtrace.Trace("child"),
    ):
        pass
    jobtrace.flush()
    rows = {r["name"]: r for r in store_spans(store_url)}
    assert rows["child"]["parent_id"] == rows["root"]["span_id"]
    assert len(rows["root"]["trace_id"]) == 32 and rows["root"]["info"] == {
        "html": "<script>alert(1)</script>"
    }


def work_in_process(n: int) -> int:
    with jobtrace.Trace(f"proc-{n}"):
        return n * n


def test_a_process_pool_attaches_worker_spans_to_the_submitting_span(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/procs.db"
    _config.configure(url=url, install_signal_handlers=False)
    with jobtrace.job("pooled") as job, jobtrace.Trace("root") as root:
        with ProcessPoolExecutor(2) as pool:
            assert list(pool.map(work_in_process, range(4))) == [0, 1, 4, 9]
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(2) as mp_pool:
            assert mp_pool.map(in_process(work_in_process), [10, 11]) == [100, 121]
    jobtrace.flush()
    rows = {r["name"]: r for r in store_spans(url)}
    trace_id, span_id, _ = root.ids  # type: ignore[union-attr]
    for name in ("proc-0", "proc-1", "proc-2", "proc-3", "proc-10", "proc-11"):
        assert rows[name]["parent_id"] == span_id and rows[name]["trace_id"] == trace_id, name
        assert rows[name]["job_id"] == job.id and rows[name]["pid"] != rows["root"]["pid"]


def test_a_subprocess_joins_the_trace_through_its_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/sub.db"
    _config.configure(url=url, install_signal_handlers=False)
    code = textwrap.dedent(
        f"""
        import jobtrace
        jobtrace.configure({url!r})
        with jobtrace.Trace("in-child"):
            pass
        """
    )
    with jobtrace.job("parent") as job, jobtrace.Trace("spawn") as span:
        subprocess.run([sys.executable, "-c", code], env=child_env(), check=True)
    jobtrace.flush()
    rows = {r["name"]: r for r in store_spans(url)}
    assert rows["in-child"]["parent_id"] == rows["spawn"]["span_id"]
    assert rows["in-child"]["trace_id"] == rows["spawn"]["trace_id"]
    assert rows["in-child"]["job_id"] == job.id
    assert span is not None


def test_processes_started_by_a_run_belong_to_its_job(tmp_path: Path) -> None:
    from tests.cli_helpers import jobtrace_cli

    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import subprocess, sys
            code = "import jobtrace\\nwith jobtrace.Trace('child-work'): pass"
            subprocess.run([sys.executable, "-c", code], check=True)
            """
        )
    )
    jobtrace_cli("run", "--job-id", "run-7", str(script), cwd=tmp_path, check=True)
    [row] = store_spans(f"sqlite:///{tmp_path}/.jobtrace/jobtrace.db")
    assert (row["name"], row["job_id"]) == ("child-work", "run-7")


def test_unserialisable_info_is_stored_as_repr_with_one_log_line(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "<Opaque>"

    from jobtrace.store import writer

    writer._unserialisable_seen.clear()  # said once per type and process
    _config.configure(url=store_url, install_signal_handlers=False)
    with caplog.at_level(logging.WARNING, logger="jobtrace"):
        for i in range(3):
            with jobtrace.Trace("opaque", info={"value": Opaque(), "i": i}):
                pass
        jobtrace.flush()
    rows = store_spans(store_url)
    assert sorted(r["info"]["i"] for r in rows) == [0, 1, 2]
    assert {r["info"]["value"] for r in rows} == {"<Opaque>"}
    # One line per type and process: the writer thread logs it.
    assert (
        sum("Opaque values are not JSON-serialisable" in r.getMessage() for r in caplog.records)
        == 1
    )


def test_work_for_an_unsampled_caller_stays_unrecorded(memory_sink: MemorySink) -> None:
    _config.configure(
        url=f"memory://{memory_sink.name}", trace_sample_rate=0.0, install_signal_handlers=False
    )
    with jobtrace.Trace("unsampled-root"):
        prepared = in_process(work_in_process)
    _config.configure(
        url=f"memory://{memory_sink.name}", trace_sample_rate=1.0, install_signal_handlers=False
    )
    assert prepared(3) == 9  # runs here, as a worker would, under the carried context
    assert spans(memory_sink) == []


def test_a_process_started_under_a_trace_passes_it_on_to_its_own_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from jobtrace.tracing import carrier, spans

    parent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
    monkeypatch.setattr(spans._settings, "remote_parent", spans.parse_traceparent(parent))
    assert carrier()[_config.ENV_TRACEPARENT] == parent
