"""The built-in sample scene: every class present at every size the tests use, a masked corner,
colours like the Dubai imagery, and the bundled model recognising most of it (the demo's point)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from backend.demo.scene import BUILDING, CLASS_NAMES, LABEL_NODATA, LAND, WATER, draw_scene, write_scene
from backend.io.raster import RasterSource
from backend.model.bundle import load_bundle
from backend.predict.evaluation import predict_in_memory, read_labels, score
from backend.predict.inference import Predictor
from tests.helpers import REPO

SCENE_MIOU = (768, 4, 62.53, 58.0)  # size, seed, measured mIoU of dubai-landcover, floor


@pytest.mark.parametrize(("size", "seed"), [(256, 8), (320, 6), (384, 3), (512, 9), (768, 4)])
def test_every_class_covers_part_of_the_scene(size, seed):
    _, labels, valid = draw_scene(size, seed)
    shares = np.bincount(labels[valid], minlength=len(CLASS_NAMES))[: len(CLASS_NAMES)] / valid.sum()
    assert (shares > 0.02).all(), dict(zip(CLASS_NAMES, shares.round(3), strict=True))
    assert (labels[~valid] == LABEL_NODATA).all() and 0 < (~valid).mean() < 0.2


def test_colours_follow_the_dubai_imagery():
    image, labels, _ = draw_scene(512, 9)
    brightness = image.astype(float).mean(axis=0)
    water, land, roofs = (brightness[labels == c].mean() for c in (WATER, LAND, BUILDING))
    assert water < 50 < 150 < land  # near-black water, pale sand (Dubai: 28 and 184)
    assert 90 < roofs < 160  # roofs and their plant average mid-grey (Dubai: 122)


def test_the_bundled_model_recognises_most_of_the_scene(tmp_path):
    size, seed, measured, floor = SCENE_MIOU
    scene = write_scene(tmp_path, size, seed)
    with rasterio.open(scene.image) as dataset:
        assert dataset.crs is not None and (dataset.dataset_mask() == 0).any()
    bundle = load_bundle(REPO / "models" / "dubai-landcover")
    with RasterSource(scene.image, bundle.card.input) as source:
        maps, _ = predict_in_memory(Predictor(bundle, "cpu", owns_network=True), source)
    scores = score(maps.classes, read_labels(scene.labels), list(CLASS_NAMES))
    print(f"dubai-landcover on the sample scene: mIoU {scores.miou:.2f} (measured {measured}, floor {floor})")
    assert scores.miou >= floor
