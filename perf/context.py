"""What every benchmark is given: the database, its data and the scale.

Contract
--------
- :class:`Scale` holds the sizes. :data:`FULL` is the scale the targets are
  stated at (a million rows where a target names a million rows);
  :data:`QUICK` runs every benchmark in seconds, to check that they work.
- :class:`Context` is the owner's URL and connection to the benchmark
  database (a scratch database, dropped afterwards), the catalogue built in
  it, and the scale. The query API's engine
  (:func:`everyskill.database.app_engine`, logged in as ``everyskill_api``)
  points at the same database, with its pool started.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from perf.data import Catalogue


@dataclass(frozen=True)
class Scale:
    name: str
    # One feedback at a time: rows per round and way, rounds (the ways alternate).
    single_rows: int
    single_rounds: int
    # Measurement batches: rows per batch, rounds.
    batch_rows: int
    batch_rounds: int
    # Aggregate reads: feedback on the small and the big skill, reads of each.
    small_feedback: int
    big_feedback: int
    aggregate_reads: int
    # Concurrent writers: how many, feedback written in all (each way).
    writers: int
    writer_rows: int
    # The admin: measurements at the small and big size, page loads of each.
    small_measurements: int
    big_measurements: int
    page_loads: int
    # Load on the admin while its memory is watched: seconds, clients.
    load_seconds: float
    load_clients: int
    # Run completion: results per model, models, runs completed.
    results_per_model: int
    run_models: int
    runs: int
    # Rate limits: requests per round and way, rounds.
    rate_limit_calls: int
    rate_limit_rounds: int
    # The HTTP API: single requests per round and way, rounds; rounds of one
    # batch each way; requests of 16 clients per round and way, rounds.
    http_requests: int
    http_rounds: int
    http_batch_rounds: int
    http_concurrent_requests: int
    http_concurrent_rounds: int
    # The overview: measurements at the small and big size (``python -m perf``
    # reads the small one at ``small_measurements``, its first data), reads of each;
    # one measurement with and without the rollup: rows per round and way, rounds.
    overview_small: int
    overview_big: int
    overview_reads: int
    rollup_write_rows: int
    rollup_write_rounds: int


FULL = Scale(
    name="full",
    single_rows=100,
    single_rounds=25,
    batch_rows=10_000,
    batch_rounds=9,
    small_feedback=1_000,
    big_feedback=1_000_000,
    aggregate_reads=2_000,
    writers=16,
    writer_rows=3_200,
    small_measurements=1_000,
    big_measurements=1_000_000,
    page_loads=200,
    load_seconds=20.0,
    load_clients=16,
    results_per_model=2_000,
    run_models=5,
    runs=7,
    rate_limit_calls=1_600,
    rate_limit_rounds=7,
    http_requests=100,
    http_rounds=9,
    http_batch_rounds=15,
    http_concurrent_requests=800,
    http_concurrent_rounds=5,
    overview_small=1_000,
    overview_big=10_000_000,
    overview_reads=30,
    rollup_write_rows=100,
    rollup_write_rounds=15,
)

QUICK = Scale(
    name="quick",
    single_rows=20,
    single_rounds=5,
    batch_rows=1_000,
    batch_rounds=2,
    small_feedback=100,
    big_feedback=5_000,
    aggregate_reads=100,
    writers=16,
    writer_rows=160,
    small_measurements=100,
    big_measurements=5_000,
    page_loads=20,
    load_seconds=2.0,
    load_clients=4,
    results_per_model=200,
    run_models=5,
    runs=2,
    rate_limit_calls=160,
    rate_limit_rounds=2,
    http_requests=20,
    http_rounds=2,
    http_batch_rounds=2,
    http_concurrent_requests=64,
    http_concurrent_rounds=1,
    overview_small=100,
    overview_big=20_000,
    overview_reads=5,
    rollup_write_rows=20,
    rollup_write_rounds=2,
)

SCALES = {scale.name: scale for scale in (FULL, QUICK)}


@dataclass
class Context:
    url: str
    owner: asyncpg.Connection
    catalogue: Catalogue
    scale: Scale
