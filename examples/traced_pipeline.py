"""A small traced pipeline: nested trace points in threads, asyncio tasks and processes.

    jobtrace run examples/traced_pipeline.py
    jobtrace trace list
    jobtrace trace show <trace id>                 # a tree in the terminal
    jobtrace trace show <trace id> --html --out trace.html

It checksums this repository's Python files in a thread pool, "fetches" a few URLs
concurrently with asyncio (simulated waits, no network), and squares numbers in a process
pool; every step is a span under one root, whatever thread, task or process ran it.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import jobtrace
from jobtrace.tracing.executors import ProcessPoolExecutor, ThreadPoolExecutor


@jobtrace.trace("checksum", hide_result=False)
def checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@jobtrace.trace("fetch")
async def fetch(url: str, seconds: float) -> int:
    with jobtrace.Trace("wait", info={"seconds": seconds}):
        await asyncio.sleep(seconds)
    return len(url)


async def fetch_all() -> list[int]:
    urls = {"https://example.invalid/a": 0.05, "https://example.invalid/bb": 0.1}
    return await asyncio.gather(*(fetch(u, s) for u, s in urls.items()))


def square(n: int) -> int:
    with jobtrace.Trace("square", info={"n": n}):
        return n * n


def main() -> None:
    root = Path(__file__).resolve().parent.parent / "src"
    with jobtrace.Trace("pipeline") as span:
        files = sorted(root.rglob("*.py"))[:20]
        with ThreadPoolExecutor(4) as pool:
            sums = list(pool.map(checksum, files))
        sizes = asyncio.run(fetch_all())
        with ProcessPoolExecutor(2) as procs:
            squares = list(procs.map(square, range(6)))
        span.set("files", len(files))
    print(f"{len(sums)} checksums, fetched {sizes}, squares {squares}")
    trace_id = span.ids[0] if isinstance(span, jobtrace.Span) else "(not sampled)"
    print(f"trace {trace_id}: see it with `jobtrace trace show {trace_id}`")


if __name__ == "__main__":
    main()
