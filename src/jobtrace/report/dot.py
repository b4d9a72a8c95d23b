"""A trace's call tree as a Graphviz DOT graph: one box per span labelled with its name and
inclusive time, error spans in red, and a dashed box for each parent recorded elsewhere.

Render it with ``dot -Tsvg trace.dot -o trace.svg``. Node ids are generated (``s0``,
``s1``, …), so user strings appear only inside escaped, quoted labels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jobtrace.report.traces import format_ms

__all__ = ["dot_string", "render_trace_dot"]

# C0 controls and DEL other than newline and tab: Graphviz rejects or mangles them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_ERROR_STYLE = 'color="#cf222e", fillcolor="#ffebe9", fontcolor="#82071e", penwidth=2'


def dot_string(text: object) -> str:
    """``text`` as a quoted DOT string: backslashes and quotes escaped, line breaks as
    Graphviz's centred-line escape ``\\n``, other control characters dropped."""
    value = str(text).replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    value = _CONTROL.sub("", value)
    # Backslashes first, so the escapes added next are not doubled; a user's own "\l" or
    # "\N" then stays literal text instead of a Graphviz escape.
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{value}"'


def render_trace_dot(report: Mapping[str, Any]) -> str:
    """The call tree of a :func:`jobtrace.report.traces.trace_json` report in DOT.

    >>> from jobtrace.report.traces import trace_json
    >>> text = render_trace_dot(trace_json(store.get_trace("0190f3")))   # doctest: +SKIP
    """
    spans = report.get("spans") or []
    title = f"{report.get('name', 'trace')}\n{report.get('trace_id', '')}"
    if report.get("duration_ms") is not None:
        title += f" · {format_ms(report['duration_ms'])}"
    lines = [
        "digraph trace {",
        f"  graph [rankdir=LR, labelloc=t, fontname=Helvetica, label={dot_string(title)}];",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef3f8", color="#4c78a8",'
        " fontname=Helvetica, fontsize=11];",
        '  edge [color="#8c959f", arrowsize=0.6];',
    ]
    ids: dict[str, str] = {}
    for index, span in enumerate(spans):
        ids.setdefault(str(span["span_id"]), f"s{index}")
    missing: dict[str, str] = {}
    edges: list[str] = []
    for index, span in enumerate(spans):
        node = f"s{index}"
        label = f"{span['name']}\n{format_ms(span['duration_ms'])}"
        attributes = f"label={dot_string(label)}"
        if span.get("error_type"):
            label += f"\n{span['error_type']}"
            attributes = f"label={dot_string(label)}, {_ERROR_STYLE}"
        lines.append(f"  {node} [{attributes}];")
        parent_id = span.get("parent_id")
        if parent_id is None:
            continue
        if str(parent_id) in ids:
            # A root whose parent is in the trace was cut out of a parent cycle: no edge.
            if span.get("depth", 1) > 0:
                edges.append(f"  {ids[str(parent_id)]} -> {node};")
            continue
        # A root with a parent id: its parent was recorded by another process or service.
        if parent_id not in missing:
            missing[parent_id] = f"m{len(missing)}"
            placeholder = f"{parent_id}\n(not in this trace)"
            lines.append(
                f"  {missing[parent_id]} [label={dot_string(placeholder)}, style=dashed,"
                ' color="#8c959f", fontcolor="#656d76"];'
            )
        edges.append(f"  {missing[parent_id]} -> {node} [style=dashed];")
    lines.extend(edges)
    lines.append("}")
    return "\n".join(lines) + "\n"
