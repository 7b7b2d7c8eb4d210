"""Whatever bytes arrive, every physical line is covered by exactly one loaded or rejected record."""

import random

import pytest

from gdx_pipeline.core.csv_source import UnreadableFileError, count_line_breaks, read_record_blocks
from gdx_pipeline.core.validation import RowValidator
from gdx_pipeline.dictionary import TABLES

PIECES = ["1", "42", "x", "", " ", '"', '""', ",", "Ann", "Zoë 王", "2021-01-01T00:00:00Z", "\t", "-3", "99999999999"]
ENDINGS = ["\n", "\r\n", "\r"]


def random_file(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(1, 40)):
        fields = [rng.choice(PIECES) + rng.choice(PIECES) for _ in range(rng.choice([1, 2, 2, 2, 3]))]
        lines.append(",".join(fields) + rng.choice(ENDINGS))
    if rng.random() < 0.3:
        lines[-1] = lines[-1].rstrip("\r\n")
    return "".join(lines).encode("utf-8")


@pytest.mark.parametrize("seed", range(80))
def test_every_physical_line_is_accounted_for_exactly_once(tmp_path, seed):
    rng = random.Random(seed)
    data = random_file(rng)
    path = tmp_path / "jobs.csv"
    path.write_bytes(data)
    spec = TABLES["jobs"]
    validator = RowValidator(spec)
    covered: list[int] = []
    if not data.strip():
        with pytest.raises(UnreadableFileError, match="empty"):
            list(read_record_blocks(path, spec))
        return
    for block in read_record_blocks(path, spec, block_bytes=rng.choice([16, 256, 4096])):
        checked = validator.validate(block)
        rejected_lines = {r.line for r in checked.rejected}
        for line in map(int, block.lines):
            if line not in rejected_lines:  # a loaded record may span lines too (a quoted line break, trimmed)
                covered.extend(range(line, line + count_line_breaks(block.raw_lines[line].encode()) + 1))
        for row in checked.rejected:
            covered.extend(range(row.line, row.line + count_line_breaks(row.raw.encode()) + 1))
    physical = count_line_breaks(data) + (0 if data.endswith((b"\n", b"\r")) else 1)
    assert sorted(covered) == list(range(1, physical + 1)), data
