"""``jobtrace consume``: drain an ``amqp://`` queue into a store (see :mod:`jobtrace.consumer`)."""

from __future__ import annotations

import signal
import sys
from types import FrameType

import click

from jobtrace.cli._common import database_url, fail, handle_errors, store_option


@click.command()
@click.argument("amqp_url", metavar="AMQP_URL")
@store_option
@click.option(
    "--queue",
    metavar="NAME",
    help="Queue to drain [default: the URL's ?queue=, else jobtrace.records].",
)
@click.option(
    "--prefetch",
    default=8,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Messages (batches) the broker may hand over ahead of acknowledgements.",
)
@click.option("--stats", is_flag=True, help="Show a live line: records/s, duplicates, lag.")
@click.option(
    "--until-empty",
    is_flag=True,
    help="Exit once the queue has nothing ready (a backfill, a cron job) instead of waiting.",
)
@click.option(
    "--metrics/--no-metrics",
    default=True,
    help="Publish the consumer's progress and lag as series to the store, where a "
    "jobtrace serve's /metrics shows them.",
)
@handle_errors
def consume(
    amqp_url: str,
    store_url: str | None,
    queue: str | None,
    prefetch: int,
    stats: bool,
    until_empty: bool,
    metrics: bool,
) -> None:
    """Move record batches from a RabbitMQ queue into a store, each exactly once.

    Jobs record into the queue with JOBTRACE_URL=amqp://…; run one or several consumers
    beside them. A consumer killed at any point and restarted stores every record once;
    SIGTERM or Ctrl-C finishes the batch in hand and exits 0. Messages that cannot be
    stored go to the queue QUEUE.dead, each with a log line.

    \b
        jobtrace consume amqp://guest:guest@127.0.0.1:5672/ --store postgresql://db/jobtrace
        JOBTRACE_URL='amqp://guest:guest@127.0.0.1:5672/' jobtrace run train.py
    """
    import logging

    from jobtrace import _config

    url = database_url(store_url, "jobtrace consume")
    if amqp_url.split("://", 1)[0].lower() not in {"amqp", "amqps"}:
        fail(f"AMQP_URL must be amqp://… or amqps://…, not {_config.mask_url(amqp_url)!r}")
    try:
        import fastapi  # noqa: F401
        import pika  # noqa: F401
    except ImportError as exc:
        fail(f"jobtrace consume needs its extras: pip install 'jobtrace[rabbitmq,server]' ({exc})")
    from jobtrace.consumer import Consumer, ConsumerStats

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    if metrics:
        # The consumer's series travel through this process's recorder into the store.
        _config.configure(url=url, install_signal_handlers=False)
    live = None
    on_tick = None
    if stats:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        live = Live(Text("connecting…"), console=Console(stderr=True), auto_refresh=False)
        live.start()

        def on_tick(current: ConsumerStats) -> None:
            live.update(Text(current.line()), refresh=True)

    consumer = Consumer(
        amqp_url, url, queue=queue, prefetch=prefetch, on_tick=on_tick, instruments=metrics
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        consumer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        result = consumer.run(until_empty=until_empty)
    finally:
        if live is not None:
            live.stop()
    if metrics:
        from jobtrace import flush
        from jobtrace.instruments import publish

        publish(final=True)
        flush()
    if not stats:
        click.echo(result.line(), err=True)
    sys.exit(0)
