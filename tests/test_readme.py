"""The front page a newcomer reads: one screen to the two commands and the "what you will get" table, at most 250
lines, and no dated run (dates, commits and data belong to the result files the table links)."""

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
LINES = README.splitlines()


def test_the_readme_is_at_most_250_lines():
    assert len(LINES) <= 250, len(LINES)


def test_the_two_commands_and_what_you_will_get_come_first():
    first = "\n".join(LINES[:40])
    assert "make demo" in first and "make test" in first
    assert "## What you will get" in first


def test_no_line_quotes_a_dated_run():
    dated = [n for n, line in enumerate(LINES, 1) if re.search(r"\b20\d\d-\d\d-\d\d\b", line)]
    assert not dated, f"README.md lines {dated}: a date belongs to the result file the line links"


def test_every_link_into_the_repository_exists():
    root = Path(__file__).resolve().parent.parent
    for target in re.findall(r"\]\(((?!https?:|#)[^)#\s]+)", README):
        assert (root / target).exists(), target
