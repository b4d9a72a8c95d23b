"""A small stand-in for a training job, to see what a job profile shows.

    jobtrace run examples/train_demo.py            # then open the report.html it names

It waits on "downloads" (sleeping, as a slow network would), parses records in a thread
pool, holds a large buffer of features, and spends most of its CPU in a training loop,
logging a loss per epoch.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor

import jobtrace


def download(shard: int) -> bytes:
    time.sleep(0.15)  # waiting on the network: wall time, no CPU
    rng = random.Random(shard)
    return bytes(rng.getrandbits(8) for _ in range(200_000))


def parse(blob: bytes) -> list[float]:
    digest = hashlib.sha256(blob).digest()
    return [b / 255 for b in blob[:: max(1, digest[0] // 8 + 1)]]


def build_features(shards: list[bytes]) -> bytearray:
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(parse, shards))
    features = bytearray(64 * 1024 * 1024)  # the job's peak: one large buffer
    for i, row in enumerate(rows):
        features[i * 8 : i * 8 + 8] = int(sum(row)).to_bytes(8, "little")
    return features


def train_epoch(weights: list[float], features: bytearray) -> float:
    loss = 0.0
    for step in range(150_000):
        x = features[step % 4096] / 255
        grad = sum(w * x for w in weights) - math.sin(x)
        weights[step % len(weights)] -= 0.01 * grad
        loss += grad * grad
    return loss / 150_000


def main() -> None:
    shards = [download(i) for i in range(6)]
    features = build_features(shards)
    weights = [0.1] * 8
    for epoch in range(5):
        jobtrace.log_metric("loss", train_epoch(weights, features), step=epoch)


if __name__ == "__main__":
    main()
