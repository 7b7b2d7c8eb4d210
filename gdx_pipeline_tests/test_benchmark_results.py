"""Measured figures stay where they can be weighed: every section of benchmarks/results/ says when,
on what machine and by which command; a benchmark run adds its section without touching the
ones before it; and the package's comments and docstrings cite no speed figures."""

import io
import re
import sys
import tokenize

import pytest

from benchmarks import results_log
from gdx_pipeline_tests.paths import REPO_ROOT

RESULTS = sorted(path for path in (REPO_ROOT / "benchmarks" / "results").glob("*.md") if path.name != "README.md")
SECTION = re.compile(r"^## (.+)$", re.M)


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each `## ` section."""
    parts = SECTION.split(text)
    return list(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_every_recorded_run_says_when_on_what_and_by_which_command(path):
    found = sections(path.read_text(encoding="utf-8"))
    assert found, f"{path.name} records no run"
    for heading, body in found:
        assert re.match(r"\d{4}-\d{2}-\d{2}\b", heading), f"{path.name}: {heading!r} does not start with its date"
        assert re.search(r"^- machine: \S", body, re.M), f"{path.name}: {heading!r} names no machine"
        assert re.search(r"^- command: \S", body, re.M), f"{path.name}: {heading!r} names no command"


def test_the_results_index_lists_every_results_file():
    index = (REPO_ROOT / "benchmarks" / "results" / "README.md").read_text(encoding="utf-8")
    assert [path.name for path in RESULTS if f"]({path.name})" not in index] == []


def test_a_run_is_appended_and_leaves_earlier_runs_as_they_were(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(REPO_ROOT / "benchmarks" / "bench_ingest.py"), "--rows", "1000"])
    first = results_log.append_run("ingest", "rows 1,000", "| a |\n|---|\n| 1 |", results=tmp_path)
    before = first.read_text(encoding="utf-8")
    second = results_log.append_run("ingest", "rows 1,000", "| a |\n|---|\n| 2 |", postgres="16.4", results=tmp_path)
    after = second.read_text(encoding="utf-8")

    assert second == first == tmp_path / "ingest.md"
    assert after.startswith(before)
    found = sections(after)
    assert [body.strip().splitlines()[-1] for _, body in found] == ["| 1 |", "| 2 |"]
    for heading, body in found:
        assert re.match(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC · rows 1,000$", heading)
        assert "- command: `.venv/bin/python benchmarks/bench_ingest.py --rows 1000`" in body
        assert re.search(r"^- machine: \d+ cores", body, re.M)
    assert "PostgreSQL 16.4" in found[1][1] and "PostgreSQL" not in found[0][1]


# A figure of speed in a comment dates the moment it was measured; benchmarks/results/ keeps it.
SPEED_FIGURES = re.compile(r"\d[\d.,]*\s?[x×]\s+(?:faster|slower)|\d[\d.,]*\s?k rows/s|\bp(?:50|99)\s+\d", re.I)


def comments_and_docstrings(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment, and of every string that stands alone as a statement."""
    found = []
    previous, depth = tokenize.NEWLINE, 0
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        statement_start = depth == 0 and previous in (tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT)
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and statement_start):
            found.append((token.start[0], token.string))
        if token.type == tokenize.OP:
            depth += token.string in "([{"
            depth -= token.string in ")]}"
        if token.type != tokenize.COMMENT:
            previous = token.type
    return found


def test_no_comment_or_docstring_in_the_package_cites_a_speed_figure():
    cited = [
        f"{path.relative_to(REPO_ROOT)}:{line}: {match.group()}"
        for path in sorted((REPO_ROOT / "gdx_pipeline").rglob("*.py"))
        for line, text in comments_and_docstrings(path.read_text(encoding="utf-8"))
        for match in SPEED_FIGURES.finditer(text)
    ]
    assert cited == []


def test_the_speed_figure_guard_sees_comments_and_docstrings_only():
    source = '"""Arrow is ~12x faster."""\nx = "3x faster"  # 40 k rows/s\ncall(\n    "2x slower",\n)\ndef f():\n    """p99 87 ms"""\n'
    found = [(line, match.group()) for line, text in comments_and_docstrings(source) for match in SPEED_FIGURES.finditer(text)]
    assert found == [(1, "12x faster"), (2, "40 k rows/s"), (7, "p99 8")]
