"""The package's exception hierarchy: one root, a few kinds users can catch."""

from __future__ import annotations

__all__ = ["ConfigurationError", "JobtraceError", "StoreError"]


class JobtraceError(Exception):
    """Root of every exception jobtrace raises on purpose."""


class ConfigurationError(JobtraceError, ValueError):
    """A setting is wrong: the message names the bad value and how to fix it."""


class StoreError(JobtraceError):
    """A store could not be opened, migrated, read or written."""
