"""What a raster is: its grid, CRS, bands and how QGIS places it (read once, no pixels).

A raster that stores no geotransform is addressed in pixel units the way QGIS shows it:
x = column, y = −row (QGIS flips such rasters so they appear upright). One that stores one, even
the identity and without a CRS, keeps it: QGIS draws it there, and the outputs go there too.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import rasterio
from affine import Affine
from osgeo import osr
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from ..errors import UserError

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")
QGIS_PIXEL_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
"""How QGIS places a raster that has no geotransform: one map unit per pixel, y pointing up."""

LOCAL_FRAME = 'LOCAL_CS["raster pixels"]'
"""The frame a raster without a CRS is resampled in (GDAL's warper needs one)."""
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
    transform: Affine  # the file's own transform (identity when it stores none)
    georeferenced: bool  # it has a CRS or stores a geotransform (even the identity)
    nodata: float | None
    notices: tuple[str, ...] = ()
    grid_scale: tuple[float, float] = (1.0, 1.0)  # raster pixels per pixel of this grid (io/grid.py)

    @property
    def map_transform(self) -> Affine:
        """Pixel (col, row) → map (x, y); QGIS's convention when there is no georeferencing."""
        return self.transform if self.georeferenced else QGIS_PIXEL_TRANSFORM * Affine.scale(*self.grid_scale)

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
    crs = dataset.crs if dataset.crs else None
    has_transform = _stores_geotransform(path)
    if not has_transform and crs is None and dataset.gcps[0]:
        raise UserError(
            f"{path} is placed by ground control points only: warp it onto a grid first "
            f"(gdalwarp {path.name} {path.stem}-warped.tif)"
        )
    # As QGIS does: a stored geotransform, even the identity (common for drone frames and scans),
    # is used as it is; only a raster without one gets QGIS's upright pixel convention.
    georeferenced = has_transform or crs is not None
    notices = []
    if crs is None and not has_transform:
        notices.append(
            f"{path.name} has no coordinate reference system: outputs use pixel coordinates "
            "(x = column, y = −row, as QGIS shows such rasters)"
        )
    elif crs is None:
        notices.append(
            f"{path.name} has no coordinate reference system: outputs keep its geotransform "
            f"{tuple(transform)[:6]}, so they lie where QGIS draws it"
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


def _stores_geotransform(path: Path) -> bool:
    """Whether the file stores a geotransform (rasterio reports the identity either way)."""
    from osgeo import gdal

    try:
        dataset = gdal.OpenEx(str(path), gdal.OF_RASTER)
    except RuntimeError:
        return True  # rasterio read it: keep its transform as it is
    return dataset is not None and dataset.GetGeoTransform(can_return_null=True) is not None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
