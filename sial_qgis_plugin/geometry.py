"""Between the canvas and the raster: CRS transforms and pixel windows.

The session works in the raster's pixels and CRS; the canvas may show another CRS. A raster
without a CRS lives in QGIS's pixel coordinates (x = column, y = −row), which is how the canvas
shows it, so no transform is needed then.
"""

from __future__ import annotations

from typing import Any

from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsProject, QgsRectangle


def raster_crs(info: Any) -> QgsCoordinateReferenceSystem:
    """The raster's CRS (``info``: the engine's RasterInfo), invalid when it has none."""
    crs = info.crs
    return QgsCoordinateReferenceSystem(crs.to_wkt()) if crs is not None else QgsCoordinateReferenceSystem()


def crs_transform(
    info: Any, crs: QgsCoordinateReferenceSystem, project: QgsProject, to_raster: bool
) -> QgsCoordinateTransform | None:
    """``crs`` → the raster's CRS (or back), or None where none is needed."""
    raster = raster_crs(info)
    if not raster.isValid() or not crs.isValid() or raster == crs:
        return None
    source, target = (crs, raster) if to_raster else (raster, crs)
    return QgsCoordinateTransform(source, target, project)


def to_raster_crs(geometry: Any, info: Any, crs: QgsCoordinateReferenceSystem, project: QgsProject) -> Any:
    """A point or rectangle in ``crs``, in the raster's CRS (a rectangle as its bounding box)."""
    transform = crs_transform(info, crs, project, to_raster=True)
    if transform is None:
        return geometry
    if isinstance(geometry, QgsRectangle):
        return transform.transformBoundingBox(geometry)
    return transform.transform(geometry)


def pixel_window(info: Any, extent: QgsRectangle) -> tuple[int, int, int, int] | None:
    """``extent`` (in the raster's CRS) as (row0, col0, row1, col1) clipped to the raster, or
    None when it misses the raster."""
    inverse = ~info.map_transform
    corners = [
        inverse * (x, y)
        for x in (extent.xMinimum(), extent.xMaximum())
        for y in (extent.yMinimum(), extent.yMaximum())
    ]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    row0, row1 = max(int(min(rows)), 0), min(int(max(rows)) + 1, info.height)
    col0, col1 = max(int(min(cols)), 0), min(int(max(cols)) + 1, info.width)
    return (row0, col0, row1, col1) if row0 < row1 and col0 < col1 else None
