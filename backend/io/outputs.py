"""Writing the prediction outputs: GeoTIFFs on the input's grid, the patch layer, run.json.

Everything is written into a hidden staging folder inside the output folder and moved into place
only when complete; ``run.json`` goes last, so a folder with ``run.json`` holds a finished run
and an interrupted run leaves the previous outputs (or nothing) behind, never half a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from osgeo import gdal, ogr
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..errors import UserError
from ..model.card import ModelCard
from ..system.ownership import check_replaceable, record_written, staging_folder
from .overviews import Rect, refresh_overviews
from .raster import RasterInfo
from .styles import write_styles
from .tiling import Patch

gdal.UseExceptions()

CLASSES_FILE = "classes.tif"
UNCERTAINTY_FILE = "uncertainty.tif"
PATCHES_FILE = "patches.gpkg"
RUN_FILE = "run.json"
CLASS_NODATA = 255
BLOCK = 256
STAGING_PREFIX = ".sial-staging-"
MAP_FILES = (
    CLASSES_FILE,
    UNCERTAINTY_FILE,
    "classes.qml",
    "uncertainty.qml",
    "classes.tif.aux.xml",
    "uncertainty.tif.aux.xml",
)
"""The two maps with their styles and GDAL's sidecars."""
PUBLISHED_FILES = (*MAP_FILES, PATCHES_FILE, RUN_FILE)
"""What a prediction publishes in its output folder (checked before any work is done)."""


def geotiff_profile(info: RasterInfo, dtype: str, nodata: float) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": info.width,
        "height": info.height,
        "count": 1,
        "dtype": dtype,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "predictor": 3 if dtype == "float32" else 1,
        "zlevel": 1,  # fast; class maps and smooth uncertainty still compress well
        "BIGTIFF": "IF_SAFER",
    }
    if info.georeferenced:
        profile["transform"] = info.transform
        if info.crs is not None:
            profile["crs"] = info.crs
    return profile


def overview_factors(width: int, height: int, smallest: int = BLOCK) -> list[int]:
    factors, factor = [], 2
    while max(width, height) / factor >= smallest / 2 and factor <= 1024:
        factors.append(factor)
        factor *= 2
    return factors


class OutputStaging:
    """A hidden folder inside ``out_dir`` where outputs are written before publication.

    The output folder may be one the user already had: publication replaces only files an
    earlier run of this program wrote there (see :mod:`backend.system.ownership`) and refuses before
    any work if a file of the same name is someone else's.
    """

    def __init__(
        self, out_dir: str | Path, prefix: str = STAGING_PREFIX, names: Sequence[str] = PUBLISHED_FILES
    ):
        """``names``: what will be published, checked now; ``prefix``: the staging folder's (a
        distributed run's blocks name their host in it, so only that host's dead staging is cleared)."""
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UserError(f"output path {self.out_dir} exists and is not a folder")
        if self.out_dir.is_dir():
            check_replaceable(self.out_dir, names)
        self.created_folder = not self.out_dir.exists()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create output folder {self.out_dir}: {exc.strerror}") from None
        if not os.access(self.out_dir, os.W_OK):
            raise UserError(f"output folder {self.out_dir} is not writable")
        self.path = staging_folder(self.out_dir, prefix)

    def file(self, name: str) -> Path:
        return self.path / name

    def publish(self, run: dict[str, Any]) -> list[str]:
        """Move every staged file into place; ``run.json`` (the completion mark) goes last.

        Everything is written before anything moves: a disk that fills up fails the run with
        nothing published, and the moves themselves need no space."""
        names = sorted(p.name for p in self.path.iterdir() if p.is_file())
        check_replaceable(self.out_dir, [*names, RUN_FILE])
        run["files"] = names
        run_path = self.path / RUN_FILE
        run_path.write_text(json.dumps(run, indent=2) + "\n")
        record_written(self.out_dir, [*names, RUN_FILE])
        (self.out_dir / RUN_FILE).unlink(missing_ok=True)
        for name in names:
            os.replace(self.path / name, self.out_dir / name)
        os.replace(run_path, self.out_dir / RUN_FILE)
        self.discard()
        return names

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def abandon(self) -> None:
        """After a failure: the staged files, and the output folder if this run made it and
        nothing else is in it."""
        self.discard()
        if self.created_folder:
            with contextlib.suppress(OSError):
                self.out_dir.rmdir()


