"""Where a file's records begin and end, checked against Python's csv module.

The outcome of a file must not depend on how it is cut into blocks, and every record must be
read as Python's csv module reads it: the differential fuzz test reads random hostile files
(quoted and unquoted fields, stray quotes, line breaks of every kind inside and outside quotes,
very long fields and records, a BOM, a quote never closed) with block sizes from one byte to
the default and through the API's text path, and holds every line's fate to the csv module's
reading of the same bytes.

The CI budget is fixed (derandomized, GDX_FUZZ_EXAMPLES examples, default 80). A longer run:

    GDX_FUZZ_EXAMPLES=5000 GDX_TEST_WORKERS=0 ./scripts/test gdx_pipeline_tests/core/test_csv_records.py -k fuzz
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from gdx_pipeline.core.csv_source import (
    DEFAULT_BLOCK_BYTES,
    MAX_RECORD_BYTES,
    RAW_LINE_KEEP_CHARS,
    UTF8_BOM,
    UnreadableFileError,
    read_record_blocks,
    read_text_records,
)
from gdx_pipeline.core.loading import stored_raw_line
from gdx_pipeline.core.validation import RejectedRow, RowValidator
from gdx_pipeline.dictionary import NAME_CHARACTERS_RULE, TABLES

JOBS = TABLES["jobs"]
FUZZ_EXAMPLES = int(os.environ.get("GDX_FUZZ_EXAMPLES", "80"))
BLOCK_SIZES = [1, 2, 3, 7, 16, 61, 256, 4096]


# --- the fates of a file's lines --------------------------------------------------------------


def fates(blocks) -> list[tuple]:
    """Each record as (line, "loaded", values) or (line, "rejected", stored raw line, reasons)."""
    validator = RowValidator(JOBS)
    out = []
    for block in blocks:
        checked = validator.validate(block)
        lines = [int(line) for line in block.lines]
        rejected = {r.line for r in checked.rejected}
        loaded = [line for line in lines if line not in rejected]
        out += [(line, "loaded", (row["id"], row["job"])) for line, row in zip(loaded, checked.valid.to_pylist(), strict=True)]
        out += [(r.line, "rejected", stored_raw_line(r), tuple(r.reasons)) for r in checked.rejected]
    return sorted(out, key=lambda fate: fate[0])


def file_fates(path: Path, block_bytes: int, max_record_bytes: int = MAX_RECORD_BYTES) -> list[tuple] | str:
    try:
        return fates(read_record_blocks(path, JOBS, block_bytes, max_record_bytes=max_record_bytes))
    except UnreadableFileError as error:
        return f"unreadable: {error}"


def text_fates(text: str, max_record_bytes: int = MAX_RECORD_BYTES) -> list[tuple]:
    return fates([read_text_records(text, JOBS, max_record_bytes=max_record_bytes)])


# --- the oracle: Python's csv module on the whole text ----------------------------------------

_PHYSICAL_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")


def csv_module_records(text: str) -> list[tuple[int, str, list[str], bool]]:
    """(first line, raw text, fields, quote never closed) of every record, as csv reads them."""
    physical = _PHYSICAL_LINE.findall(text)
    if physical and physical[-1] == "":
        physical.pop()
    reader = csv.reader(io.StringIO(text, newline=""))
    records, previous = [], 0
    for fields in reader:
        raw = "".join(physical[previous : reader.line_num])
        raw = raw[:-2] if raw.endswith("\r\n") else raw[:-1] if raw.endswith(("\r", "\n")) else raw
        records.append((previous + 1, raw, fields, False))
        previous = reader.line_num
    # Inside a quoted field at the end, appended text joins the last record instead of starting one.
    if records and len(list(csv.reader(io.StringIO(text + "\nx", newline="")))) == len(records):
        line, raw, fields, _ = records[-1]
        records[-1] = (line, raw, fields, True)
    return records


def assert_agrees_with_csv_module(text: str, got: list[tuple], max_record_bytes: int) -> None:
    records = csv_module_records(text)
    assert [fate[0] for fate in got] == [line for line, *_ in records], "one fate per record, at the record's first line"
    for (line, raw, fields, never_closed), fate in zip(records, got, strict=True):
        if fate[1] == "rejected":
            assert fate[2] == stored_raw_line(RejectedRow(line, raw, [])), f"line {line}: the raw text as it arrived"
        too_long = len(raw.encode("utf-8")) > max_record_bytes
        if too_long:
            assert fate[1] == "rejected" and fate[3][0].startswith("row: record longer than"), (line, fate)
            continue
        assert fate[1] == "loaded" or not fate[3][0].startswith("row: record longer than"), (line, len(raw.encode()), fate)
        if never_closed:
            assert fate[1] == "rejected" and "quoted field is never closed" in fate[3][0], (line, fate)
        elif fate[1] == "loaded":
            assert len(fields) == 2 and fate[2] == (int(fields[0].strip()), fields[1].strip()), (line, fields, fate)
        elif len(fields) not in (0, 2):
            assert fate[3] == (f"row: expected 2 fields, found {len(fields)}",) or not raw.strip(), (line, fields, fate)


# --- random hostile files ---------------------------------------------------------------------

LINE_BREAKS = st.sampled_from(["\n", "\r\n", "\r"])
PLAIN = st.text(alphabet="abc XYZ019é王'\"\t", min_size=0, max_size=12)  # stray quotes included
QUOTED_INSIDE = st.text(alphabet='ab ,"\n\ré王', min_size=0, max_size=12).map(lambda s: s.replace('"', '""'))


@st.composite
def fields(draw) -> str:
    kind = draw(st.sampled_from(["id", "plain", "plain", "quoted", "quoted_junk", "long", "long_quoted", "empty"]))
    if kind == "id":
        return draw(st.sampled_from(["1", "2", "7", " 3 ", "+4", "0", "x", "99999999999"]))
    if kind == "plain":
        return draw(PLAIN)
    if kind == "quoted":
        return '"' + draw(QUOTED_INSIDE) + '"'
    if kind == "quoted_junk":  # text after the closing quote: csv keeps it, quotes and all
        return '"' + draw(QUOTED_INSIDE) + '"' + draw(PLAIN)
    if kind == "long":
        return draw(st.sampled_from(["N", "O\"Brien ", "5'11\" tall "])) * draw(st.integers(20, 200))
    if kind == "long_quoted":
        return '"' + draw(st.sampled_from(["x", "a,b", "l\ni", '""'])) * draw(st.integers(20, 200)) + '"'
    return ""


@st.composite
def csv_files(draw) -> bytes:
    records = []
    for _ in range(draw(st.integers(1, 12))):
        count = draw(st.sampled_from([0, 1, 2, 2, 2, 2, 3]))
        records.append(",".join(draw(fields()) for _ in range(count)) + draw(LINE_BREAKS))
    text = "".join(records)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    if draw(st.integers(0, 5)) == 0:
        text += draw(st.sampled_from(['11,"Unterminated', '12,"open\nand on', '"', '13,"a""b'])) + draw(
            st.sampled_from(["", "", "\n", "\r\n"])
        )
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = UTF8_BOM + data
    if draw(st.integers(0, 15)) == 0:
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\x00", b"\xff"])) + data[at:]
    return data


@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(
    data=csv_files(),
    block_sizes=st.lists(st.sampled_from(BLOCK_SIZES), min_size=2, max_size=3, unique=True),
    limit=st.sampled_from([40, 300, MAX_RECORD_BYTES, "a record's size", "a record's size - 1"]),
    pick=st.integers(0, 100),
)
def test_fuzz_fates_do_not_depend_on_block_size_and_agree_with_the_csv_module(tmp_path, data, block_sizes, limit, pick):
    max_record_bytes = limit if isinstance(limit, int) else record_limit_at_an_edge(data, pick, minus=limit.endswith("1"))
    path = tmp_path / "jobs.csv"
    path.write_bytes(data)
    reference = file_fates(path, DEFAULT_BLOCK_BYTES, max_record_bytes)
    for block_bytes in block_sizes:
        assert file_fates(path, block_bytes, max_record_bytes) == reference, f"block size {block_bytes}"
    if isinstance(reference, str):  # not UTF-8 or binary: one reason for the file, whatever the blocks
        return
    text = data.decode("utf-8").removeprefix("\ufeff")
    assert text_fates(text, max_record_bytes) == reference, "the API's text path"
    assert_agrees_with_csv_module(text, reference, max_record_bytes)


def record_limit_at_an_edge(data: bytes, pick: int, *, minus: bool) -> int:
    """A record limit equal to (or one byte short of) the size of one of the file's records."""
    try:
        records = csv_module_records(data.decode("utf-8").removeprefix("\ufeff"))
    except UnicodeDecodeError:
        return 40
    chosen = records[-1 if pick % 2 else pick % len(records)] if records else None  # the last record's end is the tricky one
    size = len(chosen[1].encode("utf-8")) if chosen else 40
    return max(1, size - minus)


