"""Patch scores: the mean uncertainty, or each pixel's weighted by how rare its class is on the map."""

import numpy as np
import pytest

from backend.io.outputs import CLASS_NODATA, MapBlock
from backend.io.tiling import patch_grid
from backend.predict.patch_scores import PatchScores
from tests.helpers import class_weighted_score


def scored(
    classes: np.ndarray, uncertainty: np.ndarray, size: int, n_classes: int = 3, rule: str = "class-weighted"
) -> PatchScores:
    height, width = classes.shape
    scores = PatchScores(patch_grid(width, height, size), size, width, n_classes, rule)
    valid = ~np.isnan(uncertainty)
    scores.add(MapBlock(0, 0, np.where(valid, classes, CLASS_NODATA).astype(np.uint8), uncertainty, valid))
    return scores


def test_a_rare_class_outranks_a_common_one_equally_uncertain():
    """Two 10×10 patches, each uncertain at 0.5 over 20 px: one over class 1 (4 % of the map),
    one over class 0 (the rest). The plain mean ties them; the rare class's patch comes first."""
    classes = np.zeros((10, 20), dtype=np.uint8)
    classes[:2, 10:18] = 1  # 16 px of class 1
    uncertainty = np.full((10, 20), 0.1, dtype=np.float32)
    uncertainty[:2, :10] = 0.5
    uncertainty[:2, 10:20] = 0.5
    scores = scored(classes, uncertainty, 10)
    common, rare = scores.score(0), scores.score(1)
    assert rare > 2 * common
    shares = np.array([184, 16]) / 200
    weights = 1 / (2 * shares)  # K = 2 classes on the map
    assert common == pytest.approx((20 * 0.5 + 80 * 0.1) * weights[0] / 100)
    assert rare == pytest.approx((16 * 0.5 * weights[1] + 4 * 0.5 * weights[0] + 80 * 0.1 * weights[0]) / 100)
    mean = scored(classes, uncertainty, 10, rule="mean")  # the same sums, every pixel alike
    assert mean.score(0) == mean.score(1) == pytest.approx((20 * 0.5 + 80 * 0.1) / 100)


def test_an_unknown_rule_is_refused():
    from backend.errors import UserError

    with pytest.raises(UserError, match="scored by mean or class-weighted, not 'median'"):
        PatchScores(patch_grid(10, 10, 5), 5, 10, 2, "median")


def test_equally_frequent_classes_give_the_plain_mean_and_nodata_is_ignored():
    rng = np.random.default_rng(0)
    classes = np.tile(np.arange(3, dtype=np.uint8), (12, 4))  # 12 × 12, each class a third
    uncertainty = rng.random((12, 12)).astype(np.float32)
    uncertainty[:3, :3] = np.nan  # nodata (a pixel of each class in each row: the shares stay equal)
    scores = scored(classes, uncertainty, 6)
    assert scores.class_weights() == pytest.approx([1, 1, 1])
    for patch in scores.patches:
        window = np.s_[patch.row : patch.row + 6, patch.col : patch.col + 6]
        assert scores.score(patch.index) == pytest.approx(float(np.nanmean(uncertainty[window])))
        assert scores.score(patch.index) == pytest.approx(
            class_weighted_score(classes, uncertainty, window, 3)
        )
    assert scores.valid_fraction(0) == pytest.approx(27 / 36)


def test_a_few_stray_pixels_of_a_class_weigh_as_one_percent_of_the_map():
    classes = np.zeros((100, 100), dtype=np.uint8)
    classes[0, 0] = 2  # one pixel: 0.01 % of the map
    uncertainty = np.full((100, 100), 0.2, dtype=np.float32)
    weights = scored(classes, uncertainty, 50).class_weights()
    assert weights[2] == pytest.approx(1 / (2 * 0.01))
    assert weights[0] == pytest.approx(1 / (2 * 0.9999))


