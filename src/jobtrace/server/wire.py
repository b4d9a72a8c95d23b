"""The server's JSON responses, rendered by orjson; the codec of each resource is
:mod:`jobtrace.wire`'s (shared with the client), re-exported here for the routes."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from jobtrace.wire import (
    camel,
    experiment_out,
    float_out,
    job_metrics_out,
    job_out,
    parse_time,
    point_out,
    snake,
    span_out,
    special_value,
    trace_summary_out,
)

__all__ = [
    "JSONBody",
    "camel",
    "experiment_out",
    "float_out",
    "job_metrics_out",
    "job_out",
    "parse_time",
    "point_out",
    "snake",
    "span_out",
    "special_value",
    "trace_summary_out",
]

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class JSONBody(Response):
    """A JSON response rendered by orjson (several times faster than the json module)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS, default=repr)