# --- named cases ------------------------------------------------------------------------------


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "jobs.csv"
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def fates_at_every_block_size(path: Path, **kwargs) -> list[tuple]:
    """The fates, after checking that every block size from 1 byte to the default agrees."""
    size = path.stat().st_size
    results = {block: file_fates(path, block, **kwargs) for block in sorted({1, 2, 3, 5, 8, 13, size // 2 or 1, size, DEFAULT_BLOCK_BYTES})}
    reference = results[DEFAULT_BLOCK_BYTES]
    assert all(result == reference for result in results.values()), results
    return reference


@pytest.mark.parametrize("stray", ['O"Brien', "5'11\" tall", 'a"', '"Q"x', 'say ""hi'])
def test_a_stray_quote_in_an_unquoted_field_never_splits_a_quoted_record_later(tmp_path, stray):
    """Counting quotes took the stray one for an opening one: the multi-line record after it was cut."""
    path = write(tmp_path, f"1,{stray}\n2,\"Multi\nLine, with a comma\"\n3,After\n")
    got = fates_at_every_block_size(path)
    first = list(csv.reader([f"1,{stray}"]))[0][1]
    assert got == [
        (1, "loaded", (1, first)),
        (2, "rejected", '2,"Multi\nLine, with a comma"', (f"job: {NAME_CHARACTERS_RULE} (got 'Multi\\nLine, with a comma')",)),
        (4, "loaded", (3, "After")),
    ]


@pytest.mark.parametrize(
    ("text", "last_line"),
    [
        ('10,Fine\n11,"Unterminated', 2),
        ('10,Fine\n11,"Unterminated\n', 2),
        ('1,O"Brien\n11,"Unterminated', 2),  # an even number of quotes in all: parity saw nothing wrong
        ('10,"a""b"\n11,"Unterminated\r\n12,more\n', 3),
        ('11,"Unterminated\n\n', 2),
    ],
)
def test_a_quote_never_closed_at_the_end_is_rejected_whatever_the_other_quotes(tmp_path, text, last_line):
    got = fates_at_every_block_size(write(tmp_path, text))
    line, fate, _raw, reasons = got[-1]
    assert fate == "rejected" and reasons[0].startswith("row: a quoted field is never closed")
    assert not any(f[1] == "loaded" and f[2][0] == 11 for f in got)
    assert text_fates(text) == got, "the API's text path gives the same fate"
    if last_line > line:
        assert reasons == (f"row: a quoted field is never closed, so lines {line} to {last_line} were read as one record",)


def test_a_record_longer_than_the_limit_is_one_rejected_record_and_its_lines_never_become_rows(tmp_path):
    """A quoted value past the limit (MAX_BLOCK_BYTES once) was cut, and text inside it loaded as rows."""
    inside = "x" * 300 + "\n777,Injected\n" + "y" * 300
    path = write(tmp_path, f'1,Before\n2,"{inside}"\n3,After\n')
    got = fates_at_every_block_size(path, max_record_bytes=256)
    size = len(f'2,"{inside}"')
    assert got == [
        (1, "loaded", (1, "Before")),
        (2, "rejected", f'2,"{inside}"', (f"row: record longer than 256 bytes (got {size:,} bytes on lines 2 to 4)",)),
        (5, "loaded", (3, "After")),
    ]


def test_a_long_record_never_closed_runs_to_the_end_of_the_file(tmp_path):
    path = write(tmp_path, '1,Before\n2,"' + "z" * 500 + "\n777,Injected\n")
    got = fates_at_every_block_size(path, max_record_bytes=100)
    assert [f[:2] for f in got] == [(1, "loaded"), (2, "rejected")]
    assert got[1][3] == (
        "row: record longer than 100 bytes (got 516 bytes): a quoted field is never closed, so lines 2 to 3 were read as one record",
    )


def test_the_reject_table_keeps_the_start_of_a_very_long_line_and_says_how_long_it_was(tmp_path):
    path = write(tmp_path, "1," + "é" * 20_000 + "\n")
    ((_line, fate, raw, _reasons),) = fates_at_every_block_size(path, max_record_bytes=1024)
    assert fate == "rejected"
    assert raw == "1," + "é" * (RAW_LINE_KEEP_CHARS - 2) + "…[line cut here: 20,002 characters in all]"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\xef\xbb", "not UTF-8: undecodable byte at line 1"),  # a BOM cut short
        (b"1,a\n2,b\xff\n3,\x00\n", "not UTF-8: undecodable byte at line 2"),  # the first problem in the file is reported
        (b'1,"a\n\x00\n', "binary content (a NUL byte) at line 2"),
        (b'1,"' + b"a" * 500 + b"\n\xff", "not UTF-8: undecodable byte at line 2"),  # inside a streamed long record
    ],
)
def test_unreadable_bytes_are_reported_at_the_same_line_whatever_the_blocks(tmp_path, content, reason):
    assert fates_at_every_block_size(write(tmp_path, content), max_record_bytes=100).startswith(f"unreadable: {reason}")


def test_a_bom_split_across_the_first_reads_is_still_a_bom(tmp_path):
    assert fates_at_every_block_size(write(tmp_path, UTF8_BOM + b"1,Engineer\n")) == [(1, "loaded", (1, "Engineer"))]


@pytest.mark.parametrize("ending", ["", "\n", "\r\n", "\r"])
def test_a_record_exactly_at_the_limit_is_read_whatever_ends_the_file(tmp_path, ending):
    """At the limit to the byte: a line break the file ends with is not part of the record."""
    record = '1,"' + "x" * 95 + "\n"  # 100 bytes with its quoted line break, never closed
    got = fates_at_every_block_size(write(tmp_path, record.rstrip("\n") + "\n" + ending), max_record_bytes=len(record))
    ((_line, fate, _raw, (reason,)),) = got
    assert fate == "rejected" and reason.startswith("row: a quoted field is never closed"), reason