@dataclass
class MapBlock:
    """Finished output for a window: class indices, uncertainty and validity."""

    row: int
    col: int
    classes: np.ndarray  # uint8, CLASS_NODATA where invalid
    uncertainty: np.ndarray  # float32, NaN where invalid
    valid: np.ndarray
    probabilities: np.ndarray | None = None  # classes × h × w, only when asked for (see Predictor)

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.classes.shape[1], self.classes.shape[0])


class MapWriter:
    """Writes the class map and the uncertainty map window by window."""

    def __init__(self, directory: Path, info: RasterInfo, card: ModelCard, threads: int | str = "ALL_CPUS"):
        """``threads``: GDAL compresses the maps' blocks on these threads, as its block cache
        flushes and at the close, while the network idles between batches (6000²: the whole job
        0.6-1 s sooner on 2 cores, BENCHMARKS.md); a Dask worker passes its own share."""
        self.info = info
        self.card = card
        self.classes_path = directory / CLASSES_FILE
        self.uncertainty_path = directory / UNCERTAINTY_FILE
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.classes = rasterio.open(
                self.classes_path, "w", **geotiff_profile(info, "uint8", CLASS_NODATA), NUM_THREADS=threads
            )
            self.uncertainty = rasterio.open(
                self.uncertainty_path,
                "w",
                **geotiff_profile(info, "float32", float("nan")),
                NUM_THREADS=threads,
            )
        self.classes.write_colormap(
            1, {c.index: (*c.rgb, 255) for c in card.classes} | {CLASS_NODATA: (0, 0, 0, 0)}
        )
        self.classes.set_band_description(1, "class")
        self.uncertainty.set_band_description(1, "uncertainty")

    def write(self, block: MapBlock) -> None:
        self.classes.write(block.classes, 1, window=block.window)
        self.uncertainty.write(block.uncertainty, 1, window=block.window)

    def close(self) -> None:
        self.classes.close()
        self.uncertainty.close()


