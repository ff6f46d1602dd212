"""The benchmarks' results: a table on the terminal, JSON, Markdown, a chart.

Contract
--------
- :func:`text_table` is what the command prints: each figure, its
  baseline, the ratio, the target and whether it was met.
- :func:`write` writes ``results.json`` (every figure with its details and
  the run's facts), ``results.md`` (the same table in Markdown) and
  ``chart.png`` (one panel per figure: the baseline and the measured value
  side by side, the ratio and the target in the title) into a directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from perf.harness import Figure


def _number(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdict(figure: Figure) -> str:
    met = figure.met
    if met is None:
        return "reported"
    if figure.target is None:
        return "reported, checks held" if met else "reported, CHECK FAILED"
    return "met" if met else "MISSED"


def _rows(figures: Sequence[Figure]) -> list[list[str]]:
    return [
        [
            figure.what,
            f"{_number(figure.measured)} {figure.unit}",
            f"{_number(figure.baseline)} {figure.unit}" if figure.baseline is not None else "—",
            f"{figure.ratio:.2f}" if figure.ratio is not None else "—",
            str(figure.target) if figure.target else "—",
            _verdict(figure)
            + "".join(f"; {name}: {'yes' if ok else 'NO'}" for name, ok in figure.checks.items()),
        ]
        for figure in figures
    ]


HEADER = ["what", "measured", "baseline", "ratio", "target", "result"]


def text_table(figures: Sequence[Figure]) -> str:
    rows = [HEADER, *_rows(figures)]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER))]
    lines = []
    for number, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def markdown(figures: Sequence[Figure], facts: dict[str, Any]) -> str:
    lines = [
        "# Benchmark results",
        "",
        ", ".join(f"{name}: {value}" for name, value in facts.items()),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(figures)]
    lines += ["", "Baselines and ratios:", ""]
    lines += [
        f"- **{figure.key}**: baseline is {figure.baseline_what or 'none'}; "
        f"ratio is {figure.ratio_meaning or 'none'}."
        + "".join(f" {note}" for note in figure.notes)
        for figure in figures
    ]
    return "\n".join(lines) + "\n"


def chart(figures: Sequence[Figure], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 4
    rows = (len(figures) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    for axis, figure in zip(axes.flat, figures):
        labels = ["baseline", "measured"] if figure.baseline is not None else ["measured"]
        values = [figure.baseline, figure.measured] if figure.baseline is not None else [figure.measured]
        met = figure.met
        colour = "#4c72b0" if met is None else "#55a868" if met else "#c44e52"
        axis.bar(labels, values, color=["#b0b0b0", colour][-len(values):])
        if figure.target is not None and figure.target.on_value:
            axis.axhline(figure.target.limit, color="#c44e52", linestyle="--", linewidth=1)
        axis.set_ylabel(figure.unit)
        ratio = f"ratio {figure.ratio:.2f}" if figure.ratio is not None else ""
        target = f", target {figure.target}" if figure.target else ""
        axis.set_title(f"{figure.key}\n{ratio}{target} ({_verdict(figure)})", fontsize=9)
        for position, value in enumerate(values):
            axis.annotate(_number(value), (position, value), ha="center", va="bottom", fontsize=8)
    for axis in list(axes.flat)[len(figures):]:
        axis.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(figures: Sequence[Figure], facts: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(
        json.dumps({"facts": facts, "figures": [f.as_json() for f in figures]}, indent=2) + "\n"
    )
    (directory / "results.md").write_text(markdown(figures, facts))
    chart(figures, directory / "chart.png")
