"""git, the command: every call the library makes to it, each failure a `VisError` naming the command.

Only "this file is not at that revision" is an answer rather than an error (`show_file` returns None);
anything else git refuses (not a repository, an unknown revision, git missing) is said as it is.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from visapp.errors import VisError

TIMEOUT_S = 120
_ABSENT = ("does not exist in", "exists on disk, but not in")  # git show's words for a missing path


def _run(root: Path, args: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=timeout, check=False, errors="replace"
        )
    except FileNotFoundError:
        raise VisError("git is not installed or not on PATH: install git") from None
    except subprocess.TimeoutExpired:
        raise VisError(f"`git {' '.join(args)}` did not answer in {timeout:g} s in {root}") from None


def git(root: Path, *args: str) -> str:
    """Run `git ARGS` in `root`; its stdout, or `VisError` with git's own message."""
    proc = _run(root, list(args))
    if proc.returncode != 0:
        raise VisError(f"`git {' '.join(args)}` failed in {root}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def is_repository(root: Path) -> bool:
    """Whether `root` is inside a git repository."""
    try:
        return _run(root, ["rev-parse", "--git-dir"], timeout=10).returncode == 0
    except VisError:
        return False


def head_commit(root: Path) -> str | None:
    """The checked-out commit, or None in a repository without commits (or outside one)."""
    try:
        proc = _run(root, ["rev-parse", "--verify", "-q", "HEAD^{commit}"], timeout=10)
    except VisError:
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def commit_of(root: Path, rev: str) -> str | None:
    """The commit a revision (commit, branch, tag, `HEAD~2`) names, or None when git does not know it."""
    if not rev or rev.startswith("-"):  # never an option to git
        return None
    proc = _run(root, ["rev-parse", "--verify", "-q", f"{rev}^{{commit}}"], timeout=10)
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def changed_files(root: Path) -> list[str]:
    """Uncommitted changes, untracked files included, as `git status --porcelain` lines."""
    return [line for line in git(root, "status", "--porcelain", "--untracked-files=normal").splitlines() if line]


def show_file(root: Path, rev: str, path: str) -> str | None:
    """A tracked file's text at `rev`, or None when the file is not there; other failures are errors."""
    proc = _run(root, ["show", f"{rev}:{path}"])
    if proc.returncode == 0:
        return proc.stdout
    if any(words in proc.stderr for words in _ABSENT):
        return None
    raise VisError(f"`git show {rev}:{path}` failed in {root}: {proc.stderr.strip()}")


def add(root: Path, paths: list[Path]) -> None:
    """`git add` the paths."""
    git(root, "add", "--", *(str(path) for path in paths))


def tag_targets(root: Path, pattern: str) -> dict[str, str]:
    """Tags matching a `refs/tags/` pattern -> the commit each points at (annotated tags peeled)."""
    out = git(root, "for-each-ref", "--format=%(refname:short) %(*objectname) %(objectname)", f"refs/tags/{pattern}")
    tags = {}
    for line in out.splitlines():
        tag, *shas = line.split()
        tags[tag] = shas[0]  # annotated: the peeled commit first; a lightweight tag has only its own sha
    return tags


def remotes(root: Path) -> list[str]:
    """The names of the repository's remotes."""
    return git(root, "remote").split()


def push_tags(root: Path, remote: str, tags: list[str]) -> None:
    """Push the tags to `remote`."""
    git(root, "push", remote, *(f"refs/tags/{tag}" for tag in tags))


def branch(root: Path) -> str | None:
    """The checked-out branch, or None (detached HEAD, no repository)."""
    try:
        proc = _run(root, ["symbolic-ref", "-q", "--short", "HEAD"], timeout=10)
    except VisError:
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def workspace_diff(root: Path) -> str:
    """`git diff HEAD` (tracked files' changes) and the untracked files, as one text."""
    changes = git(root, "diff", "HEAD", "--no-color", "--no-ext-diff")
    untracked = git(root, "ls-files", "--others", "--exclude-standard")
    listed = "".join(f"untracked: {line}\n" for line in untracked.splitlines())
    return changes + listed
