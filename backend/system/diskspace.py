"""Disk space: refuse up front what cannot fit, and say "disk full" plainly when it happens.

GDAL, SQLite, safetensors and Python report a full disk in different words (``ENOSPC``, "No
space left on device", GDAL's "Free disk space available is …", SQLite's "database or disk is
full"); :func:`is_disk_full` recognises them all so that every writer can turn one into a single
clear line.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from ..errors import UserError

_DISK_FULL_WORDS = ("no space left on device", "free disk space available", "database or disk is full")


def megabytes(n_bytes: float) -> str:
    """A size as people read it: ``4.5 MB``, ``45 MB``, ``1.3 GB``, ``42 GB``."""
    value, unit = n_bytes / 2**20, "MB"
    if value >= 1024:
        value, unit = value / 1024, "GB"
    return f"{value:,.0f} {unit}" if value >= 10 else f"{value:.1f} {unit}"


def free_bytes(folder: Path) -> int:
    """Free space for the (possibly not yet created) ``folder``: that of its nearest existing parent."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def require_space(folder: Path, needed: int, what: str) -> None:
    """One clear error when ``needed`` bytes will not fit where ``folder`` lives."""
    free = free_bytes(folder)
    if needed > free:
        raise UserError(
            f"not enough space in {folder} for {what}: {megabytes(needed)} needed, {megabytes(free)} free"
        )


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return any(words in text for words in _DISK_FULL_WORDS)


def disk_full_error(folder: Path) -> UserError:
    return UserError(
        f"not enough space in {folder}: the disk filled up while writing "
        f"({megabytes(free_bytes(folder))} free now); nothing was left half-written"
    )
