"""Where the engine runs (CPU or CUDA) and what it costs (time, peak memory)."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` takes the GPU when there is one; asking for ``cuda`` without one is an error."""
    choice = (choice or "auto").lower()
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise UserError(
                f"--device {choice}: no CUDA GPU is available here (torch {torch.__version__}, {build})"
            )
        device = torch.device(choice)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"--device {choice}: only {torch.cuda.device_count()} GPU(s) found")
        return device
    raise UserError(f"unknown device '{choice}' (choose {', '.join(DEVICE_CHOICES)})")


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return f"cpu ({torch.get_num_threads()} threads)"


def default_batch_size(device: torch.device) -> int:
    return 16 if device.type == "cuda" else 1  # on CPU a bigger batch is no faster, only bigger


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    ``VmHWM`` rather than ``ru_maxrss``: Linux carries ``ru_maxrss`` over from the parent across
    fork + exec, so a run started from a big process (QGIS, pytest) would report the parent's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


GDAL_CACHE_MB = 64
"""GDAL's block cache defaults to 5 % of RAM; capped for headless runs so memory stays flat in
raster size (a tile row of decoded blocks is far smaller than this). Not applied inside QGIS,
which manages the cache for its own rendering."""


def tune_allocator() -> bool:
    """Stop glibc from returning the network's large buffers to the system after every pass.

    With glibc's defaults each forward pass maps fresh pages for its activations and the kernel
    zeroes them again: measured here, a third of CPU inference time went to page faults. Keeping
    freed memory in the heap (no trimming, big top pad, mmap only above 32 MiB) avoids that; the
    peak is unchanged, the memory is simply kept until the process ends. For headless runs (CLI,
    benchmarks); returns False where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    return all(
        mallopt(option, value) == 1
        for option, value in (
            (m_mmap_threshold, 32 * 2**20),
            (m_trim_threshold, 2**31 - 1),
            (m_top_pad, 512 * 2**20),
        )
    )


def limit_gdal_cache(megabytes: int = GDAL_CACHE_MB) -> None:
    """Cap GDAL's block cache, unless the user chose a size with the GDAL_CACHEMAX variable."""
    import os

    from osgeo import gdal

    if "GDAL_CACHEMAX" not in os.environ:
        gdal.SetCacheMax(megabytes * 2**20)


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
