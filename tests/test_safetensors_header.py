"""The safetensors header reader: every JSON spelling of a header reads as ``json`` and safetensors read it, each
malformed one is refused with its own message, and a header near the 100 MB limit parses within a few times its size.

The reader matches runs of entries spelled as safetensors writes them in bulk and every other spelling entry by
entry; the headers here mix both (a run needs an entry followed by a comma, so each has several entries).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from abswin_convert.errors import AbswinError
from abswin_convert.io.dtypes import RAW_DTYPES
from abswin_convert.io.safetensors_reader import MAX_METADATA_ENTRIES, read_header
from tests.big_headers import EXAMPLE, with_many_entries, write_safetensors_file
from tests.test_reliability import assert_one_line

# Spellings: as safetensors writes (compact), as json.dumps does by default, indented, and non-ASCII kept raw.
SPELLINGS = [
    {"separators": (",", ":")},
    {},
    {"indent": 2},
    {"ensure_ascii": False, "separators": (", ", " : ")},
]


def header_text(tensors: list[tuple[str, str, list[int]]], metadata: dict[str, str] | None, where: int,
                spelling: dict, shuffled: random.Random | None) -> tuple[str, int]:
    """JSON for ``tensors`` laid end to end (metadata at index ``where`` among the entries); the data size."""
    entries: list[tuple[str, object]] = []
    offset = 0
    for name, dtype, shape in tensors:
        end = offset + RAW_DTYPES[dtype].itemsize * int(np.prod(shape, dtype=np.int64))
        spec = [("dtype", dtype), ("shape", shape), ("data_offsets", [offset, end])]
        if shuffled is not None:
            shuffled.shuffle(spec)
        entries.append((name, dict(spec)))
        offset = end
    if metadata is not None:
        entries.insert(where, ("__metadata__", metadata))
    return json.dumps(dict(entries), **spelling), offset


names = st.text(min_size=1, max_size=12).filter(lambda name: name != "__metadata__")
tensor_lists = st.lists(
    st.tuples(names, st.sampled_from(sorted(RAW_DTYPES)), st.lists(st.integers(0, 5), max_size=4)),
    min_size=0, max_size=12, unique_by=lambda t: t[0],
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tensors=tensor_lists, metadata=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3),
       where=st.integers(0, 12), spelling=st.sampled_from(SPELLINGS), shuffle=st.none() | st.integers(0, 2**32))
def test_every_spelling_reads_as_json_and_safetensors_read_it(tmp_path, tensors, metadata, where, spelling, shuffle):
    text, data_size = header_text(tensors, metadata, where, spelling, None if shuffle is None else random.Random(shuffle))
    path = write_safetensors_file(tmp_path / "model.safetensors", text, data_size)
    data_start = path.stat().st_size - data_size

    entries, read_metadata = read_header(path)

    expected = {name: spec for name, spec in json.loads(text).items() if name != "__metadata__"}
    assert list(entries) == list(expected)  # header order
    for name, spec in expected.items():
        tensor = entries[name]
        assert (tensor.dtype, list(tensor.shape)) == (spec["dtype"], spec["shape"])
        assert [tensor.start - data_start, tensor.end - data_start] == spec["data_offsets"]
    assert read_metadata == (metadata or {})
    with safe_open(path, framework="numpy") as f:  # safetensors' own reader agrees
        assert {name: (f.get_slice(name).get_dtype(), f.get_slice(name).get_shape()) for name in f.keys()} == {
            name: (spec["dtype"], spec["shape"]) for name, spec in expected.items()}


def canonical(name: str, dtype: str, shape: list[int], begin: int, end: int) -> str:
    return f'"{name}":{{"dtype":"{dtype}","shape":{json.dumps(shape, separators=(",", ":"))},"data_offsets":[{begin},{end}]}}'


TAIL = [canonical(f"t{i}", "F32", [1], 4 * i, 4 * i + 4) for i in range(3)]  # three good entries, 12 bytes


def refused(tmp_path: Path, entries: list[str], data_size: int = 12, opening: str = "{", closing: str = "}") -> str:
    path = write_safetensors_file(tmp_path / "bad.safetensors", opening + ",".join(entries) + closing, data_size)
    with pytest.raises(AbswinError) as caught:
        read_header(path)
    assert "\n" not in str(caught.value)
    return str(caught.value)


@pytest.mark.parametrize(("entries", "message"), [
    # each first in a run of canonical entries (read as columns), and last (read alone)
    ([canonical("a", "F32", [1], 0, 4), *TAIL[1:], canonical("a", "F32", [1], 8, 12)], "names 'a' twice"),
    ([canonical("a", "F32", [1], 0, 4), canonical("a", "F32", [1], 4, 8), TAIL[2]], "names 'a' twice"),
    ([canonical("u", "U16", [2], 0, 4), *TAIL[1:]], "header entry 'u' is malformed or has an unknown dtype"),
    ([canonical("s", "F32", [2], 0, 4), *TAIL[1:]], "tensor 's' [2] F32 needs 8 bytes, the header gives 4"),
    ([canonical("h", "F32", [2**63], 0, 4), *TAIL[1:]], "'h' has a dimension over 2**63 - 1"),
    ([canonical("z", "F32", [2**40, 2**40, 0], 0, 0), *TAIL], None),  # 2**80 elements times 0: a valid empty tensor
    ([*TAIL, canonical("p", "F32", [1], 12, 16)], "describes 16 data bytes but the file holds 12"),
    ([canonical("p", "F32", [1], 96, 100), *TAIL], "describes 100 data bytes but the file holds 12"),
    ([canonical("o", "F32", [1], 0, 4), *TAIL], "offsets overlap or leave gaps"),
    ([*TAIL, canonical("n", "F32", [1], 2**64, 2**64 + 4)], "describes 18446744073709551620 data bytes"),
    ([*TAIL[:2], '"m":{"dtype":"F32","shape":[1],"data_offsets":[8,12],"x":{}}'], "'m' is malformed"),
    ([*TAIL[:2], '"l":{"dtype":"F32","shape":[' + "0," * 3000 + '1],"data_offsets":[8,8]}'], "'l' is malformed"),
    ([*TAIL[:2], '"f":{"dtype":"F32","shape":[1.0],"data_offsets":[8,12]}'], "'f' is malformed"),
    ([*TAIL[:2], '"q":{"dtype":"F32","shape":[-1],"data_offsets":[8,12]}'], "'q' has negative sizes or offsets"),
    ([*TAIL, '"__metadata__":{"a":1}'], "__metadata__ must map strings to strings"),
    ([*TAIL, '"__metadata__":[]'], "__metadata__ must map strings to strings"),
    ([*TAIL, '"__metadata__":{"a":"b","a":"c"}'], "names 'a' twice"),
    (['"__metadata__":{}', *TAIL, '"__metadata__":{}'], "names '__metadata__' twice"),
    ([canonical("__metadata__", "F32", [1], 0, 4), *TAIL[1:]], "__metadata__ must map strings to strings"),
    ([*TAIL, ""], "not valid JSON"),  # a trailing comma
    ([*TAIL[:2], '"bad\x01name":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}'], "not valid JSON"),
])
def test_malformed_entries_are_refused_with_what_is_wrong(tmp_path, entries, message):
    if message is None:
        path = write_safetensors_file(tmp_path / "ok.safetensors", "{" + ",".join(entries) + "}", 12)
        assert read_header(path)[0]["z"].shape == (2**40, 2**40, 0)
        return
    assert message in refused(tmp_path, entries)


@pytest.mark.parametrize(("opening", "closing", "message"), [
    ("[", "]", "not a JSON object"),
    ("{", "} x", "not valid JSON"),
    ("{", "", "not valid JSON"),
])
def test_a_header_that_is_no_object_is_refused(tmp_path, opening, closing, message):
    assert message in refused(tmp_path, TAIL, opening=opening, closing=closing)


def test_metadata_past_its_bound_is_refused(tmp_path):
    pairs = ",".join(f'"{i}":""' for i in range(MAX_METADATA_ENTRIES + 1))
    assert f"over {MAX_METADATA_ENTRIES:,} entries" in refused(tmp_path, ['"__metadata__":{' + pairs + "}", *TAIL])


def test_a_header_of_300k_tensors_parses_within_a_few_times_its_size(tmp_path, forkserver):
    """json.loads and an object per tensor took 12 times the header's size (17 for the shortest entries)."""
    big = tmp_path / "many.safetensors"
    header_bytes = with_many_entries(big, 300_000)
    assert header_bytes > 20_000_000
    baseline = forkserver.run(["inspect", EXAMPLE], tmp_path)
    run = forkserver.run(["inspect", big], tmp_path)
    assert baseline.returncode == 0 and run.returncode == 0, run.stderr
    assert "window 8x8" in run.stdout
    assert run.peak_rss - baseline.peak_rss < 5 * header_bytes, (run.peak_rss - baseline.peak_rss) / header_bytes


def test_a_hostile_value_is_refused_unbuilt_in_one_line(tmp_path, forkserver):
    """30 MB of ``[],`` would be ten million lists (600 MB) for json.loads."""
    hostile = '"x":[' + "[]," * 10_000_000 + "[]]"
    path = write_safetensors_file(tmp_path / "model.safetensors", "{" + ",".join([*TAIL, hostile]) + "}", 12)
    baseline = forkserver.run(["inspect", EXAMPLE], tmp_path)
    run = forkserver.run(["inspect", path], tmp_path)
    assert_one_line(run.returncode, run.stderr, "header entry 'x' is malformed")
    assert run.peak_rss - baseline.peak_rss < 3 * len(hostile), (run.peak_rss - baseline.peak_rss) / len(hostile)
