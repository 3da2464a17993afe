"""The bundled models keep their measured quality on a real validation crop.

Floors sit a little under the mIoU measured when each model was trained (the figure beside it),
so a change to the engine that degrades prediction (normalisation, tiling, blending, loading)
fails here. Skipped where ../shared/data is absent.
"""

from __future__ import annotations

import pytest

from backend.io.raster import RasterSource
from backend.model.bundle import load_bundle
from backend.predict.evaluation import predict_in_memory, read_labels, score
from backend.predict.inference import Predictor
from tests.helpers import REPO, crop_shared

pytestmark = pytest.mark.shared_data

CROP = (256, 256, 1024, 1024)  # row, col, height, width of Dubai validation tile 2
FLOORS = {
    # model: (class map applied to the Dubai labels, measured mIoU on the crop, floor)
    "dubai-landcover": (None, 59.59, 57.5),
    "dubai-buildings": ({0: 1, 1: 0, 2: 0, 3: 0, 4: 0}, 68.73, 66.5),
}


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_a_bundled_model_stays_above_its_floor_on_a_validation_crop(name, shared_data, tmp_path):
    class_map, measured, floor = FLOORS[name]
    model_dir = REPO / "models" / name
    assert (model_dir / "model.json").is_file(), f"models/{name} is not bundled"
    bundle = load_bundle(model_dir)
    image = crop_shared("dubai/tile_2_image.tif", tmp_path / "image.tif", *CROP)
    labels = crop_shared("dubai/tile_2_labels.tif", tmp_path / "labels.tif", *CROP)
    with RasterSource(image, bundle.card.input) as source:
        maps, _ = predict_in_memory(Predictor(bundle, "cpu", owns_network=True), source)
    scores = score(maps.classes, read_labels(labels, class_map), [c.name for c in bundle.card.classes])
    print(f"{name}: mIoU {scores.miou:.2f} on the crop (measured {measured}, floor {floor})")
    assert scores.miou >= floor, f"{name}: mIoU {scores.miou:.2f} fell under its floor {floor}"
