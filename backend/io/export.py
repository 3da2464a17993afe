"""Turning the class map into polygons: one multipolygon per class, in a GeoPackage.

GDAL polygonises connected pixels of one class (8-connectivity); those polygons never touch
another of the same class, so gathering them per class is the dissolve. Rasters without
georeferencing get QGIS's pixel convention (y = −row), like every other output.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from osgeo import gdal, ogr

from ..errors import UserError
from ..model.card import ModelCard
from ..progress import Monitor
from .outputs import CLASS_NODATA
from .raster import QGIS_PIXEL_TRANSFORM, inspect_raster

gdal.UseExceptions()
ogr.UseExceptions()


def polygonize_classes(classes: Path, out: Path, card: ModelCard, monitor: Monitor | None = None) -> int:
    """Write layer ``classes`` (class_id, class_name, area) to ``out``; returns the feature count."""
    monitor = monitor or Monitor()
    info = inspect_raster(classes)
    source = gdal.Open(str(classes))
    if not info.georeferenced:
        source = gdal.Translate("", source, format="VRT")
        source.SetGeoTransform(QGIS_PIXEL_TRANSFORM.to_gdal())
    band = source.GetRasterBand(1)
    memory = ogr.GetDriverByName("Memory").CreateDataSource("")
    raw = memory.CreateLayer("raw", None, ogr.wkbPolygon)
    raw.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))

    def progress(fraction: float, _message: str, _data: object) -> int:
        monitor.report(0.9 * fraction, "polygonising")
        return 0 if monitor.cancelled and monitor.cancelled() else 1

    try:
        gdal.Polygonize(band, band.GetMaskBand(), raw, 0, ["8CONNECTED=8"], callback=progress)
    except RuntimeError as exc:
        monitor.check()
        raise UserError(f"cannot polygonise {classes}: {exc}") from None
    parts: dict[int, ogr.Geometry] = defaultdict(lambda: ogr.Geometry(ogr.wkbMultiPolygon))
    for feature in raw:
        class_id = feature.GetField("class_id")
        if class_id != CLASS_NODATA and 0 <= class_id < card.n_classes:
            parts[class_id].AddGeometry(feature.GetGeometryRef())
    tmp = out.with_name(out.name + ".tmp.gpkg")
    tmp.unlink(missing_ok=True)
    target = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp))
    layer = target.CreateLayer("classes", info.ogr_srs(), ogr.wkbMultiPolygon)
    for name, kind in (("class_id", ogr.OFTInteger), ("class_name", ogr.OFTString), ("area", ogr.OFTReal)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    layer.StartTransaction()
    for class_id in sorted(parts):
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class_id", class_id)
        feature.SetField("class_name", card.classes[class_id].name)
        feature.SetField("area", parts[class_id].GetArea())
        feature.SetGeometry(parts[class_id])
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    target = None
    os.replace(tmp, out)
    monitor.report(1.0, "polygons written")
    return len(parts)
