"""A small profiled "service": @profile, instruments, a handler and Prometheus text.

    python examples/profiled_service.py                 # prints what /metrics would serve
    JOBTRACE_URL=sqlite:///svc.db python examples/profiled_service.py

Three worker threads serve requests through a profiled handler; the time histogram is
labelled by Phanos's context strings (``Shop:checkout``, ``Shop:checkout.price``). A
counter, a live-sum gauge and an enum sit beside it; a stream handler prints one root
call's records; the end prints the process's state in Prometheus's text format through
prometheus_client's exposition code. The same series also travel to the store on every
flush tick, where ``jobtrace.store.series.merged_series`` merges them across processes.
"""

from __future__ import annotations

import io
import threading

import jobtrace
from jobtrace.instruments import (
    Counter,
    Enum,
    Gauge,
    StreamHandler,
    merge_series,
    process_source,
    profiler,
    render,
)
from jobtrace.instruments.registry import REGISTRY

orders = Counter("orders", job="shop", units="orders", labels=["status"])
in_flight = Gauge("requests_in_flight", job="shop", mode="live-sum")
phase = Enum("phase", job="shop", states=["starting", "serving", "stopping"])


class Shop:
    @jobtrace.profile
    def checkout(self, cart: list[int]) -> bytes:
        in_flight.inc()
        try:
            total = self.price(cart)
            orders.labels(status="ok" if total < 100 else "review").inc()
            return f'{{"total": {total}}}'.encode()
        finally:
            in_flight.dec()

    @jobtrace.profile
    def price(self, cart: list[int]) -> int:
        return sum(cart)


def main() -> None:
    profiler.config(job="shop", response_size_profile=True)
    out = io.StringIO()
    phase.state("serving")
    shop = Shop()

    def worker(seed: int) -> None:
        for i in range(200):
            shop.checkout([seed, i % 150])

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    profiler.add_handler(StreamHandler("stdout", out))
    shop.checkout([1, 2])
    profiler.flush()
    phase.state("stopping")
    print("records of one root call, as the stream handler wrote them:")
    print(out.getvalue())
    print(f"this process is source {process_source()}; its state in Prometheus text format:\n")
    rows = REGISTRY.rows()
    print(render(merge_series(rows, now=rows[0].updated_at)).decode())


if __name__ == "__main__":
    main()
