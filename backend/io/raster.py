"""Reading rasters window by window, with their masks, normalised for a model.

Any GDAL-readable raster works. Validity comes from GDAL's mask machinery (nodata values,
internal or sidecar masks, alpha bands), so every kind of "no data" is honoured the same way.
What the raster is (:class:`RasterInfo`) comes from :mod:`.rasterinfo`; the grid the network
reads it on (its own, or resampled to the model's GSD), from :mod:`.grid`.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import UserError
from ..model.card import InputSpec
from .grid import model_grid
from .rasterinfo import (  # noqa: F401  (re-exported: what a raster is, with how it is read)
    LOCAL_FRAME,
    QGIS_PIXEL_TRANSFORM,
    STATISTICS_SIDE,
    SUPPORTED_DTYPES,
    RasterInfo,
    damaged_block_message,
    inspect_raster,
)


def _resampled(dataset: rasterio.io.DatasetReader, grid: RasterInfo, factor: float) -> WarpedVRT:
    """``dataset`` seen on ``grid``, warped window by window as it is read (averaging when it
    shrinks). A raster without a CRS is warped in a local frame of its own pixel units."""
    local = {} if dataset.crs else {"src_crs": LOCAL_FRAME, "crs": LOCAL_FRAME}
    resampling = Resampling.average if factor < 1 else Resampling.bilinear
    return WarpedVRT(
        dataset,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=resampling,
        **local,
    )


@dataclass
class BandScaling:
    """Per-band ``scale`` and ``offset`` so that ``raw * scale + offset`` is the network input."""

    scale: np.ndarray
    offset: np.ndarray
    description: str
    notices: list[str] = field(default_factory=list)


class RasterSource:
    """A raster opened for a model's input spec: validated, normalised, thread-safe reads."""

    def __init__(self, path: str | Path, spec: InputSpec, pixel_size: float | None = None):
        """``pixel_size``: the raster's pixel size in metres, for one without a CRS; with the
        card's ``gsd_m`` it decides the grid the network reads (:mod:`.grid`)."""
        self.grid = model_grid(inspect_raster(path), spec.gsd_m, pixel_size, spec.gsd_range_m)
        self.info = self.grid.info  # the grid everything downstream works on
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
                if self.grid.scaled:
                    dataset = _resampled(dataset, self.info, self.grid.factor)
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
