"""Which rasters a ``predict-many`` run takes, and the folder name each one's outputs get.

Inputs may be raster files (a VRT mosaic is one raster), folders (their rasters, not recursive)
or glob patterns. Anything under the output folder is left out, so a rerun never predicts its
own maps.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
"""What a folder's rasters are recognised by (any GDAL raster can still be named directly)."""
GLOB_CHARACTERS = "*?["


def discover_inputs(arguments: Sequence[str | Path], out_dir: Path) -> list[Path]:
    """The rasters the arguments name, resolved, without duplicates, in a stable order."""
    out = Path(out_dir).resolve()
    found: list[Path] = []
    for argument in map(str, arguments):
        if any(c in argument for c in GLOB_CHARACTERS) and not Path(argument).exists():
            matches = [Path(m) for m in sorted(glob.glob(argument, recursive=True)) if Path(m).is_file()]
            suffix = Path(argument).suffix
            if not suffix or any(c in suffix for c in GLOB_CHARACTERS):  # "tiles/*": rasters only
                matches = [m for m in matches if m.suffix.lower() in RASTER_SUFFIXES]
            if not matches:
                raise UserError(f"no raster matches {argument}")
        elif Path(argument).is_dir():
            folder = Path(argument)
            matches = sorted(
                p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES
            )
            if not matches:
                raise UserError(f"folder {folder} holds no raster ({', '.join(RASTER_SUFFIXES)})")
        else:
            matches = [Path(argument)]  # missing or unreadable: the raster check says so
        found.extend(matches)
    unique: dict[Path, None] = {}
    for path in found:
        resolved = path.resolve()
        if not resolved.is_relative_to(out):
            unique.setdefault(resolved, None)
    if not unique:
        raise UserError("no input raster left: every match lies inside the output folder")
    return list(unique)


def output_names(paths: Sequence[Path]) -> list[str]:
    """Each input's folder name in the output: its stem, or stem + a short hash of its path when
    two inputs share a stem (stable from run to run, so a rerun finds its blocks again)."""
    stems = [p.stem for p in paths]
    names = []
    for path, stem in zip(paths, stems, strict=True):
        if stems.count(stem) > 1:
            stem = f"{stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        names.append(stem)
    return names
