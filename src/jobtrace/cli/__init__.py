"""The ``jobtrace`` command (also ``python -m jobtrace``).

Each subcommand lives in a module of its own, imported only when it is invoked (or when
``jobtrace --help`` lists them): ``jobtrace run`` is a start-up cost every recorded job
pays, and the readers' modules (tables with rich, the store's queries, the server) would
add to it for nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

from jobtrace import __version__

__all__ = ["cli", "main"]

#: Subcommand name -> "module:attribute" of its click command, imported on first use.
COMMANDS = {
    "batch": "jobtrace.cli.batch:batch",
    "consume": "jobtrace.cli.consume:consume",
    "db": "jobtrace.cli.db:db",
    "doctor": "jobtrace.cli.doctor:doctor",
    "experiments": "jobtrace.cli.experiments:experiments",
    "jobs": "jobtrace.cli.jobs:jobs",
    "metrics": "jobtrace.cli.metrics:metrics",
    "profile": "jobtrace.cli.profile:profile",
    "report": "jobtrace.cli.report:report",
    "run": "jobtrace.cli.run:run",
    "serve": "jobtrace.cli.serve:serve",
    "spool": "jobtrace.cli.spool:spool",
    "token": "jobtrace.cli.token:token",
    "trace": "jobtrace.cli.trace:trace",
}


class LazyGroup(click.Group):
    """A group whose subcommands are named up front and imported when first looked up.

    Commands added with :meth:`add_command` work as in any group; a lazy one is imported
    once, then kept as if it had been added.
    """

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in self.lazy:
            module_name, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            self.add_command(command, cmd_name)
        return command


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
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


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="jobtrace")
