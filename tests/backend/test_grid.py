"""Reading a raster at the model's GSD: the grid, clicks on it, and maps written back on the
raster's own grid (io/grid.py, io/regrid.py, the predict job and sessions)."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import rasterio
from affine import Affine

from backend.errors import UserError
from backend.io.clicks import Click, read_clicks, write_clicks
from backend.io.grid import model_grid, pixel_size_m
from backend.io.raster import RasterSource, inspect_raster
from backend.model.bundle import load_bundle, save_bundle
from backend.predict.job import PredictParameters, run_predict
from tests.helpers import UTM, make_bundle, random_image, write_raster


@pytest.fixture(scope="module")
def metre_model(tmp_path_factory):
    """The fast test network, its card saying it was trained on 1-m imagery."""
    directory = tmp_path_factory.mktemp("models") / "one-metre"
    bundle = make_bundle(directory)
    card = bundle.card.with_updates(input=replace(bundle.card.input, gsd_m=1.0))
    save_bundle(replace(bundle, card=card), directory, dtype="float32")
    assert load_bundle(directory).card.input.gsd_m == 1.0
    return directory


def test_grid_of_a_finer_raster_is_coarser_and_covers_it_exactly(tmp_path):
    path = write_raster(tmp_path / "r.tif", random_image(400, 600))  # 0.5-m UTM pixels
    info = inspect_raster(path)
    assert pixel_size_m(info) == 0.5
    grid = model_grid(info, gsd_m=1.0)
    assert grid.scaled and grid.factor == 0.5
    assert (grid.info.width, grid.info.height) == (300, 200)
    assert grid.info.transform == UTM * Affine.scale(2.0)
    assert grid.info.transform * (300, 200) == info.transform * (600, 400)  # same far corner
    # raster pixel → the model pixel that holds its centre
    assert grid.to_model(0, 0) == (0, 0)
    assert grid.to_model(399, 599) == (199, 299)
    assert grid.to_model(101, 50) == (50, 25)
    assert grid.window_to_model(100, 50, 301, 151) == (50, 25, 151, 76)
    assert grid.clicks_to_model([Click(101, 50, 3)]) == [Click(50, 25, 3)]
    assert any("resampled to 300 × 200" in n for n in grid.info.notices)


def test_close_pixel_sizes_and_unknown_ones_are_read_as_they_are(tmp_path):
    info = inspect_raster(write_raster(tmp_path / "r.tif", random_image(64, 64)))
    assert not model_grid(info, gsd_m=0.53).scaled  # within 10 %
    assert not model_grid(info, gsd_m=None).scaled  # the card does not say
    plain = inspect_raster(write_raster(tmp_path / "p.tif", random_image(64, 64), crs=None, transform=None))
    assert pixel_size_m(plain) is None and not model_grid(plain, gsd_m=1.0).scaled
    given = model_grid(plain, gsd_m=1.0, pixel_size=0.25)  # the user says what the CRS cannot
    assert given.scaled and (given.info.width, given.info.height) == (16, 16)
    # pixel units the way QGIS shows such a raster, four raster pixels per model pixel
    assert given.info.map_transform * (16, 16) == plain.map_transform * (64, 64)
    for bad in (0, -1.0, math.nan, math.inf, "0.5"):
        with pytest.raises(UserError, match="pixel size must be a positive number"):
            model_grid(plain, gsd_m=1.0, pixel_size=bad)


def test_a_model_trained_over_a_range_of_pixel_sizes_reads_within_it_as_they_are(tmp_path):
    def grid(pixel: float):
        transform = Affine(pixel, 0, 300_000.0, 0, -pixel, 2_780_000.0)
        path = write_raster(tmp_path / f"{pixel}.tif", random_image(400, 400), transform=transform)
        return model_grid(inspect_raster(path), gsd_m=1.0, gsd_range=(0.25, 1.33))

    assert not grid(0.5).scaled and not grid(0.3).scaled  # inside the trained range
    drone = grid(0.0775)  # finer than any crop the model saw: read at the finest end
    assert drone.factor == pytest.approx(0.0775 / 0.25) and drone.info.width == 124
    assert any("trained at 0.25–1.33 m" in n and "px of 0.25 m" in n for n in drone.info.notices)
    # the drone pixel's centre lands on the model pixel under it
    assert drone.to_model(399, 0) == (123, 0) and drone.to_model(200, 200) == (62, 62)
    coarse = grid(4.0)  # coarser than the range: read at its coarse end
    assert coarse.factor == pytest.approx(4.0 / 1.33) and coarse.info.width == 1203
    assert not grid(1.4).scaled  # within 10 % of the end, as with gsd_m alone


def test_geographic_pixels_are_measured_in_metres(tmp_path):
    degrees = Affine(1e-5, 0, 55.0, 0, -1e-5, 25.0)  # Dubai's latitude
    info = inspect_raster(write_raster(tmp_path / "g.tif", random_image(32, 32), "EPSG:4326", degrees))
    assert pixel_size_m(info) == pytest.approx(
        1e-5 * 111_320 * math.sqrt(math.cos(math.radians(25))), rel=1e-3
    )


def test_maps_of_a_resampled_raster_lie_on_its_own_grid(tmp_path, metre_model):
    image = random_image(320, 384, seed=3)
    mask = np.ones((320, 384), dtype=bool)
    mask[:40, :60] = False  # nodata corner: it must stay nodata at the raster's resolution
    raster = write_raster(tmp_path / "fine.tif", image, mask=mask)
    report = run_predict(PredictParameters(raster=raster, out_dir=tmp_path / "out", model_dir=metre_model))
    assert report.run["model_grid"] == {"width": 192, "height": 160, "factor": 0.5}
    assert (report.run["width"], report.run["height"]) == (384, 320)
    opened = (rasterio.open(p) for p in (raster, report.classes, report.uncertainty))
    with next(opened) as src, next(opened) as classes, next(opened) as heat:
        for out in (classes, heat):
            assert (out.width, out.height, out.transform, out.crs) == (
                src.width, src.height, src.transform, src.crs
            )  # fmt: skip
        labels, uncertainty = classes.read(1), heat.read(1)
    assert (labels[:40, :60] == 255).all() and np.isnan(uncertainty[:40, :60]).all()
    assert (labels[mask] < 5).all() and np.isfinite(uncertainty[mask]).all()
    # blocks of 2 × 2 raster pixels come from one model pixel (nearest), away from the mask
    inner = labels[40:, 60:]
    assert (inner[::2, ::2] == inner[1::2, 1::2]).mean() > 0.99
    notices = " ".join(report.run["notices"])
    assert "0.5-m pixels and the model was trained at 1 m" in notices


def test_a_click_lands_on_the_same_place_whichever_way_it_comes(tmp_path, metre_model):
    """A click layer in map coordinates (CLI, Processing) and a session's raster pixel reach the
    same model-grid pixel, and it is the one under the click."""
    raster = write_raster(tmp_path / "fine.tif", random_image(320, 384))
    card = load_bundle(metre_model).card
    with RasterSource(raster, card.input) as source:
        grid = source.grid
        clicks_file = tmp_path / "clicks.gpkg"
        write_clicks(clicks_file, [Click(301, 77, 4)], grid.raster, card)  # raster pixels
        from_file = read_clicks(clicks_file, source.info, card).clicks
        assert [(c.row, c.col, c.class_id) for c in from_file] == [(150, 38, 4)]
        assert grid.clicks_to_model([Click(301, 77, 4)]) == [Click(150, 38, 4)]
        x, y = grid.raster.map_transform * (77.5, 301.5)
        assert source.info.map_transform * (38, 150) == pytest.approx((x - 0.5, y + 0.5))


def test_the_model_gsd_equal_to_the_raster_changes_nothing(tmp_path, fast_model, metre_model):
    raster = write_raster(
        tmp_path / "one.tif", random_image(256, 256), transform=Affine(1, 0, 3e5, 0, -1, 2.78e6)
    )
    plain = run_predict(PredictParameters(raster=raster, out_dir=tmp_path / "a", model_dir=fast_model))
    same = run_predict(PredictParameters(raster=raster, out_dir=tmp_path / "b", model_dir=metre_model))
    assert same.run["model_grid"] is None
    with rasterio.open(plain.classes) as a, rasterio.open(same.classes) as b:
        assert np.array_equal(a.read(1), b.read(1))
    assert json.loads((tmp_path / "b" / "run.json").read_text())["width"] == 256
