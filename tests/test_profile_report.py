"""The profile renderers: top functions, JSON, speedscope, folded text and report.html."""

from __future__ import annotations

import doctest
import re

import orjson
from hypothesis import given
from hypothesis import strategies as st

from jobtrace import model
from jobtrace.profiles.folded import JobProfile, load_job_profile
from jobtrace.report import profile_data, profile_html
from jobtrace.report.profile_data import (
    flame_data,
    profile_from_json,
    profile_to_json,
    speedscope,
    top_functions,
)
from jobtrace.report.profile_html import render_profile_html
from tests.profile_helpers import (
    LOAD,
    MAIN,
    PROCESS,
    READ,
    SCORE,
    TRANSFORM,
    job_record,
    profile_records,
)


def sample_profile() -> JobProfile:
    return load_job_profile([(r[3], r[4], r[5], r[6]) for r in profile_records("j1")])


def sample_job() -> dict[str, object]:
    return dict(zip(model.FIELDS[model.JOB], job_record("j1")[1:], strict=True))


def test_the_docstring_examples_run_as_printed() -> None:
    for module in (profile_data, profile_html):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


def test_top_functions_count_self_at_the_leaf_and_total_once_per_stack() -> None:
    jp = JobProfile()
    # recursion: f calls f; its total must not count the stack twice
    jp.wall.add(("process 1", "f (a.py:1)", "f (a.py:1)", "g (a.py:9)"), 40)
    jp.wall.add(("process 1", "f (a.py:1)"), 60)
    rows = {r.frame: r for r in top_functions(jp.wall)}
    assert rows["f (a.py:1)"].self_weight == 60 and rows["f (a.py:1)"].total == 100
    assert rows["g (a.py:9)"].self_weight == 40 and rows["g (a.py:9)"].total == 40
    assert "process 1" not in rows
    assert [r.frame for r in top_functions(jp.wall, 1)] == ["f (a.py:1)"]


def test_the_sample_profile_ranks_the_heaviest_function_first() -> None:
    rows = top_functions(sample_profile().wall)
    assert rows[0].frame == SCORE and rows[0].self_weight == 3_000_000
    by_frame = {r.frame: r for r in rows}
    assert by_frame[MAIN].total == sample_profile().wall.total


# No lone surrogates: profile records are JSON, so a frame never holds one.
frames = st.text(
    st.characters(blacklist_characters=";\n", blacklist_categories=("Cs",)), min_size=1, max_size=12
)


@given(
    st.dictionaries(
        st.lists(frames, min_size=1, max_size=5).map(tuple),
        st.integers(min_value=1, max_value=2**40),
        max_size=20,
    )
)
def test_a_profile_survives_its_json_form(stacks: dict[tuple[str, ...], int]) -> None:
    jp = JobProfile()
    for stack, weight in stacks.items():
        jp.wall.add(stack, weight)
        jp.memory.add(stack, weight // 2)
    jp.timeline["p"] = [(1.0, 10, 50.0)]
    jp.peak_kb = {"p": 12}
    jp.memory_mode = "exact"
    text = orjson.dumps(profile_to_json(jp))
    assert profile_from_json(orjson.loads(text)) == jp


def test_speedscope_files_hold_every_stack_with_its_weight_and_frame_locations() -> None:
    jp = sample_profile()
    doc = speedscope(jp, "wall", "nightly-etl")
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    (prof,) = doc["profiles"]
    assert prof["type"] == "sampled" and prof["unit"] == "microseconds"
    assert sum(prof["weights"]) == prof["endValue"] == jp.wall.total
    frames_ = doc["shared"]["frames"]
    rebuilt = {
        tuple(frames_[i]["name"] for i in sample): w
        for sample, w in zip(prof["samples"], prof["weights"], strict=True)
    }
    assert rebuilt[(PROCESS, "<module>", "load_rows", "read")] == 1_500_000
    assert {"name": "read", "file": "io.py", "line": 5} in frames_
    memory = speedscope(jp, "memory", "x")["profiles"][0]
    assert memory["unit"] == "bytes" and memory["endValue"] == jp.memory.total


def test_folded_text_is_one_stack_a_line_root_first_with_an_integer_weight() -> None:
    lines = sample_profile().wall.folded().splitlines()
    assert f"{PROCESS};{MAIN};{LOAD};{READ} 1500000" in lines
    assert all(re.fullmatch(r"[^;]+(;[^;]+)* \d+", line) for line in lines)


def nodes(flat: list[int], stride: int) -> list[list[int]]:
    return [flat[i : i + stride] for i in range(0, len(flat), stride)]


def test_flame_trees_carry_the_cpu_share_of_each_wall_frame() -> None:
    data = flame_data(sample_profile())
    names = data["frames"]
    wall = nodes(data["wall"], 4)
    assert wall[0] == [names.index("all"), sample_profile().wall.total, 5_950_000, -1]
    by_name = {names[n[0]]: (i, n) for i, n in enumerate(wall)}
    _, load = by_name[LOAD]
    assert load[1:3] == [2_500_000, 1_050_000]
    main_index, _ = by_name[MAIN]
    children = [names[n[0]] for n in wall if n[3] == main_index]
    assert children == [TRANSFORM, LOAD]  # heaviest first
    memory = nodes(data["memory"], 3)
    assert names[memory[2][0]] == MAIN and memory[2][2] == 1


def test_flame_trees_of_very_deep_stacks_stay_flat() -> None:
    jp = JobProfile()
    deep = tuple(f"recurse (r.py:{i % 3})" for i in range(5000))
    jp.wall.add(("process 1", *deep), 10)
    page = render_profile_html({"id": "deep"}, jp)  # neither recursion nor nesting limits
    assert len(nodes(flame_data(jp)["wall"], 4)) == 5002
    assert "recurse (r.py:2)" in page


def test_report_html_is_one_offline_file_with_a_content_security_policy() -> None:
    page = render_profile_html(sample_job(), sample_profile())
    assert page.startswith("<!DOCTYPE html>")
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # The only URL is the SVG namespace name, which is never fetched.
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) == {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert len(page.encode()) < 100_000


def test_report_html_embeds_user_strings_as_escaped_json_only() -> None:
    jp = sample_profile()
    evil = "</script><script>alert(1)</script>"
    jp.wall.add((PROCESS, evil), 5)
    job = {**sample_job(), "name": evil, "error_message": "<img src=x onerror=alert(1)>"}
    page = render_profile_html(job, jp)
    assert evil not in page and "<img src=x" not in page
    assert page.count("<script") == 2  # the data element and the page's own script
    data = page.split('<script type="application/json" id="jobtrace-data">', 1)[1]
    embedded = orjson.loads(data.split("</script>", 1)[0])
    assert evil in embedded["profile"]["frames"] and embedded["job"]["name"] == evil


def test_report_html_of_a_long_jobs_large_profile_stays_well_under_a_megabyte() -> None:
    jp = JobProfile()
    # 4,000 distinct stacks over 200 functions, 8 to 20 frames deep: a busy hour-long job
    for i in range(4000):
        depth = 8 + i % 13
        stack = (
            "process 1 (main)",
            *(f"fn{(i * 7 + d * 13) % 200} (mod{d}.py:{d})" for d in range(depth)),
        )
        jp.wall.add(stack, 1000 + i)
        jp.cpu.add(stack, 500 + i)
        if i % 4 == 0:
            jp.memory.add(stack, 4096 * i)
    jp.timeline["process 1 (main)"] = [(1e9 + t, 100_000 + t, 50.0) for t in range(3600)]
    page = render_profile_html(sample_job(), jp)
    assert len(page.encode()) < 1_000_000
