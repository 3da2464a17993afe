"""The AC update after new clicks: only the touched tiles change, and the result equals a full
re-prediction with the same clicks."""

import json
import shutil

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling

from backend.errors import Cancelled
from backend.io import overviews
from backend.io.clicks import Click, write_clicks
from backend.io.raster import inspect_raster
from backend.io.tiling import TileGrid
from backend.model.bundle import load_bundle
from backend.predict.job import CACHE_DIR, PredictParameters, run_predict
from backend.progress import Monitor
from tests.helpers import random_image, read_band, write_raster


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    directory = tmp_path_factory.mktemp("incremental")
    mask = np.ones((1152, 1280), dtype=bool)  # tiles at rows 0, 320, 640 and columns 0, 384, 768
    mask[1100:, :100] = False
    return write_raster(directory / "scene.tif", random_image(1152, 1280, seed=11), mask=mask)


def predict(raster, out, model, clicks=None, cache=True, **options):
    return run_predict(
        PredictParameters(raster=raster, out_dir=out, model_dir=model, clicks=clicks, cache=cache, **options)
    )


def maps(out):
    return read_band(out / "classes.tif"), read_band(out / "uncertainty.tif")


def clicks_file(tmp_path, scene, model, clicks, name="clicks.gpkg"):
    return write_clicks(tmp_path / name, clicks, inspect_raster(scene), load_bundle(model).card)


def assert_overviews_as_gdal_builds_them(out, tmp_path):
    """The update refreshed the overviews over its tiles alone: they equal a full rebuild."""
    for name, resampling in (("classes.tif", Resampling.nearest), ("uncertainty.tif", Resampling.average)):
        rebuilt = shutil.copy(out / name, tmp_path / f"rebuilt-{name}")
        with rasterio.open(rebuilt, "r+") as dataset:
            factors = dataset.overviews(1)
            assert factors == [2, 4, 8]  # each level halves the one above
            dataset.build_overviews(factors, resampling)
        for level in range(len(factors)):
            with (
                rasterio.open(out / name, overview_level=level) as got,
                rasterio.open(rebuilt, overview_level=level) as want,
            ):
                np.testing.assert_array_equal(got.read(1), want.read(1))


def footprint_mask(touched, shape):
    mask = np.zeros(shape, dtype=bool)
    for t in touched:
        mask[t.row : t.row + t.size, t.col : t.col + t.size] = True
    return mask


def test_one_click_recomputes_only_the_tiles_it_touches_and_matches_a_full_prediction(
    tmp_path, scene, fast_model, monkeypatch
):
    monkeypatch.setattr(overviews, "MAX_SHARE", 1.0)  # the four tiles' overviews refreshed alone
    out = tmp_path / "session"
    predict(scene, out, fast_model)
    classes0, uncertainty0 = maps(out)

    click = Click(400, 450, 3)  # in an overlap corner of the 512/128 grid: four tiles
    clicks = clicks_file(tmp_path, scene, fast_model, [click])
    report = predict(scene, out, fast_model, clicks)
    assert report.run["mode"] == "incremental"
    grid = TileGrid(1280, 1152)
    touched = grid.tiles_within_distance(click.row, click.col, load_bundle(fast_model).card.clicks.radius)
    assert report.run["tiles_computed"] == len(touched) == 4 < len(grid)

    classes1, uncertainty1 = maps(out)
    assert_overviews_as_gdal_builds_them(out, tmp_path)
    changed = (classes1 != classes0) | ~np.isclose(uncertainty1, uncertainty0, equal_nan=True, atol=0)
    assert changed.any()
    assert not changed[~footprint_mask(touched, changed.shape)].any()

    full = tmp_path / "full"
    predict(scene, full, fast_model, clicks, cache=False)
    classes_full, uncertainty_full = maps(full)
    np.testing.assert_array_equal(classes1, classes_full)
    np.testing.assert_allclose(uncertainty1, uncertainty_full, atol=1e-6, equal_nan=True)
    assert json.loads((out / "run.json").read_text())["patches_ranked"] == report.run["patches_ranked"]


def test_patch_ranking_after_an_update_equals_the_full_ranking(tmp_path, scene, fast_model):
    from osgeo import ogr

    out, full = tmp_path / "session", tmp_path / "full"
    predict(scene, out, fast_model, patch_size=256)
    clicks = clicks_file(tmp_path, scene, fast_model, [Click(100, 900, 1), Click(1120, 20, 4)])
    predict(scene, out, fast_model, clicks, patch_size=256)
    predict(scene, full, fast_model, clicks, cache=False, patch_size=256)

    def ranking(path):
        source = ogr.Open(str(path / "patches.gpkg"))
        return [(f["patch_id"], f["score"]) for f in source.GetLayerByName("patches")]

    incremental, reference = ranking(out), ranking(full)
    assert [p for p, _ in incremental] == [p for p, _ in reference]
    np.testing.assert_allclose([s for _, s in incremental], [s for _, s in reference], rtol=1e-5)


def test_removing_the_click_restores_the_previous_maps(tmp_path, scene, fast_model):
    out = tmp_path / "session"
    predict(scene, out, fast_model)
    before = maps(out)
    predict(scene, out, fast_model, clicks_file(tmp_path, scene, fast_model, [Click(600, 300, 0)]))
    predict(scene, out, fast_model, clicks_file(tmp_path, scene, fast_model, [], "none.gpkg"))
    after = maps(out)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1], atol=1e-6, equal_nan=True)


def test_a_different_model_or_acquisition_invalidates_the_cache(tmp_path, fast_model, small_tile_model):
    raster = write_raster(tmp_path / "small.tif", random_image(300, 300, seed=3))
    out = tmp_path / "session"
    predict(raster, out, fast_model)
    clicks = clicks_file(tmp_path, raster, fast_model, [Click(10, 10, 2)])
    assert predict(raster, out, small_tile_model, clicks).run["mode"] == "full"
    assert predict(raster, out, small_tile_model, clicks, acquisition="margin").run["mode"] == "full"
    assert predict(raster, out, small_tile_model, clicks, acquisition="margin").run["mode"] == "incremental"


def test_an_interrupted_update_leaves_outputs_intact_and_forces_a_full_run(tmp_path, scene, fast_model):
    out = tmp_path / "session"
    predict(scene, out, fast_model)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    clicks = clicks_file(tmp_path, scene, fast_model, [Click(450, 450, 1)])
    with pytest.raises(Cancelled):
        run_predict(
            PredictParameters(raster=scene, out_dir=out, model_dir=fast_model, clicks=clicks, cache=True),
            Monitor(cancelled=lambda: True),
        )
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert predict(scene, out, fast_model, clicks).run["mode"] == "full"


def test_without_cache_nothing_is_kept(tmp_path, scene, fast_model):
    out = tmp_path / "plain"
    predict(scene, out, fast_model, cache=False)
    assert not (out / CACHE_DIR).exists()
