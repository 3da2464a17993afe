import json
import warnings

import numpy as np
import pytest
import rasterio
import torch
from osgeo import ogr
from rasterio.errors import NotGeoreferencedWarning

from backend.errors import Cancelled, UserError
from backend.io.raster import RasterSource
from backend.io.tiling import TileGrid
from backend.model.bundle import load_bundle
from backend.predict.inference import Predictor
from backend.predict.job import PredictParameters, run_predict
from backend.predict.uncertainty import normalized_entropy
from backend.progress import Monitor
from tests.helpers import UTM, random_image, read_band, write_raster


def open_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def patches_table(path):
    source = ogr.Open(str(path))
    layer = source.GetLayerByName("patches")
    rows = []
    for feature in layer:
        envelope = feature.GetGeometryRef().GetEnvelope()
        rows.append({**feature.items(), "envelope": envelope})
    srs = layer.GetSpatialRef()
    return rows, (srs.GetAuthorityCode(None) if srs else None)


@pytest.fixture(scope="module")
def masked_scene(tmp_path_factory):
    """700 × 600 px RGB, UTM, with a masked band on the left and a masked corner block."""
    directory = tmp_path_factory.mktemp("scene")
    mask = np.ones((600, 700), dtype=bool)
    mask[:, :40] = False
    mask[520:, 600:] = False
    return write_raster(directory / "scene.tif", random_image(600, 700, seed=4), mask=mask), mask


