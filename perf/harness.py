"""What a benchmark measures and how its figure is judged.

Contract
--------
- A benchmark produces one or more :class:`Figure`: the thing measured, the
  baseline it is compared with (measured in the same run, on the same
  server and data), both values with their unit, the ratio between them,
  the target and whether it was met.
- :class:`Target` states a target as a bound on the ratio (``at_least`` or
  ``at_most``), or on the measured value itself when there is no baseline.
  ``checks`` are conditions that must hold as well (the aggregates equal a
  recount, say). A figure with neither is reported only (``met`` is None).
- :func:`p50` is the median of wall-clock durations. Runs of the
  compared calls are interleaved by the benchmarks (baseline, candidate,
  baseline, ...) so that a slow moment of a noisy machine hits both.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Target:
    """A bound on a figure's ratio (or on its value when ``on_value``)."""

    bound: Literal["at_least", "at_most"]
    limit: float
    on_value: bool = False

    def met_by(self, figure: Figure) -> bool | None:
        judged = figure.measured if self.on_value else figure.ratio
        if judged is None:
            return None
        return judged >= self.limit if self.bound == "at_least" else judged <= self.limit

    def __str__(self) -> str:
        sign = "≥" if self.bound == "at_least" else "≤"
        return f"{sign} {self.limit:g}{'' if self.on_value else '×'}"


@dataclass
class Figure:
    """One measured figure against its baseline.

    ``ratio`` is defined by the benchmark so that its target reads as the
    target states it: candidate throughput / baseline throughput, or
    candidate time / baseline time (``ratio_meaning`` says which).
    """

    key: str
    what: str
    measured: float
    unit: str
    baseline_what: str = ""
    baseline: float | None = None
    ratio: float | None = None
    ratio_meaning: str = ""
    target: Target | None = None
    #: Conditions that must hold besides the target, by name (e.g. "the
    #: aggregates equal a recount").
    checks: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def met(self) -> bool | None:
        """The target and every check held; None with neither."""
        results = [*self.checks.values()]
        if self.target:
            on_target = self.target.met_by(self)
            if on_target is None:
                return None
            results.append(on_target)
        return all(results) if results else None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = str(self.target) if self.target else None
        data["met"] = self.met
        return data


def p50(durations: list[float]) -> float:
    """The median of ``durations``."""
    return statistics.median(durations)
