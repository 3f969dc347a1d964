"""Results: each scenario's figures against their targets, as a table and as JSON."""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec


class Figure(msgspec.Struct):
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    ratio: float | None = None  # value / baseline unless the metric says otherwise
    target: str = ""
    ok: bool | None = None  # None: no target for this figure


class Result(msgspec.Struct):
    name: str
    title: str
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    errors: list[str] = []
    seconds: float = 0.0
    failed: str | None = None  # the scenario could not produce its figures

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), nearest-rank on the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if float(value).is_integer() and abs(value) < 1e9:
        text = f"{int(value):,}"
    elif abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def verdict(ok: bool | None) -> str:
    return {True: "ok", False: "MISS", None: ""}[ok]


def table(results: Sequence[Result]) -> str:
    header = ("scenario", "metric", "sessiond", "baseline", "ratio", "target", "")
    rows: list[tuple[str, ...]] = [header]
    for result in results:
        name = result.name
        if result.failed:
            rows.append((name, "FAILED", result.failed[:60], "", "", "", "ERROR"))
        for figure in result.figures:
            rows.append(
                (
                    name,
                    figure.metric,
                    number(figure.value, figure.unit),
                    number(figure.baseline, figure.unit),
                    number(figure.ratio, "x"),
                    figure.target,
                    verdict(figure.ok),
                )
            )
            name = ""
        if result.errors:
            rows.append(
                ("", f"{len(result.errors)} server problem(s), see JSON", "", "", "", "", "")
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "commit": _git_head(),
    }


def _git_head() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parents[1],
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_json(path: Path, results: Sequence[Result], smoke: bool, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": machine(),
        "smoke": smoke,
        "seconds": round(seconds, 1),
        "scenarios": {r.name: msgspec.to_builtins(r) for r in results},
    }
    path.write_bytes(msgspec.json.format(msgspec.json.encode(document)) + b"\n")
