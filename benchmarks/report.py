"""Printing figures as they are measured and saving them as JSON next to each other."""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

from . import OUT
from .machine import load_average, machine_lines


def say(text: str = "") -> None:
    """A figure line on stdout (what gets pasted into BENCHMARKS.md)."""
    print(text, flush=True)


def status(text: str) -> None:
    """Progress on stderr, kept apart from the figures."""
    print(f"... {text}", file=sys.stderr, flush=True)


def header(title: str, machine: dict[str, Any], details: dict[str, str]) -> None:
    say(f"== {title} ==")
    for line in machine_lines(machine):
        say(line)
    for key, value in details.items():
        say(f"{key}: {value}")


def against(value: float | None, limit: float) -> str:
    """A label, not an assertion: benchmarks report, they never fail on a figure."""
    if value is None:
        return "n/a"
    return "met" if value <= limit else "NOT met"


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def started() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def save(name: str, data: dict[str, Any]) -> Path:
    """Write ``benchmarks/out/<name>.json`` (the figures of this one run) and say where."""
    data = {**data, "command": sys.argv, "load_average_at_end": load_average()}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    say(f"(saved to {path})")
    return path


def busy_warning(others: list[float | None], device_type: str) -> None:
    """Say so when other processes competed for the CPU: such figures are not the machine's."""
    from .timing import BUSY_CORES

    loads = [v for v in others if v is not None]
    if device_type == "cpu" and loads and max(loads) > BUSY_CORES:
        say(
            f"WARNING: other processes used up to {max(loads):.2f} cores during the measurements counted "
            "above: the machine was busy; rerun on a quiet machine before quoting these figures"
        )
