"""The examples of the compatibility pages and modules run exactly as printed."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

import jobtrace.compat.phanos
import jobtrace.instruments._prometheus
from tests.instruments_helpers import clean_instruments

__all__ = ["clean_instruments"]

DOCS = Path(__file__).resolve().parent.parent / "docs" / "compat"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("page", ["phanos.md", "prometheus_client.md"])
def test_every_python_block_of_the_page_runs(page: str) -> None:
    blocks = BLOCK.findall((DOCS / page).read_text())
    assert blocks, f"{page} has no python example"
    for block in blocks:
        exec(compile(block, f"{page}", "exec"), {"__name__": f"docs_{page[:-3]}"})


@pytest.mark.parametrize("module", [jobtrace.compat.phanos, jobtrace.instruments._prometheus])
def test_module_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)  # type: ignore[arg-type]
    assert result.attempted > 0 and result.failed == 0
