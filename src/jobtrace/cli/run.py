"""``jobtrace run``: run a script or module in this process as a recorded job.

The target runs exactly as ``python script.py args…`` (or ``python -m module args…``)
would run it: ``sys.argv``, ``__main__``, ``sys.path[0]``, the exit status, and an uncaught
exception's traceback (without jobtrace's own frames) all match.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import runpy
import signal
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

import click

from jobtrace.cli._common import fail, record_store_option
from jobtrace.jobs import exit_status

# runpy's frames are named "<frozen runpy>" when the module is frozen (CPython ≥ 3.11).
_OWN_FILES = {__file__, str(Path(__file__).resolve()), runpy.__file__, "<frozen runpy>"}


def _pairs(values: tuple[str, ...], what: str, parse_json: bool) -> dict[str, Any]:
    import orjson

    out: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--{what} expects KEY=VALUE, got {item!r}", 2)
        parsed: Any = value
        if parse_json:
            try:
                parsed = orjson.loads(value)
            except orjson.JSONDecodeError:
                parsed = value
        out[key] = parsed
    return out


def _trim(tb: TracebackType | None) -> TracebackType | None:
    """Drop the leading frames that belong to jobtrace and runpy, as `python` shows none."""
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    return tb


def _execute(
    module: str | None, script: str | None, args: list[str]
) -> tuple[int, BaseException | None]:
    """Run the target; return (exit status, the exception that ended it, if any)."""
    try:
        if module is not None:
            sys.argv = [module, *args]  # runpy replaces argv[0] with the module's file
            sys.path[0] = str(Path.cwd())  # as `python -m` does
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        else:
            assert script is not None
            sys.argv = [script, *args]
            # `python script.py` puts the script's directory first, in place of its own.
            sys.path[0] = str(Path(script).resolve().parent)
            runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)  # what Python does with sys.exit("message")
        return exit_status(exc.code), exc
    except BaseException as exc:  # the user's uncaught exception, reported like Python does
        tb = _trim(exc.__traceback__)
        if tb is None and isinstance(exc, ImportError):
            # runpy itself found no such module: one line, as `python -m nosuch` prints.
            print(f"jobtrace: error: {exc}", file=sys.stderr)
            return 1, exc
        exc.__traceback__ = tb
        try:
            sys.excepthook(type(exc), exc, tb)
        except Exception:
            import traceback

            traceback.print_exception(type(exc), exc, tb)
        return (130 if isinstance(exc, KeyboardInterrupt) else 1), exc
    return 0, None


class _FallbackHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Prints jobtrace's lines (the summary, warnings) on stderr unless the program has set
    up logging itself, in which case its root handlers show them and we stay quiet."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            self.stream = sys.stderr  # the program may have replaced sys.stderr
            super().emit(record)


class _RunCommand(click.Command):
    """Everything after ``-m MODULE``, like everything after SCRIPT, belongs to the target,
    options included (``jobtrace run -m json.tool -h`` shows json.tool's help), as with
    ``python -m``. Click stops at the first positional argument by itself
    (``allow_interspersed_args=False``); for ``-m`` an ``--`` is put after its value."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = self._module_end(args)
        if end is not None:
            args = [*args[:end], "--", *args[end:]]
        return super().parse_args(ctx, args)

    def _module_end(self, args: list[str]) -> int | None:
        """The index just past ``-m MODULE`` among jobtrace's own options, or None."""
        takes_value = {
            name
            for param in self.params
            if isinstance(param, click.Option) and not param.is_flag and not param.count
            for name in param.opts
        }
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--" or not arg.startswith("-") or arg == "-":
                return None  # the script (or an explicit end of options) comes first
            if arg == "-m":
                return i + 2 if i + 1 < len(args) else None
            if arg.startswith("-m") and not arg.startswith("--"):
                return i + 1  # -mMODULE
            if arg in takes_value:
                i += 2
                continue
            i += 1  # a flag, --opt=value, or -xVALUE
        return None


@click.command(
    cls=_RunCommand,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    short_help="Run a Python script or module as a recorded job.",
)
@click.option("-m", "module", metavar="MODULE", help="Run a library module, like `python -m`.")
@click.option(
    "--job-id", metavar="ID", help="Job id [default: $JOBTRACE_JOB_ID, else a new time-ordered id]."
)
@click.option("--name", metavar="NAME", help="Job name [default: the script's or module's name].")
@click.option(
    "--experiment",
    "-e",
    metavar="NAME",
    envvar="JOBTRACE_EXPERIMENT",
    help="Experiment the job belongs to.",
)
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="A tag (repeatable).")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter; JSON values are parsed (repeatable).",
)
@click.option(
    "--memory",
    type=click.Choice(["approximate", "exact", "off"]),
    envvar="JOBTRACE_MEMORY",
    help="Peak-memory profile: approximate (sampled, the default), exact (memray) or off.",
)
@click.option("--no-report", is_flag=True, help="Do not write a report directory.")
@click.option("--no-profile", is_flag=True, help="Do not sample where the job's time goes.")
@click.option(
    "--sample-hz",
    type=click.FloatRange(0, 1000, min_open=True),
    metavar="N",
    help="Profile samples per second [default: $JOBTRACE_SAMPLE_HZ, else 100].",
)
@click.option("--quiet", "-q", is_flag=True, help="Do not print the summary line at the end.")
@click.option(
    "--export",
    "export_url",
    metavar="URL",
    help="Also send the job's spans and metrics to URL, e.g. otlp+http://collector:4318 "
    "[default: $JOBTRACE_EXPORT].",
)
@record_store_option
@click.argument("target", nargs=-1, type=click.UNPROCESSED, metavar="[SCRIPT] [ARGS]...")
def run(
    *,
    module: str | None,
    job_id: str | None,
    name: str | None,
    experiment: str | None,
    tags: tuple[str, ...],
    params: tuple[str, ...],
    memory: str | None,
    no_report: bool,
    no_profile: bool,
    sample_hz: float | None,
    quiet: bool,
    export_url: str | None,
    store_url: str | None,
    target: tuple[str, ...],
) -> None:
    """Run SCRIPT (or -m MODULE) with ARGS as a recorded job.

    The job's status, duration, peak memory, CPU time and exit code go to the store
    with a profile of where its time went (wall and CPU time by stack, in every thread
    and multiprocessing child, and a timeline of RSS and CPU use), a report directory is
    written, and a summary line is printed at the end. The exit status is the script's
    own.

    \b
    Examples:
        jobtrace run train.py --epochs 3
        jobtrace run --experiment nightly --tag team=data -m mypkg.etl 2026-11-23
    """
    from jobtrace import _config
    from jobtrace.errors import JobtraceError
    from jobtrace.jobs import Job, _current, outcome

    args = list(target)
    script: str | None = None
    if module is None:
        if not args:
            fail("give a script to run, or -m MODULE (see jobtrace run --help)", 2)
        script = args.pop(0)
        path = Path(script)
        if not path.is_file() or not os.access(path, os.R_OK):
            reason = "No such file or directory" if not path.exists() else "not a readable file"
            fail(f"can't open file {str(path.absolute())!r}: {reason}", 2)
    try:
        # Also exports the store URL, so child processes record into the same store.
        settings = _config.configure(url=store_url, experiment=experiment, export=export_url)
        job = Job(
            name or module or Path(script or "job").stem,
            experiment=settings.experiment,
            job_id=job_id,
            tags=_pairs(tags, "tag", parse_json=False),
            params=_pairs(params, "param", parse_json=True),
            argv=[module or script or "", *args] if module is None else ["-m", module, *args],
            report=not no_report,
            memory=memory,
            profile=False if no_profile else None,
            sample_hz=sample_hz,
        )
        # Processes the script starts (subprocesses, spawned workers) record their spans
        # and metrics as part of this job when they use jobtrace without a job of their
        # own: the job exports its id, trace and store to them (see Job.start).
        job.start()
    except JobtraceError as exc:
        fail(str(exc), 2)
        return
    jobtrace_log = logging.getLogger("jobtrace")
    if jobtrace_log.level == logging.NOTSET:
        # Let the summary through even when the program leaves the root logger at WARNING.
        jobtrace_log.setLevel(logging.INFO)
    if not quiet:
        jobtrace_log.addHandler(_FallbackHandler())

    # Registered before the script runs, so it runs after the script's own exit handlers.
    atexit.register(_die_by_sigint_if_interrupted)
    token = _current.set(job)
    # The whole process is the job's: threads and thread pools the script starts carry the
    # span (and job) that started them, as their spans' parents.
    from jobtrace.tracing.threads import propagate_threads

    propagate_threads()
    # What jobtrace and its imports have made lives as long as the process: taken out of
    # the collector's reach, its full passes over the script's objects cost what they
    # would under plain `python` (a script allocating many containers ran ~6 % slower).
    gc.freeze()
    code, ended_by = _execute(module, script, args)
    with contextlib.suppress(ValueError):  # the script may have left another context
        _current.reset(token)
    if not isinstance(ended_by, KeyboardInterrupt):
        _join_non_daemon_threads()  # Python waits for them before it exits; so does the job

    status, _, error = outcome(ended_by, job._signal)
    job.finish(status, exit_code=code, error=error)

    from jobtrace.recorder import get_recorder

    get_recorder().flush()  # bounded by JOBTRACE_FLUSH_TIMEOUT
    sys.stdout.flush()
    if isinstance(ended_by, KeyboardInterrupt):
        _interrupted.set()
    sys.exit(code)


_interrupted = threading.Event()


def _die_by_sigint_if_interrupted() -> None:
    """Python dies by SIGINT after an uncaught KeyboardInterrupt, once its exit handlers
    have run; so do we."""
    if _interrupted.is_set():
        from jobtrace.recorder import get_recorder

        get_recorder().flush()  # bounded by JOBTRACE_FLUSH_TIMEOUT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)


def _join_non_daemon_threads() -> None:
    main = threading.main_thread()
    while True:
        # Threads may start others while we wait, so look again until none is left.
        waiting = [
            t for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()
        ]
        if not waiting:
            return
        for thread in waiting:
            thread.join()
