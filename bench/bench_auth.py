"""What authentication costs HTTP batch ingest: a server with tokens vs one without.

Budget: ingest with a token keeps >= 0.9x the rate of the same server without tokens, for
big batches (20,000 metric points per request, what the sink sends under load) and small
ones (100 points per request, a quiet job's flush).

Each batch names a new job, the worst case for the owner check: every batch claims its job
(one INSERT, one SELECT) before it is written; later batches of a known job cost no query.
Both servers run as ``jobtrace serve`` in subprocesses on loopback over SQLite stores in the
same directory; their requests interleave round by round. The token server runs with its
default settings: live tokens cached for 2 s, so verifying a token costs no query.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from _common import Verdicts, banner, format_table, interleave, median, parse_args, spread
from bench_persist import metric_batch
from bench_server import served
from jobtrace import _config, _ids
from jobtrace.sinks.http import HTTPSink
from jobtrace.store import Store, tokens

BIG, SMALL = 20_000, 100
SMALL_PER_ROUND = 50
RATIO_BUDGET = 0.9


def rate(sink: HTTPSink, size: int, count: int) -> float:
    batches = [metric_batch(size) for _ in range(count)]
    start = time.perf_counter()
    for batch in batches:
        sink.write(batch, batch_id=_ids.time_ordered_id())
    return size * count / (time.perf_counter() - start)


def sink_with(url: str, token: str | None) -> HTTPSink:
    # The sink reads JOBTRACE_TOKEN when it is made, as in a recorded job.
    os.environ.pop(_config.ENV_TOKEN, None)
    if token is not None:
        os.environ[_config.ENV_TOKEN] = token
    try:
        return HTTPSink(url)
    finally:
        os.environ.pop(_config.ENV_TOKEN, None)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    rounds = 3 if args.quick else 7
    big_per_round = 1 if args.quick else 3
    banner(
        "bench_auth: HTTP batch ingest with an API token vs without tokens",
        args.quick,
        [
            f"{rounds} rounds x {big_per_round} batch(es) of {BIG:,} points and "
            f"{SMALL_PER_ROUND} of {SMALL} points, each batch a new job",
            "client and both servers share this machine's cores",
        ],
    )
    verdicts = Verdicts("bench_auth")
    with tempfile.TemporaryDirectory(prefix="jt-bench-auth-") as tmp:
        directory = Path(tmp)
        open_url = f"sqlite:///{directory / 'open.db'}"
        closed_url = f"sqlite:///{directory / 'closed.db'}"
        Store(open_url).close()
        with Store(closed_url) as store:
            token = tokens.create(store, "bench")
        with served(open_url, directory / "a") as a, served(closed_url, directory / "b") as b:
            plain, guarded = sink_with(a, None), sink_with(b, token)
            try:
                for sink in (plain, guarded):
                    sink.write(metric_batch(100), batch_id=_ids.time_ordered_id())  # warm up
                results = interleave(
                    {
                        "big, no tokens": lambda: rate(plain, BIG, big_per_round),
                        "big, token": lambda: rate(guarded, BIG, big_per_round),
                        "small, no tokens": lambda: rate(plain, SMALL, SMALL_PER_ROUND),
                        "small, token": lambda: rate(guarded, SMALL, SMALL_PER_ROUND),
                    },
                    rounds,
                )
            finally:
                plain.close()
                guarded.close()
    rows = []
    for size in ("big", "small"):
        bare, auth = median(results[f"{size}, no tokens"]), median(results[f"{size}, token"])
        ratio = auth / bare
        word = verdicts.check(
            f"{size} batches: with a token / without",
            ratio >= RATIO_BUDGET,
            f"{ratio:.2f} (budget >= {RATIO_BUDGET})",
        )
        rows.append(
            [f"{size}, no tokens", f"{bare:,.0f}", spread(results[f"{size}, no tokens"]), ""]
        )
        rows.append([f"{size}, token", f"{auth:,.0f}", spread(results[f"{size}, token"]), word])
        print(f"{size} batches: with a token / without tokens = {ratio:.2f}")
    print()
    print(format_table(["case", "points/s", "rounds min..max", "budget"], rows))
    return verdicts.report(args.strict)


if __name__ == "__main__":
    sys.exit(main())
