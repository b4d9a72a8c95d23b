import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobtrace import model


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_codec_round_trips_every_float(value: float) -> None:
    decoded = model.decode_float(model.encode_float(value))
    if math.isnan(value):
        assert math.isnan(decoded)
    else:
        assert decoded == value


@pytest.mark.parametrize(
    ("value", "text"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")]
)
def test_special_values_travel_as_dioptra_strings(value: float, text: str) -> None:
    assert model.encode_float(value) == text
    assert model.split_float(value) == (None, text)


@pytest.mark.parametrize("bad", ["NaNa", "", True, None, [1.0]])
def test_decode_rejects_non_numbers(bad: object) -> None:
    with pytest.raises(model.RecordError):
        model.decode_float(bad)  # type: ignore[arg-type]


def test_record_dict_round_trip_keeps_specials() -> None:
    rec = (model.METRIC, "job", "loss", 3, math.inf, 12.5)
    data = model.to_dict(rec)
    assert data == {
        "kind": "metric",
        "job_id": "job",
        "name": "loss",
        "step": 3,
        "value": "inf",
        "timestamp": 12.5,
    }
    assert model.from_dict(data) == rec


def test_from_dict_rejects_unknown_kinds_and_fields() -> None:
    with pytest.raises(model.RecordError, match="unknown record kind"):
        model.from_dict({"kind": "nope"})
    with pytest.raises(model.RecordError, match="bogus"):
        model.from_dict({"kind": "metric", "bogus": 1})


def test_time_ordered_ids_increase_within_one_millisecond() -> None:
    from jobtrace import _ids

    ids = [_ids.time_ordered_id() for _ in range(10_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(len(i) == 26 for i in ids)


def test_local_unique_ids_differ_across_a_fork() -> None:
    import os

    from jobtrace import _ids

    read, write = os.pipe()
    before = _ids.local_unique_id()
    pid = os.fork()
    if pid == 0:
        os.write(write, _ids.local_unique_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    parent = _ids.local_unique_id()
    assert len({before, child, parent}) == 3 and parent > before
    assert child[:16] != parent[:16]


def test_the_positional_codec_round_trips_special_floats_and_span_ids() -> None:
    metric = ("metric", "j", "loss", 3, math.inf, 1.5)
    span = ("span", 1, 2, None, "s", 10, 5, {"a": 1}, None, None, None, "h", 1, "t", "svc")
    assert model.from_list(orjson.loads(orjson.dumps(model.to_list(metric)))) == metric
    decoded = model.from_list(orjson.loads(orjson.dumps(model.to_list(span))))
    assert decoded[1:3] == (f"{1:032x}", f"{2:016x}")
    nan = model.from_list(["metric", "j", "loss", 0, "nan", 1.0])[4]
    assert math.isnan(nan)


def test_the_positional_codec_refuses_a_wrong_field_count() -> None:
    with pytest.raises(model.RecordError, match="5 fields"):
        model.from_list(["metric", "j", "loss", 0])


@pytest.mark.parametrize("missing", [1, 2], ids=["before-traceback", "before-records_dropped"])
def test_a_job_record_from_before_its_last_fields_existed_still_decodes(missing: int) -> None:
    from jobtrace.model import FIELDS, JOB, RecordError, from_list

    old = [JOB, *range(len(FIELDS[JOB]) - missing)]
    decoded = from_list(old)
    assert len(decoded) == len(FIELDS[JOB]) + 1
    assert decoded[-missing:] == (None,) * missing
    with pytest.raises(RecordError):
        from_list([JOB, *range(len(FIELDS[JOB]) - 3)])


@pytest.mark.parametrize("compiled", [True, False])
def test_hex_ids_formats_ints_and_keeps_everything_else(
    compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not compiled:
        monkeypatch.setattr(model, "_speedups", None)
    elif model._speedups is None:
        pytest.skip("the compiled extension is not built")
    shared = 2**100 + 7
    column = [shared, shared, 0, 2**128 - 1, 2**130, -5, None, "ab" * 8, True, 1.5, shared]
    column += list(range(40))
    for fmt in ("032x", "016x"):
        assert model.hex_ids(tuple(column), fmt) == [
            format(v, fmt) if type(v) is int else v for v in column
        ]


def test_to_lists_is_to_list_of_each_record_in_order() -> None:
    records = [
        ("metric", "j", "loss", 1, math.nan, 1.0),
        ("span", 2**127, 3, None, "s", 10, 5, {"a": 1}, None, None, None, "h", 1, "t", None),
        ("item", "i", "j", "f", 1.0, 0.5, 1, 1, 1, "success", None, None, None, None),
        (
            "span",
            "a" * 32,
            "b" * 16,
            "c" * 16,
            "s",
            1,
            1,
            None,
            None,
            None,
            None,
            "h",
            1,
            "t",
            "svc",
        ),
        ("series", "s", None, "n", "gauge", None, "{}", -math.inf, None, 1.0),
    ]
    assert model.to_lists(records) == [model.to_list(r) for r in records]
