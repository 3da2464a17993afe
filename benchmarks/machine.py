"""What the figures were measured on: without it a benchmark figure means nothing."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backend.system.runtime import describe_device


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def load_average() -> list[float]:
    """Recorded with each run: a busy machine explains a surprising figure."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def describe_machine(device: torch.device) -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        from osgeo import gdal

        gdal_version = gdal.__version__
    except ImportError:
        gdal_version = "absent"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": memory_total_gib(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
        "device": describe_device(device),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gdal": gdal_version,
        "load_average": load_average(),
    }


def machine_lines(machine: dict[str, Any]) -> list[str]:
    return [
        f"CPU: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable), "
        f"{machine['memory_gib']} GiB RAM",
        f"torch {machine['torch']} (CUDA {machine['torch_cuda'] or 'none'}, "
        f"{machine['torch_threads']} threads), Python {machine['python']}, numpy {machine['numpy']}, "
        f"GDAL {machine['gdal']}",
        f"device: {machine['device']}",
        f"load average at start: {', '.join(map(str, machine['load_average'])) or 'unknown'}",
    ]
