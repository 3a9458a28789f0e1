"""The issue codes have one registry (`visapp.formats.report.CODES`): the README's and docs/' tables say the same."""

from __future__ import annotations

import re

import pytest

from conftest import REPO_ROOT
from visapp.formats.report import CODES, ERROR, WARNING, Issue, build_report, format_summary, has_errors

pytestmark = pytest.mark.unit

ROW = re.compile(r"^\| `(?P<code>[a-z0-9_]+)` \| (?P<severity>error|warning) \| (?P<meaning>.+) \|$")


def table(path) -> dict[str, tuple[str, str]]:
    rows = (ROW.match(line) for line in path.read_text().splitlines())
    return {m["code"]: (m["severity"], m["meaning"]) for m in rows if m}


@pytest.mark.parametrize("document", ["README.md", "docs/architecture.md"])
def test_the_documented_table_is_the_registry(document):
    assert table(REPO_ROOT / document) == {code: (c.severity, c.meaning) for code, c in CODES.items()}


def test_every_code_has_a_severity_and_a_meaning():
    assert {c.severity for c in CODES.values()} == {ERROR, WARNING}
    assert all(c.meaning.strip() for c in CODES.values())


def test_the_report_counts_and_sorts_issues():
    issues = [
        Issue.of("b.jpg", "duplicate_image", "byte-identical to a.jpg"),
        Issue.of("Annotations", "path_unreadable", "this folder cannot be read"),
        Issue.of("a.xml", "xml_malformed", "not well-formed"),
    ]
    report = build_report(samples=3, rejected=1, issues=issues)
    assert [i["path"] for i in report["issues"]] == ["Annotations", "a.xml", "b.jpg"]
    assert report["by_code"] == {"duplicate_image": 1, "path_unreadable": 1, "xml_malformed": 1}
    assert (report["accepted"], report["warnings"]) == (2, 1)


def test_an_error_outside_any_sample_fails_the_dataset():
    unreadable = [Issue.of("Annotations", "path_unreadable", "this folder cannot be read")]
    assert has_errors(build_report(samples=2, rejected=0, issues=unreadable))
    assert not has_errors(build_report(samples=2, rejected=0, issues=[Issue.of("a.jpg", "size_missing", "x")]))


def test_the_summary_keeps_the_path_apart_from_the_longest_code():
    longest = max(CODES, key=len)
    issues = [Issue.of("a.jpg", "size_missing", "x"), Issue.of("b.jpg", longest, "y")]
    lines = format_summary(build_report(samples=2, rejected=0, issues=issues)).splitlines()
    assert any(line.split() == ["warning", longest, "b.jpg:", "y"] for line in lines), lines
    assert all(f"{longest}b.jpg" not in line for line in lines)
