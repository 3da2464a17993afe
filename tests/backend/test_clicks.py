import numpy as np
import pytest
from osgeo import ogr, osr
from rasterio.warp import transform as warp_transform

from backend.errors import UserError
from backend.io.clicks import Click, encode_clicks, read_clicks, write_clicks
from backend.io.raster import inspect_raster
from tests.helpers import UTM, make_card, random_image, write_raster

CARD = make_card()


def write_points(path, points, epsg=None, fields=(("class_id", ogr.OFTInteger),), geometry=ogr.wkbPoint):
    """A GeoPackage written with OGR directly (independent of backend.io.clicks.write_clicks)."""
    driver = ogr.GetDriverByName("GPKG")
    source = driver.CreateDataSource(str(path))
    srs = None
    if epsg:
        srs = osr.SpatialReference()
        srs.ImportFromEPSG(epsg)
    layer = source.CreateLayer("clicks", srs, geometry)
    for name, kind in fields:
        layer.CreateField(ogr.FieldDefn(name, kind))
    for x, y, *values in points:
        feature = ogr.Feature(layer.GetLayerDefn())
        for (name, _), value in zip(fields, values, strict=True):
            feature.SetField(name, value)
        if geometry == ogr.wkbPoint:
            feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({x} {y})"))
        else:
            feature.SetGeometry(ogr.CreateGeometryFromWkt(f"LINESTRING ({x} {y}, {x + 1} {y + 1})"))
        layer.CreateFeature(feature)
    source = None
    return path


@pytest.fixture
def utm_raster(tmp_path):
    return inspect_raster(write_raster(tmp_path / "utm.tif", random_image(300, 400)))


def test_clicks_in_wgs84_land_on_the_right_pixels(tmp_path, utm_raster):
    pixels = [(10, 20, 0), (150, 399, 3), (299, 0, 4)]
    xs = [UTM.c + (col + 0.5) * UTM.a for _, col, _ in pixels]
    ys = [UTM.f + (row + 0.5) * UTM.e for row, _, _ in pixels]
    lons, lats = warp_transform("EPSG:32640", "EPSG:4326", xs, ys)
    path = write_points(
        tmp_path / "c.gpkg",
        [(lon, lat, c) for lon, lat, (_, _, c) in zip(lons, lats, pixels, strict=True)],
        4326,
    )
    loaded = read_clicks(path, utm_raster, CARD)
    assert [(c.row, c.col, c.class_id) for c in loaded.clicks] == pixels
    assert not loaded.outside


def test_write_clicks_round_trips_in_another_crs(tmp_path, utm_raster):
    clicks = [Click(5, 6, 1), Click(250, 390, 2)]
    write_clicks(tmp_path / "w.gpkg", clicks, utm_raster, CARD, epsg=3857)
    again = read_clicks(tmp_path / "w.gpkg", utm_raster, CARD)
    assert [(c.row, c.col, c.class_id) for c in again.clicks] == [(5, 6, 1), (250, 390, 2)]


def test_clicks_outside_the_raster_are_reported_not_dropped_silently(tmp_path, utm_raster):
    x_inside, y_inside = UTM * (10.5, 10.5)
    x_out, y_out = UTM * (-30, 50)
    path = write_points(tmp_path / "c.gpkg", [(x_inside, y_inside, 1), (x_out, y_out, 2)], 32640)
    loaded = read_clicks(path, utm_raster, CARD)
    assert len(loaded.clicks) == 1 and len(loaded.outside) == 1
    assert "1 click(s) lie outside the raster" in loaded.describe_outside()


def test_class_names_are_accepted_instead_of_ids(tmp_path, utm_raster):
    x, y = UTM * (3.5, 4.5)
    path = write_points(
        tmp_path / "n.gpkg", [(x, y, "Water")], 32640, fields=(("class_name", ogr.OFTString),)
    )
    assert read_clicks(path, utm_raster, CARD).clicks == [Click(4, 3, 4, 1)]


def test_layer_without_crs_is_read_in_the_raster_crs_with_a_notice(tmp_path, utm_raster):
    x, y = UTM * (7.5, 8.5)
    loaded = read_clicks(write_points(tmp_path / "n.gpkg", [(x, y, 0)]), utm_raster, CARD)
    assert loaded.clicks == [Click(8, 7, 0, 1)]
    assert any("declares no CRS" in n for n in loaded.notices)


def test_raster_without_crs_reads_clicks_in_qgis_pixel_coordinates(tmp_path):
    info = inspect_raster(write_raster(tmp_path / "p.tif", random_image(50, 60), crs=None, transform=None))
    path = write_points(tmp_path / "p.gpkg", [(12.5, -30.5, 2)])  # QGIS: x = column, y = -row
    assert read_clicks(path, info, CARD).clicks == [Click(30, 12, 2, 1)]


@pytest.mark.parametrize(
    "points,fields,geometry,message",
    [
        ([(1, 1, 9)], (("class_id", ogr.OFTInteger),), ogr.wkbPoint, "has class 9"),
        ([(1, 1, "lava")], (("class_name", ogr.OFTString),), ogr.wkbPoint, "'lava' is not a class"),
        ([(1, 1, 1.0)], (("weight", ogr.OFTReal),), ogr.wkbPoint, "no class field"),
        ([(1, 1, 1)], (("class_id", ogr.OFTInteger),), ogr.wkbLineString, "not a point"),
    ],
)
def test_bad_click_layers_give_one_clear_error(tmp_path, utm_raster, points, fields, geometry, message):
    x, y = UTM * (1.5, 1.5)
    shifted = [(x, y, *p[2:]) for p in points]
    path = write_points(tmp_path / "bad.gpkg", shifted, 32640, fields=fields, geometry=geometry)
    with pytest.raises(UserError, match=message):
        read_clicks(path, utm_raster, CARD)


def test_missing_or_unreadable_click_files(tmp_path, utm_raster):
    with pytest.raises(UserError, match="not found"):
        read_clicks(tmp_path / "none.gpkg", utm_raster, CARD)
    (tmp_path / "text.gpkg").write_text("nope")
    with pytest.raises(UserError, match="not a vector file"):
        read_clicks(tmp_path / "text.gpkg", utm_raster, CARD)


def test_encoding_is_a_distance_cone_per_class():
    channels = encode_clicks([Click(20, 30, 2), Click(22, 30, 2), Click(5, 5, 0)], 0, 0, 40, 50, 5, radius=10)
    assert channels.shape == (5, 40, 50)
    assert channels[2, 20, 30] == 1.0 and channels[2, 22, 30] == 1.0
    assert channels[2, 20, 35] == pytest.approx(0.5)  # 5 px away: 1 - 5/10
    assert channels[2, 21, 30] == pytest.approx(0.9)  # nearest click wins
    assert channels[2, 20, 40] == 0.0 and channels[2, 20, 41] == 0.0  # radius reached
    assert channels[0, 5, 5] == 1.0 and channels[[1, 3, 4]].max() == 0.0
    # Values fall off with distance and never leave [0, 1].
    assert channels.min() >= 0.0 and channels.max() <= 1.0


def test_encoding_of_a_window_matches_the_whole_image_encoding():
    clicks = [Click(100, 100, 1), Click(130, 250, 3), Click(2, 299, 0)]
    whole = encode_clicks(clicks, 0, 0, 300, 300, 5, radius=12)
    window = encode_clicks(clicks, 90, 230, 64, 64, 5, radius=12)
    np.testing.assert_array_equal(window, whole[:, 90:154, 230:294])
    assert window.max() > 0
