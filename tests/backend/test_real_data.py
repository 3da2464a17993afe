"""The engine on the shared real imagery (skipped when ../shared/data is absent)."""

import json
import warnings

import numpy as np
import pytest
import rasterio
from osgeo import ogr, osr
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform as warp_transform

from backend.io.clicks import Click, read_clicks, write_clicks
from backend.io.raster import RasterSource, inspect_raster
from backend.io.tiling import TileGrid
from backend.model.bundle import load_bundle
from backend.predict.inference import Predictor
from backend.predict.job import PredictParameters, run_predict
from tests.helpers import crop_shared, read_band, run_cli

pytestmark = pytest.mark.shared_data


def test_dubai_tile_8_outputs_keep_the_grid_and_the_nodata_mask(shared_data, fast_model, tmp_path):
    image = shared_data / "dubai" / "tile_8_image.tif"
    out = tmp_path / "tile8"
    result = run_cli("predict", image, "--model", fast_model, "--out", out)
    assert result.returncode == 0, result.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(image) as src:
            valid = src.dataset_mask() > 0
            shape, transform, crs = (src.height, src.width), src.transform, src.crs
        for name in ("classes.tif", "uncertainty.tif"):
            with rasterio.open(out / name) as output:
                assert (output.height, output.width) == shape == (4438, 6447)
                assert output.transform == transform and output.crs == crs is None
    np.testing.assert_array_equal(read_band(out / "classes.tif") == 255, ~valid)
    np.testing.assert_array_equal(np.isnan(read_band(out / "uncertainty.tif")), ~valid)
    run = json.loads((out / "run.json").read_text())
    assert run["tile_count"] == len(TileGrid(6447, 4438)) and run["crs"].startswith("none")
    source = ogr.Open(str(out / "patches.gpkg"))
    layer = source.GetLayerByName("patches")
    assert layer.GetFeatureCount() == run["patches_ranked"] > 0
    assert layer.GetSpatialRef() is None or layer.GetSpatialRef().GetName().startswith("Undefined")


def test_a_mask_on_real_imagery_becomes_nodata_in_every_output(shared_data, fast_model, tmp_path):
    """The Dubai tiles happen to be fully valid: give a crop a mosaic-like masked corner."""
    crop = crop_shared("dubai/tile_8_image.tif", tmp_path / "crop.tif", 1000, 2000, 1100, 1300)
    with rasterio.open(crop) as src:
        data = src.read()
    rows, cols = np.mgrid[0:1100, 0:1300]
    valid = rows + cols < 1700
    from tests.helpers import write_raster

    masked = write_raster(tmp_path / "masked.tif", data, crs=None, transform=None, mask=valid)
    report = run_predict(PredictParameters(raster=masked, out_dir=tmp_path / "out", model_dir=fast_model))
    np.testing.assert_array_equal(read_band(report.classes) == 255, ~valid)
    np.testing.assert_array_equal(np.isnan(read_band(report.uncertainty)), ~valid)


def write_wgs84_clicks(path, lonlat_classes):
    driver = ogr.GetDriverByName("GPKG")
    source = driver.CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    layer = source.CreateLayer("clicks", srs, ogr.wkbPoint)
    layer.CreateField(ogr.FieldDefn("class_id", ogr.OFTInteger))
    for lon, lat, class_id in lonlat_classes:
        feature = ogr.Feature(layer.GetLayerDefn())
        feature.SetField("class_id", class_id)
        feature.SetGeometry(ogr.CreateGeometryFromWkt(f"POINT ({lon} {lat})"))  # GPKG: x = lon
        layer.CreateFeature(feature)
    source = None
    return path


def test_tanzania_outputs_are_in_utm_37s_and_wgs84_clicks_land_on_their_pixels(
    shared_data, fast_model, tmp_path
):
    image = shared_data / "tanzania" / "image.tif"
    with rasterio.open(image) as src:
        transform, crs = src.transform, src.crs
    assert crs.to_epsg() == 32737
    pixels = [(120, 130, 0), (500, 861, 1), (999, 3, 3)]  # (row, col, class)
    xs = [transform.c + (c + 0.5) * transform.a for _, c, _ in pixels]
    ys = [transform.f + (r + 0.5) * transform.e for r, _, _ in pixels]
    lons, lats = warp_transform("EPSG:32737", "EPSG:4326", xs, ys)
    clicks = write_wgs84_clicks(
        tmp_path / "clicks.gpkg",
        [(lon, lat, k) for lon, lat, (_, _, k) in zip(lons, lats, pixels, strict=True)],
    )
    bundle = load_bundle(fast_model)
    loaded = read_clicks(clicks, inspect_raster(image), bundle.card)
    assert [(c.row, c.col, c.class_id) for c in loaded.clicks] == pixels

    # Through the engine: each click's channel peaks exactly at its pixel.
    predictor = Predictor(bundle, "cpu")
    with RasterSource(image, bundle.card.input) as source:
        for row, col, class_id in pixels:
            tile = TileGrid(1000, 1000).tiles_within_distance(row, col, 1)[0]
            x, _ = predictor.read_batch(source, [tile], loaded.clicks)
            channel = x[0, :, :, 3 + class_id]
            assert np.unravel_index(channel.argmax(), channel.shape) == (row - tile.row, col - tile.col)

    out = tmp_path / "out"
    result = run_cli("predict", image, "--model", fast_model, "--out", out, "--clicks", clicks)
    assert result.returncode == 0, result.stderr
    for name in ("classes.tif", "uncertainty.tif"):
        with rasterio.open(out / name) as output:
            assert output.crs.to_epsg() == 32737 and output.transform == transform
    source = ogr.Open(str(out / "patches.gpkg"))
    assert source.GetLayerByName("patches").GetSpatialRef().GetAuthorityCode(None) == "32737"
    assert json.loads((out / "run.json").read_text())["clicks"] == {"used": 3, "outside": 0}


def test_incremental_update_on_real_imagery_with_the_default_network(shared_data, default_model, tmp_path):
    """LinkNet-ResNet34 on an 896 × 896 crop of Dubai tile 2 (tiles at 0 and 384 on each axis)."""
    crop = crop_shared("dubai/tile_2_image.tif", tmp_path / "crop.tif", 300, 300, 896, 896)
    info = inspect_raster(crop)
    card = load_bundle(default_model).card
    session, full = tmp_path / "session", tmp_path / "full"
    run_predict(PredictParameters(raster=crop, out_dir=session, model_dir=default_model, cache=True))
    before = read_band(session / "classes.tif"), read_band(session / "uncertainty.tif")
    clicks = write_clicks(tmp_path / "c.gpkg", [Click(440, 700, 2)], info, card)
    report = run_predict(
        PredictParameters(raster=crop, out_dir=session, model_dir=default_model, clicks=clicks, cache=True)
    )
    assert report.run["mode"] == "incremental" and report.run["tiles_computed"] == 2  # right column only
    after = read_band(session / "classes.tif"), read_band(session / "uncertainty.tif")
    changed = ~np.isclose(after[1], before[1], equal_nan=True, atol=0)
    assert changed.any() and not changed[:, :384].any()
    run_predict(PredictParameters(raster=crop, out_dir=full, model_dir=default_model, clicks=clicks))
    np.testing.assert_array_equal(after[0], read_band(full / "classes.tif"))
    np.testing.assert_allclose(after[1], read_band(full / "uncertainty.tif"), atol=1e-6, equal_nan=True)