def test_blocks_added_apart_rescored_or_merged_give_the_same_scores():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, 3, (40, 60)).astype(np.uint8)
    classes[:, 40:] = 2
    uncertainty = rng.random((40, 60)).astype(np.float32)
    whole = scored(classes, uncertainty, 20)
    valid = np.ones((40, 60), dtype=bool)
    streamed = PatchScores(whole.patches, 20, 60, 3, "class-weighted")
    for top, bottom in ((0, 13), (13, 26), (26, 40)):  # strips that cut through patches
        rows = slice(top, bottom)
        streamed.add(MapBlock(top, 0, classes[rows], uncertainty[rows], valid[rows]))
    expected = [whole.score(p.index) for p in whole.patches]
    assert [streamed.score(p.index) for p in whole.patches] == pytest.approx(expected)
    streamed.reset([1, 4])  # an update scores these patches again from the maps
    assert streamed.score(1) is None
    for index in (1, 4):
        p = whole.patches[index]
        rows, cols = slice(p.row, p.row + 20), slice(p.col, p.col + 20)
        streamed.add(MapBlock(p.row, p.col, classes[rows, cols], uncertainty[rows, cols], valid[rows, cols]))
    assert [streamed.score(p.index) for p in whole.patches] == pytest.approx(expected)
    left, right = (
        scored(classes[:, :40], uncertainty[:, :40], 20),
        scored(classes[:, 40:], uncertainty[:, 40:], 20),
    )
    merged = PatchScores(whole.patches, 20, 60, 3, "class-weighted")  # the cluster's blocks, as JSON and back
    for block, columns in ((left, (0, 1)), (right, (2,))):
        copy = PatchScores(block.patches, 20, len(columns) * 20, 3, "class-weighted")
        copy.load_json(block.as_json())
        merged.merge([row * 3 + c for row in range(2) for c in columns], copy)
    assert [merged.score(p.index) for p in whole.patches] == pytest.approx(expected)


def test_maps_already_written_are_scored_as_predict_scored_them(tmp_path, fast_model):
    """Processing's *Rank patches* reads the two maps back: with the class map the scores of
    ``predict --patch-score class-weighted``, with the uncertainty alone those of the default
    (the plain mean)."""
    from osgeo import ogr

    from backend.errors import UserError
    from backend.model.bundle import load_bundle
    from backend.predict.job import PredictParameters, run_predict
    from backend.predict.patch_scores import scores_of_maps
    from tests.helpers import random_image, read_band, write_raster

    raster = write_raster(tmp_path / "r.tif", random_image(300, 420, seed=3))
    out = tmp_path / "out"
    written = {}
    for rule in ("mean", "class-weighted"):
        run_predict(
            PredictParameters(
                raster=raster, out_dir=out / rule, model_dir=fast_model, patch_size=128, patch_score=rule
            )
        )
        source = ogr.Open(str(out / rule / "patches.gpkg"))  # held: its layer dies with it
        written[rule] = {f["patch_id"]: f["score"] for f in source.GetLayerByName("patches")}
        source = None
    out = out / "mean"
    _, scores = scores_of_maps(out / "uncertainty.tif", 128, out / "classes.tif")
    assert {s.patch.index: s.score for s in scores} == pytest.approx(written["class-weighted"], rel=1e-6)
    assert written["class-weighted"] != pytest.approx(written["mean"], rel=1e-3)
    _, plain = scores_of_maps(out / "uncertainty.tif", 128)
    assert {s.patch.index: s.score for s in plain} == pytest.approx(written["mean"], rel=1e-6)
    u, classes = read_band(out / "uncertainty.tif"), read_band(out / "classes.tif")
    n_classes = load_bundle(fast_model).card.n_classes
    for s in scores:
        window = np.s_[s.patch.row : s.patch.row + s.patch.height, s.patch.col : s.patch.col + s.patch.width]
        assert s.score == pytest.approx(class_weighted_score(classes, u, window, n_classes), rel=1e-5)
    for s in plain:
        window = u[s.patch.row : s.patch.row + s.patch.height, s.patch.col : s.patch.col + s.patch.width]
        assert s.score == pytest.approx(float(np.nanmean(window)), rel=1e-5)
    other = write_raster(tmp_path / "other.tif", random_image(300, 400, seed=3)[:1])
    with pytest.raises(UserError, match="class map is 400 × 300 px and the uncertainty 420 × 300"):
        scores_of_maps(out / "uncertainty.tif", 128, other)
