"""Correction clicks: read from a point layer in any CRS, placed on raster pixels, encoded.

Encoding (DIAL's annotations as channels): one channel per class; around each click of class
``k`` channel ``k`` holds ``max(0, 1 - d / radius)``, ``d`` being the distance in pixels between
pixel centres. Where clicks of one class overlap, the nearest click wins (the maximum), which is
exactly a Euclidean distance transform of the click set, cut at ``radius``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from osgeo import ogr, osr

from ..errors import UserError
from ..model.card import ModelCard
from .raster import RasterInfo

ogr.UseExceptions()
osr.UseExceptions()

CLASS_ID_FIELDS = ("class_id", "class", "classid", "label", "value")
CLASS_NAME_FIELDS = ("class_name", "name")


@dataclass(frozen=True)
class Click:
    row: int
    col: int
    class_id: int
    fid: int | None = None  # feature id in the source layer, for messages


@dataclass(frozen=True)
class OutsideClick:
    fid: int | None
    x: float
    y: float


@dataclass
class ClickLoad:
    clicks: list[Click]
    outside: list[OutsideClick]
    notices: list[str]

    def describe_outside(self, limit: int = 3) -> str:
        shown = ", ".join(
            f"fid {c.fid} at ({c.x:.6g}, {c.y:.6g})" if c.fid is not None else f"({c.x:.6g}, {c.y:.6g})"
            for c in self.outside[:limit]
        )
        more = f" and {len(self.outside) - limit} more" if len(self.outside) > limit else ""
        return f"{len(self.outside)} click(s) lie outside the raster: {shown}{more}"


def read_clicks(
    path: str | Path, info: RasterInfo, card: ModelCard, layer_name: str | None = None
) -> ClickLoad:
    """Read point features from any OGR vector (GeoPackage, GeoJSON, shapefile …).

    The class comes from an integer field (``class_id`` or a few common names) or, failing
    that, from a text field holding class names. Points are transformed to the raster's CRS and
    then to its pixels; those outside are returned separately for the caller to report.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"clicks file not found: {path}")
    try:
        source = ogr.Open(str(path))
    except RuntimeError as exc:
        raise UserError(f"{path} is not a vector file GDAL can read ({exc})") from None
    if source is None:
        raise UserError(f"{path} is not a vector file GDAL can read")
    if source.GetLayerCount() == 0:
        raise UserError(f"{path} holds no vector layer")
    layer = _pick_layer(source, layer_name, path)
    defn = layer.GetLayerDefn()
    names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
    lowered = {n.lower(): n for n in names}
    id_field = next((lowered[f] for f in CLASS_ID_FIELDS if f in lowered), None)
    name_field = next((lowered[f] for f in CLASS_NAME_FIELDS if f in lowered), None)
    if id_field is None and name_field is None:
        raise UserError(
            f"layer '{layer.GetName()}' in {path.name} has no class field "
            f"(expected one of {', '.join(CLASS_ID_FIELDS + CLASS_NAME_FIELDS)})"
        )
    notices: list[str] = []
    transform = _coordinate_transform(layer, info, path, notices)
    inverse = ~info.map_transform
    clicks: list[Click] = []
    outside: list[OutsideClick] = []
    for feature in layer:
        geometry = feature.GetGeometryRef()
        if geometry is None or geometry.IsEmpty():
            continue
        class_id = _class_of(feature, id_field, name_field, card, path)
        for x, y in _points(geometry, feature.GetFID(), path):
            if transform is not None:
                try:
                    x, y, *_ = transform.TransformPoint(x, y)
                except RuntimeError:  # not representable in the raster's CRS
                    outside.append(OutsideClick(feature.GetFID(), x, y))
                    continue
            col_f, row_f = inverse * (x, y)
            if not (math.isfinite(col_f) and math.isfinite(row_f)):
                outside.append(OutsideClick(feature.GetFID(), x, y))
                continue
            col, row = math.floor(col_f), math.floor(row_f)
            if 0 <= row < info.height and 0 <= col < info.width:
                clicks.append(Click(row, col, class_id, feature.GetFID()))
            else:
                outside.append(OutsideClick(feature.GetFID(), x, y))
    return ClickLoad(clicks, outside, notices)


def _pick_layer(source: ogr.DataSource, layer_name: str | None, path: Path) -> ogr.Layer:
    if layer_name is not None:
        layer = source.GetLayerByName(layer_name)
        if layer is None:
            raise UserError(f"{path.name} has no layer '{layer_name}'")
        return layer
    layer = source.GetLayerByName("clicks")
    if layer is not None:
        return layer
    for i in range(source.GetLayerCount()):
        candidate = source.GetLayerByIndex(i)
        if ogr.GT_Flatten(candidate.GetGeomType()) in (ogr.wkbPoint, ogr.wkbMultiPoint, ogr.wkbUnknown):
            return candidate
    raise UserError(f"{path.name} has no point layer")


def _coordinate_transform(
    layer: ogr.Layer, info: RasterInfo, path: Path, notices: list[str]
) -> osr.CoordinateTransformation | None:
    layer_srs = _declared_srs(layer)
    raster_srs = info.ogr_srs()
    if raster_srs is None:
        if layer_srs is not None:
            notices.append(
                f"the raster has no CRS: click coordinates in {path.name} are read as pixel "
                "coordinates (x = column, y = −row)"
            )
        return None
    if layer_srs is None:
        notices.append(f"{path.name} declares no CRS: clicks are assumed to be in {info.crs_label}")
        return None
    layer_srs = layer_srs.Clone()
    layer_srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    if layer_srs.IsSame(raster_srs):
        return None
    try:
        return osr.CoordinateTransformation(layer_srs, raster_srs)
    except RuntimeError as exc:
        raise UserError(f"cannot transform the clicks' CRS to the raster's CRS: {exc}") from None


