"""The ``jobtrace`` command (also ``python -m jobtrace``)."""

from __future__ import annotations

import click

from jobtrace import __version__
from jobtrace.cli.batch import batch
from jobtrace.cli.db import db
from jobtrace.cli.doctor import doctor
from jobtrace.cli.experiments import experiments
from jobtrace.cli.jobs import jobs
from jobtrace.cli.metrics import metrics
from jobtrace.cli.profile import profile
from jobtrace.cli.report import report
from jobtrace.cli.run import run
from jobtrace.cli.serve import serve
from jobtrace.cli.spool import spool
from jobtrace.cli.token import token
from jobtrace.cli.trace import trace

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", "-V", prog_name="jobtrace")
def cli() -> None:
    """jobtrace: record, profile and trace Python jobs.

    Run a script as a recorded job, then look at what it did:

    \b
        jobtrace run examples/wordfreq.py
        jobtrace jobs list
        jobtrace jobs show <job id>
        jobtrace metrics show <job id> [metric name]
        jobtrace profile <job id> [--kind wall|cpu|memory] [--format table|folded|…]
        jobtrace report rebuild <job id>    # the report directory again, from the store
        jobtrace trace list --job <job id>
        jobtrace batch stats <batch id>
        jobtrace serve                      # the REST API, docs at /docs
        jobtrace spool status               # records waiting for an unreachable store
        jobtrace token create NAME          # an API token for the server
        jobtrace doctor                     # is the set-up working? versions, store, spool

    Records go to ./.jobtrace/jobtrace.db unless --store or JOBTRACE_URL says otherwise.
    """


cli.add_command(run)
cli.add_command(jobs)
cli.add_command(metrics)
cli.add_command(experiments)
cli.add_command(trace)
cli.add_command(profile)
cli.add_command(report)
cli.add_command(batch)
cli.add_command(db)
cli.add_command(serve)
cli.add_command(spool)
cli.add_command(token)
cli.add_command(doctor)


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="jobtrace")
