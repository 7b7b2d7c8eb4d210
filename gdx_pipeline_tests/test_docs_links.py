"""The README and the pages it sends readers to hold together: every relative link points at a
file that exists and, when it names an anchor, at a heading that file has (GitHub's anchors);
and every page under docs/ is one link away from the README."""

import re
from pathlib import Path

import pytest

from gdx_pipeline_tests.paths import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")), *sorted((REPO_ROOT / "benchmarks" / "results").glob("*.md"))]
FENCED_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def links(page: Path) -> list[str]:
    """Markdown link targets of `page` (outside code, where brackets and parentheses are text)."""
    text = FENCED_BLOCK.sub("", page.read_text(encoding="utf-8"))

    def outside_link_text(span: re.Match) -> str:
        is_link_text = text[span.start() - 1 : span.start()] == "[" and text[span.end() : span.end() + 1] == "]"
        return "code" if is_link_text else ""

    return LINK.findall(CODE_SPAN.sub(outside_link_text, text))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation (backticks too) dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCED_BLOCK.sub("", page.read_text(encoding="utf-8"))):
        anchor = github_anchor(heading)
        suffix, unique = 0, anchor
        while unique in found:  # GitHub numbers repeated headings: name, name-1, name-2
            suffix += 1
            unique = f"{anchor}-{suffix}"
        found.add(unique)
    return found


def test_the_anchor_rule_matches_github_on_our_kinds_of_heading():
    assert github_anchor("Emptying the warehouse: `gdx reset`") == "emptying-the-warehouse-gdx-reset"
    assert (
        github_anchor("2026-11-29 · SQLite hire-year index against `datetime` index")
        == "2026-11-29--sqlite-hire-year-index-against-datetime-index"
    )
    assert (
        github_anchor("What the deployment's Dagster does (`deploy/dagster.yaml`)") == "what-the-deployments-dagster-does-deploydagsteryaml"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.is_file() and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.relative_to(REPO_ROOT)}")
    assert broken == []


def test_every_docs_page_is_one_link_from_the_readme():
    readme_targets = {(REPO_ROOT / target.partition("#")[0]).resolve() for target in links(REPO_ROOT / "README.md")}
    unlinked = [page.name for page in sorted((REPO_ROOT / "docs").glob("*.md")) if page.resolve() not in readme_targets]
    assert unlinked == []


def test_the_link_finder_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "[a](x.md) and [`code`](y.md#z), not `[in](code.md)`\n\n```\n[not](fenced.md)\n```\n![image](pic.png)\n", encoding="utf-8"
    )
    assert links(page) == ["x.md", "y.md#z"]