def _declared_srs(layer: ogr.Layer) -> osr.SpatialReference | None:
    """The layer's CRS, or None when it has none (GeoPackage stores "Undefined … SRS" then)."""
    srs = layer.GetSpatialRef()
    undefined = (srs.GetName() or "").startswith("Undefined") if srs is not None else True
    if srs is None or (undefined and not srs.GetAuthorityCode(None)):
        return None
    return srs


def _class_of(
    feature: ogr.Feature, id_field: str | None, name_field: str | None, card: ModelCard, path: Path
) -> int:
    fid = feature.GetFID()
    if id_field is not None and feature.IsFieldSetAndNotNull(id_field):
        raw = feature.GetField(id_field)
        if isinstance(raw, float) and not (math.isfinite(raw) and raw.is_integer()):
            raise UserError(
                f"click fid {fid} in {path.name} has class {raw!r}: a class is a whole number "
                f"0–{card.n_classes - 1} or a class name"
            )
        try:
            class_id = int(raw)
        except (TypeError, ValueError):
            class_id = card.class_index(str(raw)) if isinstance(raw, str) else None
            if class_id is None:
                raise UserError(
                    f"click fid {fid} in {path.name}: class '{raw}' is not a class of the model"
                ) from None
        if not 0 <= class_id < card.n_classes:
            raise UserError(
                f"click fid {fid} in {path.name} has class {class_id}; the model's classes are "
                f"0–{card.n_classes - 1} ({', '.join(c.name for c in card.classes)})"
            )
        return class_id
    if name_field is not None and feature.IsFieldSetAndNotNull(name_field):
        name = str(feature.GetField(name_field))
        class_id = card.class_index(name)
        if class_id is None:
            raise UserError(f"click fid {fid} in {path.name}: class '{name}' is not a class of the model")
        return class_id
    raise UserError(f"click fid {fid} in {path.name} has no class")


def _points(geometry: ogr.Geometry, fid: int, path: Path) -> Iterable[tuple[float, float]]:
    flat = ogr.GT_Flatten(geometry.GetGeometryType())
    if flat == ogr.wkbPoint:
        yield geometry.GetX(), geometry.GetY()
    elif flat == ogr.wkbMultiPoint:
        for i in range(geometry.GetGeometryCount()):
            part = geometry.GetGeometryRef(i)
            yield part.GetX(), part.GetY()
    else:
        raise UserError(f"feature fid {fid} in {path.name} is a {geometry.GetGeometryName()}, not a point")


def write_clicks(
    path: str | Path,
    clicks: Sequence[Click],
    info: RasterInfo,
    card: ModelCard,
    layer_name: str = "clicks",
    epsg: int | None = None,
) -> Path:
    """Write clicks as a GeoPackage point layer at their pixel centres (raster CRS or ``epsg``)."""
    path = Path(path)
    driver = ogr.GetDriverByName("GPKG")
    if path.exists():
        driver.DeleteDataSource(str(path))
    source = driver.CreateDataSource(str(path))
    raster_srs = info.ogr_srs()
    srs = raster_srs
    transform = None
    if epsg is not None:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
        srs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if raster_srs is None:
            raise UserError("cannot write clicks in another CRS for a raster without CRS")
        transform = osr.CoordinateTransformation(raster_srs, srs)
    layer = source.CreateLayer(layer_name, srs, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("class_name", ogr.OFTString))
    layer.StartTransaction()
    for click in clicks:
        x, y = info.map_transform * (click.col + 0.5, click.row + 0.5)
        if transform is not None:
            x, y, *_ = transform.TransformPoint(x, y)
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class_id", click.class_id)
        feature.SetField("class_name", card.classes[click.class_id].name)
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(x, y)
        feature.SetGeometry(point)
        layer.CreateFeature(feature)
    layer.CommitTransaction()
    source = None
    return path


def encode_clicks(
    clicks: Sequence[Click], row: int, col: int, height: int, width: int, n_classes: int, radius: int
) -> np.ndarray:
    """Click channels (float32, ``n_classes`` × height × width) of a window."""
    channels = np.zeros((n_classes, height, width), dtype=np.float32)
    reach = radius - 1  # pixels further than radius - 1 (integer offsets) get 0
    for click in clicks:
        r0, r1 = max(click.row - reach, row), min(click.row + reach + 1, row + height)
        c0, c1 = max(click.col - reach, col), min(click.col + reach + 1, col + width)
        if r0 >= r1 or c0 >= c1:
            continue
        dy = np.arange(r0, r1, dtype=np.float32)[:, None] - click.row
        dx = np.arange(c0, c1, dtype=np.float32)[None, :] - click.col
        cone = np.clip(1.0 - np.sqrt(dy * dy + dx * dx) / radius, 0.0, 1.0)
        target = channels[click.class_id, r0 - row : r1 - row, c0 - col : c1 - col]
        np.maximum(target, cone, out=target)
    return channels


def clicks_key(clicks: Iterable[Click]) -> list[tuple[int, int, int]]:
    """A canonical, order-free description of a click set (for caches and comparisons)."""
    return sorted({(c.row, c.col, c.class_id) for c in clicks})
