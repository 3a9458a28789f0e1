"""Fixtures of the dataset tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def validation_work(monkeypatch):
    """What each validation really did: the samples it checked (by their image, else annotation) and the files
    it read; the per-sample work runs in this process (fewer samples than a pool needs)."""
    from visapp.dataset import sample_pool

    done: dict[str, list[str]] = {"checked": [], "read": []}
    evaluate, read = sample_pool.evaluate_sample, sample_pool.read_with_signature

    def checking(raw_dir, files, *args, **kwargs):
        done["checked"].append(files.image or files.annotation)
        return evaluate(raw_dir, files, *args, **kwargs)

    def reading(raw_dir, rel):
        done["read"].append(rel)
        return read(raw_dir, rel)

    monkeypatch.setattr(sample_pool, "evaluate_sample", checking)
    monkeypatch.setattr(sample_pool, "read_with_signature", reading)

    def since_last() -> dict[str, list[str]]:
        found = {key: sorted(value) for key, value in done.items()}
        done["checked"].clear()
        done["read"].clear()
        return found

    return since_last