@pytest.fixture(scope="module")
def masked_prediction(masked_scene, fast_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("prediction")
    raster, _ = masked_scene
    run_predict(PredictParameters(raster=raster, out_dir=out, model_dir=fast_model, patch_size=256))
    return out


def test_outputs_share_the_input_grid_crs_and_carry_nodata(masked_scene, masked_prediction):
    raster, mask = masked_scene
    classes = open_quietly(masked_prediction / "classes.tif")
    uncertainty = open_quietly(masked_prediction / "uncertainty.tif")
    with open_quietly(raster) as src:
        for output in (classes, uncertainty):
            assert (output.width, output.height) == (src.width, src.height)
            assert output.transform == src.transform and output.crs == src.crs
    c, u = classes.read(1), uncertainty.read(1)
    assert classes.dtypes[0] == "uint8" and classes.nodata == 255
    assert uncertainty.dtypes[0] == "float32" and np.isnan(uncertainty.nodata)
    np.testing.assert_array_equal(c == 255, ~mask)
    np.testing.assert_array_equal(np.isnan(u), ~mask)
    assert c[mask].max() < 5 and u[mask].min() >= 0.0 and u[mask].max() <= 1.0
    assert classes.overviews(1) and uncertainty.overviews(1)  # so QGIS draws them fast
    assert classes.profile["tiled"] and classes.profile["compress"] == "deflate"


def test_class_map_carries_the_cards_colours_and_names(masked_prediction, fast_model):
    card = load_bundle(fast_model).card
    with open_quietly(masked_prediction / "classes.tif") as classes:
        colormap = classes.colormap(1)
    for info in card.classes:
        assert colormap[info.index][:3] == info.rgb
    from osgeo import gdal

    band = gdal.Info(str(masked_prediction / "classes.tif"), format="json")["bands"][0]
    assert band["categories"] == [c.name for c in card.classes]
    assert band["description"] == "class"


def test_patches_are_ranked_by_mean_uncertainty_over_valid_pixels(masked_prediction):
    rows, epsg = patches_table(masked_prediction / "patches.gpkg")
    assert epsg == "32640"
    u = read_band(masked_prediction / "uncertainty.tif")
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert len(rows) == 3 * 3  # 256-px patches over 700 × 600; none is entirely nodata
    for r in rows:
        window = u[r["row"] : r["row"] + r["height"], r["col"] : r["col"] + r["width"]]
        assert r["score"] == pytest.approx(np.nanmean(window), rel=1e-5)
        assert r["valid_fraction"] == pytest.approx(np.mean(~np.isnan(window)))
        x0, y1 = UTM * (r["col"], r["row"])
        x1, y0 = UTM * (r["col"] + r["width"], r["row"] + r["height"])
        assert r["envelope"] == pytest.approx((x0, x1, y0, y1))


def test_run_json_records_device_tiles_timings_and_memory(masked_prediction):
    run = json.loads((masked_prediction / "run.json").read_text())
    assert run["device_type"] == "cpu" and run["device"].startswith("cpu")
    assert run["tile_count"] == len(TileGrid(700, 600, 512, 128)) == run["tiles_computed"]
    assert {"load_model", "predict", "overviews", "patches", "total"} <= set(run["seconds"])
    assert run["peak_memory_mib"] > 0 and run["mode"] == "full"


def test_blending_happens_before_argmax_and_uncertainty(tmp_path, small_tile_model):
    """An independent float64 re-computation: blend tile softmaxes, then argmax and entropy (the
    network in float32: bfloat16 rounds the folded and the plain network differently)."""
    raster = write_raster(tmp_path / "r.tif", random_image(300, 260, seed=2))
    out = tmp_path / "out"
    run_predict(PredictParameters(raster=raster, out_dir=out, model_dir=small_tile_model, precision="fp32"))
    bundle = load_bundle(small_tile_model)
    predictor = Predictor(bundle, "cpu", precision="fp32")
    grid = TileGrid(260, 300, 128, 32)
    total = np.zeros((5, 300, 260))
    weight = np.zeros((300, 260))
    with RasterSource(raster, bundle.card.input) as source:
        for tile in grid.tiles:
            x, _ = predictor.read_batch(source, [tile], [])
            p = predictor.forward(x, [tile], source)[0].double().numpy()
            window = np.s_[tile.row : tile.row + 128, tile.col : tile.col + 128]
            total[(slice(None), *window)] += p * grid.weights
            weight[window] += grid.weights
    blended = total / weight
    expected_classes = blended.argmax(0)
    expected_entropy = normalized_entropy(torch.from_numpy(blended)).numpy()
    classes = read_band(tmp_path / "out" / "classes.tif")
    entropy = read_band(tmp_path / "out" / "uncertainty.tif")
    near_tie = np.sort(blended, 0)[-1] - np.sort(blended, 0)[-2] < 1e-5
    assert (classes == expected_classes)[~near_tie].all()
    np.testing.assert_allclose(entropy, expected_entropy, atol=1e-5)
    assert len(grid) == 9


def test_the_network_runs_in_bfloat16_where_the_cpu_computes_it_and_float32_when_asked(
    tmp_path, small_tile_model
):
    raster = write_raster(tmp_path / "r.tif", random_image(300, 260, seed=2))
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    for precision, expected in (("auto", "bfloat16" if native else "float32"), ("fp32", "float32")):
        out = tmp_path / precision
        params = PredictParameters(
            raster=raster, out_dir=out, model_dir=small_tile_model, precision=precision
        )
        run_predict(params)
        assert json.loads((out / "run.json").read_text())["precision"] == expected
    agree = read_band(tmp_path / "auto" / "classes.tif") == read_band(tmp_path / "fp32" / "classes.tif")
    assert agree.mean() > 0.97  # an untrained network's near-ties; the bundled models: test_bundled_models
    with pytest.raises(UserError, match="precision must be one of auto, fp32"):
        Predictor(load_bundle(small_tile_model), "cpu", precision="fp16")


def test_predictions_are_deterministic(tmp_path, small_tile_model):
    raster = write_raster(tmp_path / "r.tif", random_image(200, 300, seed=8))
    for name in ("a", "b"):
        run_predict(PredictParameters(raster=raster, out_dir=tmp_path / name, model_dir=small_tile_model))
    for output in ("classes.tif", "uncertainty.tif"):
        np.testing.assert_array_equal(read_band(tmp_path / "a" / output), read_band(tmp_path / "b" / output))


def test_raster_smaller_than_a_tile(tmp_path, fast_model):
    raster = write_raster(tmp_path / "tiny.tif", random_image(37, 53))
    report = run_predict(PredictParameters(raster=raster, out_dir=tmp_path / "out", model_dir=fast_model))
    assert read_band(report.classes).shape == (37, 53)
    assert report.run["tile_count"] == 1
    rows, _ = patches_table(report.patches)
    assert len(rows) == 1 and rows[0]["valid_fraction"] == 1.0


def test_raster_without_crs_gives_pixel_coordinate_outputs(tmp_path, fast_model):
    raster = write_raster(tmp_path / "plain.tif", random_image(300, 200), crs=None, transform=None)
    report = run_predict(
        PredictParameters(raster=raster, out_dir=tmp_path / "out", model_dir=fast_model, patch_size=128)
    )
    from osgeo import gdal

    classes = gdal.Open(str(report.classes))
    assert classes.GetSpatialRef() is None
    assert classes.GetGeoTransform(can_return_null=True) is None  # QGIS then shows it like the input
    rows, epsg = patches_table(report.patches)
    assert epsg is None
    first = next(r for r in rows if r["row"] == 128 and r["col"] == 0)
    assert first["envelope"] == pytest.approx((0, 128, -256, -128))  # x = column, y = −row
    assert any("no coordinate reference system" in n for n in report.run["notices"])


@pytest.mark.parametrize("acquisition", ["margin", "mcdropout", "odin"])
def test_every_acquisition_gives_a_complete_uncertainty_map(tmp_path, small_tile_model, acquisition):
    raster = write_raster(tmp_path / "r.tif", random_image(200, 150, seed=1))
    report = run_predict(
        PredictParameters(
            raster=raster, out_dir=tmp_path / "o", model_dir=small_tile_model, acquisition=acquisition
        )
    )
    u = read_band(report.uncertainty)
    assert not np.isnan(u).any() and u.min() >= 0.0 and u.max() <= 1.0 and u.std() > 0
    assert report.run["acquisition"] == acquisition


def test_uint16_input_runs_with_a_stretch_notice(tmp_path, fast_model):
    raster = write_raster(tmp_path / "u16.tif", random_image(100, 100, dtype="uint16"))
    report = run_predict(PredictParameters(raster=raster, out_dir=tmp_path / "o", model_dir=fast_model))
    assert "percentile" in report.run["normalization"]
    assert any("stretched" in n for n in report.run["notices"])


def test_progress_rises_to_one_and_cancel_leaves_previous_outputs_intact(tmp_path, small_tile_model):
    raster = write_raster(tmp_path / "r.tif", random_image(400, 400, seed=3))
    out = tmp_path / "out"
    seen = []
    run_predict(
        PredictParameters(raster=raster, out_dir=out, model_dir=small_tile_model),
        Monitor(lambda f, m: seen.append(f)),
    )
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 5
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    calls = []

    def cancel_after_three_batches():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        run_predict(
            PredictParameters(raster=raster, out_dir=out, model_dir=small_tile_model, acquisition="margin"),
            Monitor(cancelled=cancel_after_three_batches),
        )
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # the old, complete run is untouched; no staging folder is left


def test_cancel_on_a_fresh_folder_leaves_nothing_that_looks_complete(tmp_path, small_tile_model):
    raster = write_raster(tmp_path / "r.tif", random_image(300, 300))
    with pytest.raises(Cancelled):
        run_predict(
            PredictParameters(raster=raster, out_dir=tmp_path / "out", model_dir=small_tile_model),
            Monitor(cancelled=lambda: True),
        )
    assert not (tmp_path / "out").exists()  # not even the folder the run made


def test_finishing_in_small_blocks_changes_nothing(tmp_path, small_tile_model, monkeypatch):
    """Maps are finished block by block to bound memory; block edges must not show anywhere."""
    import backend.predict.inference

    raster = write_raster(tmp_path / "r.tif", random_image(230, 470, seed=6))
    params = dict(raster=raster, model_dir=small_tile_model, patch_size=100)
    run_predict(PredictParameters(out_dir=tmp_path / "whole", **params))
    monkeypatch.setattr(backend.predict.inference, "FINISH_ROWS", 37)
    monkeypatch.setattr(backend.predict.inference, "FINISH_COLUMNS", 150)  # → blocks of one 100-px patch
    run_predict(PredictParameters(out_dir=tmp_path / "blocks", **params))
    whole_maps = [read_band(tmp_path / "whole" / n) for n in ("classes.tif", "uncertainty.tif")]
    block_maps = [read_band(tmp_path / "blocks" / n) for n in ("classes.tif", "uncertainty.tif")]
    np.testing.assert_array_equal(whole_maps[0], block_maps[0])
    np.testing.assert_allclose(whole_maps[1], block_maps[1], atol=1e-6)  # log's last bit varies with shape
    whole, _ = patches_table(tmp_path / "whole" / "patches.gpkg")
    blocks, _ = patches_table(tmp_path / "blocks" / "patches.gpkg")
    assert {r["patch_id"]: r["score"] for r in whole} == pytest.approx(
        {r["patch_id"]: r["score"] for r in blocks}
    )
    u = read_band(tmp_path / "blocks" / "uncertainty.tif")
    for r in blocks:
        window = u[r["row"] : r["row"] + r["height"], r["col"] : r["col"] + r["width"]]
        assert r["score"] == pytest.approx(float(np.nanmean(window)), rel=1e-5)
