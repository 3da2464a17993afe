"""Reading rasters window by window, with their masks, normalised for a model.

Any GDAL-readable raster works. Validity comes from GDAL's mask machinery (nodata values,
internal or sidecar masks, alpha bands), so every kind of "no data" is honoured the same way.
A raster without georeferencing is addressed in pixel units the way QGIS shows it: x = column,
y = −row (QGIS flips such rasters so they appear upright).
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from osgeo import osr
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..errors import UserError
from ..model.card import InputSpec

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
QGIS_PIXEL_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
"""How QGIS places a raster that has no geotransform: one map unit per pixel, y pointing up."""

STATISTICS_SIDE = 1024
"""Longest side of the decimated read used for statistics (percentiles, the all-nodata check)."""


@dataclass(frozen=True)
class RasterInfo:
    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine  # the file's own transform (identity when not georeferenced)
    georeferenced: bool
    nodata: float | None
    notices: tuple[str, ...] = ()

    @property
    def map_transform(self) -> Affine:
        """Pixel (col, row) → map (x, y); QGIS's convention when there is no georeferencing."""
        return self.transform if self.georeferenced else QGIS_PIXEL_TRANSFORM

    def ogr_srs(self) -> osr.SpatialReference | None:
        """The CRS for OGR layers (x = easting/longitude order), or None without a CRS."""
        if self.crs is None:
            return None
        srs = osr.SpatialReference()
        srs.ImportFromWkt(self.crs.to_wkt())
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        return srs

    @property
    def crs_label(self) -> str:
        if self.crs is None:
            return "none (pixel coordinates)"
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else self.crs.to_string()


def inspect_raster(path: str | Path) -> RasterInfo:
    """Open ``path`` and describe it; every reason it cannot be used is one :class:`UserError`."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"raster not found: {path}")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a raster")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is an empty file, not a raster")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(path) as dataset:
                return _describe(path, dataset)
        except RasterioIOError as exc:
            raise UserError(f"{path} is not a raster GDAL can read ({_first_line(exc)})") from None


def _describe(path: Path, dataset: rasterio.io.DatasetReader) -> RasterInfo:
    if dataset.width == 0 or dataset.height == 0 or dataset.count == 0:
        raise UserError(f"{path} has no pixels ({dataset.width} × {dataset.height} × {dataset.count})")
    dtypes = set(dataset.dtypes)
    if len(dtypes) != 1:
        raise UserError(f"{path} mixes band data types ({', '.join(sorted(dtypes))})")
    dtype = dataset.dtypes[0]
    if dtype not in SUPPORTED_DTYPES:
        raise UserError(f"{path} has {dtype} pixels; supported: {', '.join(SUPPORTED_DTYPES)}")
    transform = dataset.transform
    georeferenced = not (transform.is_identity and dataset.crs is None)
    notices = []
    crs = dataset.crs if dataset.crs else None
    if crs is None:
        notices.append(
            f"{path.name} has no coordinate reference system: outputs use pixel coordinates "
            "(x = column, y = −row, as QGIS shows such rasters)"
        )
    if not transform.is_rectilinear:
        raise UserError(f"{path} has a rotated geotransform; warp it to a north-up grid first")
    return RasterInfo(
        path=path,
        width=dataset.width,
        height=dataset.height,
        count=dataset.count,
        dtype=dtype,
        crs=crs,
        transform=transform,
        georeferenced=georeferenced,
        nodata=dataset.nodata,
        notices=tuple(notices),
    )


_BLOCK_OFFSETS = re.compile(r"X offset (\d+), Y offset (\d+)")


def damaged_block_message(
    path: Path, exc: Exception, dataset: rasterio.io.DatasetReader, window: Window | None
) -> str:
    """ "R.tif is damaged: the block at row …, column … cannot be read" from GDAL's failure."""
    block_rows, block_cols = dataset.block_shapes[0]
    found = _BLOCK_OFFSETS.search(str(exc))
    if found:
        where = f"the block at row {int(found[2]) * block_rows}, column {int(found[1]) * block_cols}"
    elif window is not None:
        where = f"the pixels from row {int(window.row_off)}, column {int(window.col_off)}"
    else:
        where = "part of it"
    return f"{path} is damaged: {where} cannot be read ({_first_line(exc).split(': ')[-1]})"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class BandScaling:
    """Per-band ``scale`` and ``offset`` so that ``raw * scale + offset`` is the network input."""

    scale: np.ndarray
    offset: np.ndarray
    description: str
    notices: list[str] = field(default_factory=list)


