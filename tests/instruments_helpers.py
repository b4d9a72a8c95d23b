"""Shared fixture for the instrument tests: the process-wide profiler and registry reset."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobtrace.instruments import REGISTRY, drops, profiler
from jobtrace.instruments.registry import default_publisher


def reset_instruments() -> None:
    """An unconfigured profiler, an empty default registry, no publisher ticking on the
    recorder and no counted drops (conftest calls this after every test that loaded them)."""
    profiler.clear()
    REGISTRY.clear()
    default_publisher().uninstall()
    drops.reset()


@pytest.fixture(autouse=True)
def clean_instruments() -> Iterator[None]:
    """Each test starts with instruments reset, and leaves them so."""
    yield
    reset_instruments()
