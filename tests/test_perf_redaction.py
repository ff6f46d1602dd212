"""``python -m perf.redaction`` runs and writes its results (timings are
reported by it, never asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perf import redaction as bench


def test_the_redaction_benchmark_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        bench, "FAMILIES", {name: bench.FAMILIES[name] for name in ("prose", "ghp_")}
    )
    assert bench.main(["--comments", "6", "--rounds", "1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "redaction.json").read_text())
    assert set(result["comment"]) == {"current", "previous"}, result["note"]
    assert set(result["growth"]) == {"prose", "ghp_"}
    assert "1 KB" in (tmp_path / "redaction.md").read_text()


def test_comments_are_1_kb_and_a_third_hold_a_secret() -> None:
    made = bench.comments(9)
    assert {len(text) for text in made} == {bench.COMMENT_CHARS}
    assert sum(1 for text in made if bench.redact(text).found) >= 3
