"""docs/deployment.md: its commands and examples run as printed."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import cli_env

PAGE = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.DOTALL)


def section(title: str) -> list[tuple[str, str]]:
    """The (language, code) blocks of one ``## title`` section."""
    text = PAGE.read_text().split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return BLOCK.findall(text)


@pytest.mark.rabbitmq
def test_the_rabbitmq_section_runs_as_printed(rabbitmq_url: str, tmp_path: Path) -> None:
    import pika

    blocks = section("RabbitMQ and consumers")
    # The first block sets up a bare Debian host (apt-get, as root): not run here, where
    # the broker is up already. The rest runs verbatim against it.
    assert blocks[0][0] == "bash" and blocks[0][1].startswith("apt-get install")
    (language, job), (_, commands) = blocks[1:]
    assert language == "python"
    (tmp_path / "etl.py").write_text(job)
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", commands],
            check=False,
            cwd=tmp_path,
            env=cli_env(tmp_path / ".jobtrace"),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        channel = connection.channel()
        channel.queue_delete(queue="jobtrace.records")
        channel.queue_delete(queue="jobtrace.records.dead")
        connection.close()
    assert result.returncode == 0, result.stderr
    assert "0 duplicates, 0 dead-lettered, lag 0 messages" in result.stderr
    assert re.search(r"rows\s+9990\s+999", result.stdout), result.stdout
