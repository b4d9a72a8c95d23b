"""A job profile in the shapes readers want: JSON for the REST API, the top-functions
table, speedscope's file format, and the frame trees the HTML report draws.

Everything here is pure data: it takes a :class:`~jobtrace.profiles.folded.JobProfile`
and returns plain values, so the CLI, the server and the report directory share it.

>>> from jobtrace.profiles.folded import JobProfile
>>> jp = JobProfile()
>>> jp.wall.add(("process 1 (main)", "main (a.py:1)", "work (a.py:5)"), 700)
>>> jp.wall.add(("process 1 (main)", "main (a.py:1)"), 300)
>>> [(f.frame, f.self_weight, f.total) for f in top_functions(jp.wall)][:2]
[('work (a.py:5)', 700, 700), ('main (a.py:1)', 300, 1000)]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from jobtrace import __version__
from jobtrace.profiles.folded import KINDS, JobProfile, Profile

__all__ = [
    "FunctionCost",
    "flame_data",
    "profile_from_json",
    "profile_to_json",
    "speedscope",
    "top_functions",
]

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*):(?P<line>\d+)\)$")
_SPEEDSCOPE_UNITS = {"us": "microseconds", "bytes": "bytes"}


class FunctionCost(NamedTuple):
    """One frame's weight: ``self_weight`` where it is the leaf, ``total`` where it is on
    the stack at all (counted once per stack, so recursion is not counted twice)."""

    frame: str
    self_weight: int
    total: int


def top_functions(profile: Profile, limit: int | None = None) -> list[FunctionCost]:
    """The frames of ``profile`` by self weight (then total), heaviest first.

    Process frames (the root of every stack) are left out: they would always top the
    total column and say nothing about the code.
    """
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    for stack, weight in profile.stacks.items():
        frames = stack[1:] if len(stack) > 1 else stack
        own[frames[-1]] = own.get(frames[-1], 0) + weight
        for frame in set(frames):
            total[frame] = total.get(frame, 0) + weight
    rows = [FunctionCost(f, own.get(f, 0), t) for f, t in total.items()]
    rows.sort(key=lambda r: (-r.self_weight, -r.total, r.frame))
    return rows if limit is None else rows[:limit]


# -- JSON (REST API, report bundle) ------------------------------------------------------------


def _profile_json(profile: Profile) -> dict[str, Any]:
    return {
        "unit": profile.unit,
        "total": profile.total,
        "stacks": [[";".join(s), w] for s, w in sorted(profile.stacks.items())],
    }


def profile_to_json(jp: JobProfile) -> dict[str, Any]:
    """The profile as JSON values: per kind ``{"unit", "total", "stacks": [[folded, w]]}``,
    plus ``timeline`` (process → ``[[t, rss_kb, cpu_percent]]``), ``peakKb`` (process →
    KiB) and ``memoryMode``. :func:`profile_from_json` reads it back."""
    out: dict[str, Any] = {kind: _profile_json(jp.get(kind)) for kind in KINDS}
    out["timeline"] = {p: [list(point) for point in pts] for p, pts in jp.timeline.items()}
    out["peakKb"] = dict(jp.peak_kb)
    out["memoryMode"] = jp.memory_mode
    return out


def profile_from_json(doc: Mapping[str, Any]) -> JobProfile:
    """The :class:`JobProfile` that :func:`profile_to_json` wrote (e.g. read from a server)."""
    jp = JobProfile()
    for kind in KINDS:
        target = jp.get(kind)
        for text, weight in (doc.get(kind) or {}).get("stacks", []):
            target.add(tuple(str(text).split(";")), int(weight))
    for process, points in (doc.get("timeline") or {}).items():
        jp.timeline[str(process)] = [(float(t), int(r), float(c)) for t, r, c in points]
    jp.peak_kb = {str(k): int(v) for k, v in (doc.get("peakKb") or {}).items()}
    jp.memory_mode = doc.get("memoryMode")
    return jp


# -- speedscope --------------------------------------------------------------------------------


def speedscope(jp: JobProfile, kind: str, name: str) -> dict[str, Any]:
    """A speedscope file (https://www.speedscope.app/file-format-schema.json) holding one
    ``sampled`` profile of ``kind``: each distinct stack once, weighted."""
    profile = jp.get(kind)
    frames: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    samples: list[list[int]] = []
    weights: list[int] = []
    for stack, weight in sorted(profile.stacks.items()):
        sample = []
        for frame in stack:
            i = index.get(frame)
            if i is None:
                i = index[frame] = len(frames)
                match = _FRAME.match(frame)
                if match:
                    frames.append(
                        {
                            "name": match["name"],
                            "file": match["file"],
                            "line": int(match["line"]),
                        }
                    )
                else:
                    frames.append({"name": frame})
            sample.append(i)
        samples.append(sample)
        weights.append(weight)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [
            {
                "type": "sampled",
                "name": f"{name} ({kind})",
                "unit": _SPEEDSCOPE_UNITS[profile.unit],
                "startValue": 0,
                "endValue": profile.total,
                "samples": samples,
                "weights": weights,
            }
        ],
        "name": name,
        "activeProfileIndex": 0,
        "exporter": f"jobtrace {__version__}",
    }


# -- flame trees for the HTML report -------------------------------------------------------------


class _Node:
    __slots__ = ("children", "cpu", "frame", "value")

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.value = 0
        self.cpu = 0
        self.children: dict[int, _Node] = {}

    def encode(self, with_cpu: bool) -> list[int]:
        """The tree as one flat list, nodes in preorder, each ``frame, value, [cpu,]
        parent`` (the parent's position in node order, -1 for the root).

        Flat, not nested: a deep recursion in the profiled code would otherwise nest the
        JSON as deep as the stack, past what JSON encoders accept (and Python's recursion
        limit); this walk is iterative and the list is as compact as the data.
        """
        out: list[int] = []
        count = 0
        todo: list[tuple[_Node, int]] = [(self, -1)]
        while todo:
            node, parent = todo.pop()
            out.extend(
                (node.frame, node.value, node.cpu, parent)
                if with_cpu
                else (node.frame, node.value, parent)
            )
            # Heaviest child first (drawn leftmost); pushed in reverse, so popped in order.
            kids = sorted(node.children.values(), key=lambda n: -n.value)
            todo.extend((kid, count) for kid in reversed(kids))
            count += 1
        return out


class _Frames:
    """Frame text interned to small ints, so a frame repeated in many stacks is sent once."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, name: str) -> int:
        i = self._index.get(name)
        if i is None:
            i = self._index[name] = len(self.names)
            self.names.append(name)
        return i


def _tree(
    frames: _Frames, weights: Mapping[tuple[str, ...], int], cpu: Mapping[tuple[str, ...], int]
) -> _Node:
    root = _Node(frames("all"))
    for stack, weight in weights.items():
        extra = cpu.get(stack, 0)
        node = root
        node.value += weight
        node.cpu += extra
        for frame in stack:
            i = frames(frame)
            child = node.children.get(i)
            if child is None:
                child = node.children[i] = _Node(i)
            child.value += weight
            child.cpu += extra
            node = child
    return root


def flame_data(jp: JobProfile) -> dict[str, Any]:
    """The trees the HTML report draws: ``frames`` (interned frame text), and per kind the
    flat node list of :meth:`_Node.encode`: ``frame, value, parent`` per node, and for
    ``wall`` ``frame, value, cpu, parent`` (the CPU share of each frame's wall time)."""
    frames = _Frames()
    return {
        "wall": _tree(frames, jp.wall.stacks, jp.cpu.stacks).encode(True),
        "cpu": _tree(frames, jp.cpu.stacks, {}).encode(False),
        "memory": _tree(frames, jp.memory.stacks, {}).encode(False),
        "frames": frames.names,
    }
