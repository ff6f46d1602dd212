"""
The benchmark command (``python -m perf``), run at its quick scale: every
benchmark runs against its baseline on a scratch database of the server,
the checks that must hold whatever the speed (aggregates equal a recount,
stored picks equal the raw SQL's, the single-feedback baselines did what
they say, every HTTP request was answered 201 and wrote its rows) hold, every baseline says what it is, and the results are
written as JSON, Markdown and a PNG chart. Speed targets are not asserted
here: they are measured at full scale by ``scripts/perf.sh``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from perf.__main__ import ORDER
from tests.support import PROJECT_ROOT, connected


async def test_the_quick_run_measures_everything_and_writes_the_results(
    server_url: str, tmp_path: Path
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "perf", "--scale", "quick", "--out", str(tmp_path)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": server_url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    results = json.loads((tmp_path / "results.json").read_text())
    figures = {figure["key"]: figure for figure in results["figures"]}
    assert list(figures) == list(ORDER)
    for key, figure in figures.items():
        assert figure["measured"] > 0, key
        if figure["baseline"] is not None:
            assert figure["baseline"] > 0, key
            assert figure["ratio"] > 0, key
        assert all(figure["checks"].values()), (key, figure["checks"])
    assert figures["concurrent_writers"]["checks"]
    assert figures["run_completion"]["checks"]
    assert results["facts"]["scale"] == "quick"

    # One feedback: the Python API (autocommit scope) against the raw INSERT
    # with its triggers on, and the figures that say what the triggers, the
    # API's statement and a transaction scope cost. The triggers-off baseline
    # really had them off (its skill's stored count stayed 0), and the raw
    # statement wrote every row as the tenant's.
    single = figures["single_feedback"]
    assert set(single["details"]["ms_per_row"]) == {
        "api", "api_transaction", "function", "owner", "no_triggers"
    }
    assert single["target"] == "≥ 0.8×"
    assert single["baseline"] == figures["single_feedback_function"]["baseline"]
    assert single["baseline"] == figures["single_feedback_triggers"]["measured"]
    assert single["measured"] == figures["single_feedback_transaction_scope"]["baseline"]
    assert figures["single_feedback_triggers"]["checks"]["triggers were off"]
    assert figures["single_feedback_function"]["checks"]["every row written, as the tenant's"]

    # The HTTP API: every request answered 201 and every row written, the
    # ways that say where a request's time goes measured in the same rounds,
    # and the 16 clients' p50 and p99.
    http = figures["http_feedback"]
    assert http["target"] == "≥ 0.6×"
    assert set(http["details"]["ms_per_request"]) == {"api_http", "raw_http", "work", "raw_insert"}
    assert figures["http_measurement_batch"]["target"] == "≥ 0.7×"
    for key in ("http_feedback", "http_measurement_batch", "http_concurrent"):
        assert figures[key]["checks"]["every request answered 201"], key
        assert figures[key]["checks"]["every row written"], key
    latency = figures["http_concurrent"]["details"]["latency"]["api"]
    assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    assert figures["http_concurrent"]["measured"] == latency["p50_ms"]

    # The printed table and the Markdown one name every figure, and every
    # baseline says what it is.
    markdown = (tmp_path / "results.md").read_text()
    for figure in figures.values():
        assert figure["what"] in completed.stdout
        assert figure["what"] in markdown
        if figure["baseline"] is not None:
            assert figure["baseline_what"], figure["key"]
            assert f"baseline is {figure['baseline_what']};" in markdown
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # The scratch database is gone.
    async with connected(server_url) as connection:
        names = [row[0] for row in await connection.fetch("SELECT datname FROM pg_database")]
    scratch = re.search(r"scratch database (everyskill_perf_\d+)", completed.stderr)
    assert scratch is not None, completed.stderr
    assert scratch[1] not in names
