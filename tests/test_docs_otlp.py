"""docs/deployment-otlp.md: its Python example and its `jobtrace run` line run as printed
against an OTLP receiver on the port they name, and its collector configs are valid YAML
that listen for OTLP/HTTP on that port."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from jobtrace import _config
from tests.cli_helpers import jobtrace_cli
from tests.otlp_receiver import OTLPReceiver

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "deployment-otlp.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", PAGE.read_text(), re.DOTALL)


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    receiver = OTLPReceiver(port=4318)  # the port the page's examples use
    yield receiver
    receiver.stop()
    _config.configure(url="memory://default", export="", install_signal_handlers=False)


def test_the_python_example_exports_its_trace_and_metric(receiver: OTLPReceiver) -> None:
    (block,) = blocks("python")
    exec(compile(block, str(PAGE), "exec"), {"__name__": "docs_otlp"})
    ((resource, span),) = receiver.spans()
    assert span.name == "load"
    assert resource["service.name"] == "nightly-etl"
    assert resource["jobtrace.experiment"] == "etl"
    assert {kv.key for kv in span.attributes} >= {"source.table"}
    assert [(name, p.as_double) for _, name, p in receiver.points()] == [("rows", 1250.0)]


def test_the_jaeger_run_line_exports_the_example_pipeline(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    (line,) = [
        line for bash in blocks("bash") for line in bash.splitlines() if "jobtrace run" in line
        and "127.0.0.1:4318" in line
    ]  # fmt: skip
    assignment, _, command = line.partition(" jobtrace ")
    name, _, value = assignment.partition("=")
    assert name == "JOBTRACE_EXPORT"
    args = shlex.split(command)
    args[-1] = str(ROOT / args[-1])
    result = jobtrace_cli(*args, cwd=tmp_path, **{name: value})
    assert result.returncode == 0, result.stderr
    services = {resource["service.name"] for resource, _ in receiver.spans()}
    assert len(receiver.spans()) > 1
    assert services == {"traced_pipeline"}  # the job's name, in its worker processes too


@pytest.mark.parametrize("index", [0, 1])
def test_the_collector_configs_listen_for_otlp_http_on_4318(index: int) -> None:
    config = yaml.safe_load(blocks("yaml")[index])
    receivers = config.get("distributor", config)["receivers"]
    assert receivers["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
