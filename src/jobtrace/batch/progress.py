"""Progress of a running batch: a rich bar on a terminal, periodic log lines elsewhere.

The runner picks one reporter when the batch starts (decide once) and calls ``advance``
from whichever thread finished an item; every reporter is safe to call from many threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.progress import Task
    from rich.text import Text

__all__ = ["LOG_INTERVAL", "LogProgress", "NoProgress", "ProgressReporter", "make_reporter"]

#: Seconds between two plain progress lines when stderr is not a terminal.
LOG_INTERVAL = 10.0


class ProgressReporter(Protocol):
    def start(self) -> None: ...
    def advance(self, failed: bool) -> None: ...
    def close(self) -> None: ...


class NoProgress:
    """Reports nothing (``progress=False``)."""

    def start(self) -> None:
        pass

    def advance(self, failed: bool) -> None:
        pass

    def close(self) -> None:
        pass


def _eta(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


class LogProgress:
    """One plain line every ``interval`` seconds (checked as items finish) and a last one
    at the end, for logs and CI output where a redrawn bar would be noise."""

    def __init__(
        self, label: str, total: int, *, interval: float = LOG_INTERVAL, out: IO[str] | None = None
    ) -> None:
        self._label = label
        self._total = total
        self._interval = interval
        self._out = out
        self._lock = threading.Lock()
        self._done = 0
        self._errors = 0
        self._start = self._last = 0.0

    def start(self) -> None:
        self._start = self._last = time.monotonic()

    def advance(self, failed: bool) -> None:
        with self._lock:
            self._done += 1
            self._errors += failed
            now = time.monotonic()
            if now - self._last < self._interval or self._done == self._total:
                return  # the final line comes from close()
            self._last = now
            line = self._line(now)
        self._write(line)

    def close(self) -> None:
        with self._lock:
            line = self._line(time.monotonic(), final=True)
        self._write(line)

    def _line(self, now: float, final: bool = False) -> str:
        done, total, elapsed = self._done, self._total, now - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        percent = 100.0 * done / total if total else 100.0
        parts = [f"{done}/{total} items ({percent:.0f}%)", f"{rate:.1f} items/s"]
        if not final and rate > 0:
            parts.append(f"ETA {_eta((total - done) / rate)}")
        parts.append(f"{self._errors} errors")
        if final:
            parts.append(f"done in {elapsed:.1f} s")
        return f"jobtrace: {self._label}: {', '.join(parts)}"

    def _write(self, line: str) -> None:
        out = self._out or sys.stderr
        try:
            out.write(line + "\n")
            out.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not stop the batch
            pass


class RichProgress:
    """A live bar on the terminal: done/total, items per second, ETA, errors so far."""

    def __init__(self, label: str, total: int, title: str | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        class RateColumn(ProgressColumn):
            def render(self, task: Task) -> Text:
                from rich.text import Text

                speed = task.finished_speed or task.speed
                return Text("-- items/s" if speed is None else f"{speed:.1f} items/s")

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            RateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[errors]} errors"),
            console=Console(stderr=True, highlight=False),
        )
        self._label = label
        self._title = title
        self._total = total
        self._errors = 0
        self._lock = threading.Lock()
        self._task: Any = None

    def start(self) -> None:
        from rich.markup import escape

        if self._title:
            # The bar keeps to the short label; the full title (with the id to look the
            # batch up by) is printed once above it.
            self._progress.console.print(escape(self._title))
        self._task = self._progress.add_task(escape(self._label), total=self._total, errors=0)
        self._progress.start()

    def advance(self, failed: bool) -> None:
        with self._lock:
            self._errors += failed
            self._progress.update(self._task, advance=1, errors=self._errors)

    def close(self) -> None:
        self._progress.stop()


def make_reporter(
    progress: bool | None, label: str, total: int, *, short_label: str | None = None
) -> ProgressReporter:
    """``None``: a bar when stderr is a terminal, else log lines; ``False``: nothing;
    ``True``: a bar even when stderr is not a terminal (rich then prints plain updates).
    A bar shows ``short_label`` and prints ``label`` once above itself."""
    if progress is False:
        return NoProgress()
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    if progress or tty:
        return RichProgress(short_label or label, total, title=f"jobtrace: {label}")
    return LogProgress(label, total)
