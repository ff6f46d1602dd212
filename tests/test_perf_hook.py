"""``python -m perf.hook`` runs at its quick scale and its check holds:
every response the hook read was stored once (timings are reported by the
benchmark, never asserted here)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import PROJECT_ROOT


def test_the_hook_benchmark_runs_and_stores_each_response_once() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "perf.hook", "--scale", "quick"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for what in ("SessionEnd: 200 responses", "Stop again", "API refusing", "API never answering",
                 "PostToolUse"):
        assert what in done.stdout, done.stdout
    assert "stored 600 of 600 (each response once): yes" in done.stdout, done.stdout