class RasterSource:
    """A raster opened for a model's input spec: validated, normalised, thread-safe reads."""

    def __init__(self, path: str | Path, spec: InputSpec):
        self.info = inspect_raster(path)
        self.spec = spec
        self._local = threading.local()
        self._handles: list[rasterio.io.DatasetReader] = []
        self._lock = threading.Lock()
        needed = max(spec.bands)
        if self.info.count < needed:
            raise UserError(
                f"{self.info.path.name} has {self.info.count} band(s) but the model reads bands "
                f"{', '.join(map(str, spec.bands))} ({', '.join(spec.band_names)})"
            )
        self.scaling = self._scaling()

    # ------------------------------------------------------------------ handles

    def _dataset(self) -> rasterio.io.DatasetReader:
        dataset = getattr(self._local, "dataset", None)
        if dataset is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                dataset = rasterio.open(self.info.path)
            self._local.dataset = dataset
            with self._lock:
                self._handles.append(dataset)
        return dataset

    def close(self) -> None:
        with self._lock:
            for dataset in self._handles:
                dataset.close()
            self._handles.clear()
        self._local = threading.local()

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def read_raw(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw band values (float32, bands × h × w) and validity (bool, h × w) of a window.

        The window may reach past the raster (small rasters padded to one tile): that part is
        zero and invalid.
        """
        data = np.zeros((self.spec.bands.__len__(), height, width), dtype=np.float32)
        valid = np.zeros((height, width), dtype=bool)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.info.height), min(col + width, self.info.width)
        if r1 <= r0 or c1 <= c0:
            return data, valid
        window = Window(c0, r0, c1 - c0, r1 - r0)
        dataset = self._dataset()
        bands = list(self.spec.bands)
        inner = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
        with self._readable(window):
            data[(slice(None), *inner)] = dataset.read(bands, window=window, out_dtype=np.float32)
            masks = dataset.read_masks(bands, window=window)
        valid[inner] = np.all(masks > 0, axis=0)
        return data, valid

    @contextmanager
    def _readable(self, window: Window | None) -> Iterator[None]:
        """Turn GDAL's read failure into one line naming the damaged block."""
        try:
            yield
        except RasterioIOError as exc:
            raise UserError(damaged_block_message(self.info.path, exc, self._dataset(), window)) from None

    def read_normalized(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Network input for a window (float32, bands × h × w; invalid pixels 0) and validity."""
        data, valid = self.read_raw(row, col, height, width)
        data *= self.scaling.scale[:, None, None]
        data += self.scaling.offset[:, None, None]
        data[:, ~valid] = 0.0
        return data, valid

    def read_valid(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Validity alone (cheaper than a full read)."""
        valid = np.zeros((height, width), dtype=bool)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.info.height), min(col + width, self.info.width)
        if r1 > r0 and c1 > c0:
            window = Window(c0, r0, c1 - c0, r1 - r0)
            with self._readable(window):
                masks = self._dataset().read_masks(list(self.spec.bands), window=window)
            valid[r0 - row : r1 - row, c0 - col : c1 - col] = np.all(masks > 0, axis=0)
        return valid

    # ------------------------------------------------------------------ statistics

    def overview_sample(self) -> tuple[np.ndarray, np.ndarray]:
        """A decimated read of the whole raster (uses overviews when the file has them)."""
        factor = max(1, int(np.ceil(max(self.info.width, self.info.height) / STATISTICS_SIDE)))
        shape = (max(1, self.info.height // factor), max(1, self.info.width // factor))
        dataset = self._dataset()
        bands = list(self.spec.bands)
        with self._readable(None):
            data = dataset.read(bands, out_shape=(len(bands), *shape), out_dtype=np.float32)
            masks = dataset.read_masks(bands, out_shape=(len(bands), *shape))
        return data, np.all(masks > 0, axis=0)

    def has_valid_pixels(self) -> bool:
        """False when every pixel is nodata (decimated check, confirmed at full resolution)."""
        _, valid = self.overview_sample()
        if valid.any():
            return True
        dataset = self._dataset()
        for _, window in dataset.block_windows(1):
            with self._readable(window):
                masks = dataset.read_masks(list(self.spec.bands), window=window)
            if np.any(np.all(masks > 0, axis=0)):
                return True
        return False

    def _scaling(self) -> BandScaling:
        norm = self.spec.normalization
        mean = np.asarray(norm.mean, dtype=np.float32)
        std = np.asarray(norm.std, dtype=np.float32)
        notices: list[str] = []
        if norm.method == "fixed" and self.info.dtype == self.spec.dtype:
            low = np.asarray(norm.min, dtype=np.float32)
            high = np.asarray(norm.max, dtype=np.float32)
            description = f"fixed range {norm.min}–{norm.max}"
        else:
            if norm.method == "fixed":
                notices.append(
                    f"the model expects {self.spec.dtype} pixels but {self.info.path.name} holds "
                    f"{self.info.dtype}: each band is stretched between its "
                    f"{norm.percentiles[0]:g}th and {norm.percentiles[1]:g}th percentiles instead"
                )
            data, valid = self.overview_sample()
            if not valid.any():
                raise UserError(f"every pixel of {self.info.path.name} is nodata")
            low = np.percentile(data[:, valid], norm.percentiles[0], axis=1).astype(np.float32)
            high = np.percentile(data[:, valid], norm.percentiles[1], axis=1).astype(np.float32)
            high = np.where(high > low, high, low + 1.0)
            description = (
                f"percentile stretch p{norm.percentiles[0]:g}={low.tolist()} "
                f"p{norm.percentiles[1]:g}={high.tolist()}"
            )
        # (raw - low) / (high - low) then (v - mean) / std, folded into one multiply-add.
        scale = 1.0 / ((high - low) * std)
        offset = -low * scale - mean / std
        return BandScaling(scale.astype(np.float32), offset.astype(np.float32), description, notices)


class MemoryRasterSource(RasterSource):
    """A raster read once and kept in memory (raw values and validity): for training loops that
    read thousands of random crops, where decoding compressed blocks again each time would cost
    more than the network."""

    def __init__(self, path: str | Path, spec: InputSpec):
        super().__init__(path, spec)
        dataset = self._dataset()
        bands = list(spec.bands)
        with self._readable(None):
            self._raw = dataset.read(bands)
            self._valid = np.all(dataset.read_masks(bands) > 0, axis=0)
        self.close()

    def read_raw(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        data = np.zeros((len(self.spec.bands), height, width), dtype=np.float32)
        valid = np.zeros((height, width), dtype=bool)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.info.height), min(col + width, self.info.width)
        if r1 > r0 and c1 > c0:
            inner = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
            data[(slice(None), *inner)] = self._raw[:, r0:r1, c0:c1]
            valid[inner] = self._valid[r0:r1, c0:c1]
        return data, valid

    def read_valid(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        return self.read_raw(row, col, height, width)[1]