class MapUpdater(MapWriter):
    """Existing class and uncertainty maps opened for in-place window updates."""

    def __init__(self, directory: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.classes = rasterio.open(directory / CLASSES_FILE, "r+")
            self.uncertainty = rasterio.open(directory / UNCERTAINTY_FILE, "r+")

    def read(self, patch: Patch) -> MapBlock:
        """The current maps over ``patch`` (validity: where the uncertainty is not NaN)."""
        window = Window(patch.col, patch.row, patch.width, patch.height)
        uncertainty = self.uncertainty.read(1, window=window)
        classes = self.classes.read(1, window=window)
        return MapBlock(patch.row, patch.col, classes, uncertainty, ~np.isnan(uncertainty))


def finish_maps(
    directory: Path,
    card: ModelCard,
    tags: dict[str, str],
    fixed_range: bool,
    changed: Sequence[Rect] | None = None,
) -> None:
    """Overviews (so QGIS draws fast), class names, metadata and QGIS styles.

    ``changed``: the only windows written since the overviews were last built (an update in
    place); their overviews are refreshed there alone where :mod:`.overviews` finds it pays.

    The heatmap spans 0..1 when the measure is comparable between runs (entropy, margin);
    otherwise (MC dropout, ODIN) its 2nd to 98th percentile, read from the smallest overview.
    """
    # The network is done: every core; internal overviews at the maps' own fast zlevel (GDAL's
    # default, 6, costs 0.3 s more at 6000² to save 0.36 of the class map's 3.2 MB, 0.5 % of the
    # uncertainty map).
    with warnings.catch_warnings(), rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS", ZLEVEL_OVERVIEW="1"):
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        for name, resampling in ((CLASSES_FILE, Resampling.nearest), (UNCERTAINTY_FILE, Resampling.average)):
            refreshed = changed is not None and refresh_overviews(directory / name, changed, resampling)
            with rasterio.open(directory / name, "r+") as dataset:
                factors = overview_factors(dataset.width, dataset.height)
                if factors and not refreshed:
                    dataset.build_overviews(factors, resampling)
                dataset.update_tags(**tags)
    dataset = gdal.Open(str(directory / CLASSES_FILE), gdal.GA_Update)
    dataset.GetRasterBand(1).SetCategoryNames([c.name for c in card.classes])
    dataset = None
    heatmap_range = (0.0, 1.0) if fixed_range else _percentile_range(directory / UNCERTAINTY_FILE)
    write_styles(directory / CLASSES_FILE, directory / UNCERTAINTY_FILE, card.classes, heatmap_range)


def _percentile_range(path: Path) -> tuple[float, float]:
    with rasterio.open(path) as dataset:
        factors = dataset.overviews(1)
        shape = (dataset.height // factors[-1], dataset.width // factors[-1]) if factors else dataset.shape
        values = dataset.read(1, out_shape=shape)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values, [2, 98])
    return float(low), float(max(high, low + 1e-6))


@dataclass
class PatchScore:
    patch: Patch
    score: float | None  # None: no valid pixel
    valid_fraction: float


def rank_patches(scores: Sequence[PatchScore]) -> list[tuple[int, PatchScore]]:
    """(rank, patch) with rank 1 the most uncertain; patches without valid pixels are left out.

    Ties keep raster order so rankings are deterministic.
    """
    scored = [s for s in scores if s.score is not None]
    scored.sort(key=lambda s: (-s.score, s.patch.index))  # type: ignore[operator]
    return [(rank, s) for rank, s in enumerate(scored, start=1)]


def write_patches(path: Path, info: RasterInfo, scores: Sequence[PatchScore], acquisition: str) -> int:
    """The ``patches`` polygon layer, in the raster's CRS (or pixel coordinates).

    Built in memory, then written in one go: SQLite meets a full disk with errors that GDAL raises
    from a destructor (a traceback Python can only print) or words that do not say "disk full"; a
    plain file write says ``ENOSPC``, which every caller turns into one clear line.
    """
    memory = f"/vsimem/sial-patches-{uuid.uuid4().hex}.gpkg"
    try:
        ranked = _fill_patches(memory, info, scores, acquisition)
        handle = gdal.VSIFOpenL(memory, "rb")
        try:
            data = gdal.VSIFReadL(1, gdal.VSIStatL(memory).size, handle)
        finally:
            gdal.VSIFCloseL(handle)
    finally:
        gdal.Unlink(memory)
    path.write_bytes(data)
    return ranked


def _fill_patches(name: str, info: RasterInfo, scores: Sequence[PatchScore], acquisition: str) -> int:
    source = ogr.GetDriverByName("GPKG").CreateDataSource(name)
    layer = source.CreateLayer("patches", info.ogr_srs(), ogr.wkbPolygon, options=["FID=fid"])
    for name, kind in (
        ("rank", ogr.OFTInteger),
        ("score", ogr.OFTReal),
        ("patch_id", ogr.OFTInteger),
        ("row", ogr.OFTInteger),
        ("col", ogr.OFTInteger),
        ("width", ogr.OFTInteger),
        ("height", ogr.OFTInteger),
        ("valid_fraction", ogr.OFTReal),
        ("acquisition", ogr.OFTString),
        ("status", ogr.OFTString),
    ):
        layer.CreateField(ogr.FieldDefn(name, kind))
    transform = info.map_transform
    ranked = rank_patches(scores)
    layer.StartTransaction()
    for rank, s in ranked:
        p = s.patch
        ring = ogr.Geometry(ogr.wkbLinearRing)
        for col, row in (
            (p.col, p.row),
            (p.col + p.width, p.row),
            (p.col + p.width, p.row + p.height),
            (p.col, p.row + p.height),
            (p.col, p.row),
        ):
            ring.AddPoint_2D(*(transform * (col, row)))
        polygon = ogr.Geometry(ogr.wkbPolygon)
        polygon.AddGeometry(ring)
        feature = ogr.Feature(layer.GetLayerDefn())
        for name, value in (
            ("rank", rank),
            ("score", float(s.score)),  # type: ignore[arg-type]
            ("patch_id", p.index),
            ("row", p.row),
            ("col", p.col),
            ("width", p.width),
            ("height", p.height),
            ("valid_fraction", s.valid_fraction),
            ("acquisition", acquisition),
            ("status", "todo"),
        ):
            feature.SetField(name, value)
        feature.SetGeometry(polygon)
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    source = None
    return len(ranked)
