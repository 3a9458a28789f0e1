"""visapp.integrations.git against a real repository: answers, and failures that are not taken for answers."""

from __future__ import annotations

import pytest

from conftest import run
from visapp.errors import VisError
from visapp.integrations import git

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path):
    run(["git", "init", "-q", "-b", "main"], tmp_path)
    (tmp_path / "a.txt").write_text("one\n")
    run(["git", "add", "a.txt"], tmp_path)
    run(["git", "commit", "-q", "-m", "first"], tmp_path)
    return tmp_path


def test_head_commit_is_the_checked_out_commit_or_none(repo, tmp_path_factory):
    assert git.head_commit(repo) == run(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    empty = tmp_path_factory.mktemp("empty")
    run(["git", "init", "-q"], empty)
    assert git.head_commit(empty) is None


def test_show_file_says_absent_only_for_a_missing_path(repo):
    assert git.show_file(repo, "HEAD", "a.txt") == "one\n"
    assert git.show_file(repo, "HEAD", "nope.txt") is None
    with pytest.raises(VisError, match="no-such-rev"):  # an unknown revision is an error, not "absent"
        git.show_file(repo, "no-such-rev", "a.txt")


def test_a_failing_command_names_itself_and_gits_message(repo):
    with pytest.raises(VisError, match=r"`git checkout no-such-branch` failed .*no-such-branch"):
        git.git(repo, "checkout", "no-such-branch")


def test_changed_files_lists_untracked_and_modified(repo):
    assert git.changed_files(repo) == []
    (repo / "a.txt").write_text("two\n")
    (repo / "b.txt").write_text("new\n")
    assert sorted(line[3:] for line in git.changed_files(repo)) == ["a.txt", "b.txt"]
