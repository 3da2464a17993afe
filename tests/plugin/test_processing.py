"""The Processing algorithms, through processing.run as batch runs, models and scripts use them."""

from pathlib import Path

import numpy as np
import pytest
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsField,
    QgsGeometry,
    QgsPointXY,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QVariant

from backend.model.bundle import load_bundle
from tests.helpers import class_weighted_score, read_band


@pytest.fixture(scope="module")
def provider(qgis_processing):
    from sial_qgis_plugin.processing.provider import SegmentationProvider

    provider = SegmentationProvider()
    QgsApplication.processingRegistry().addProvider(provider)
    yield provider
    QgsApplication.processingRegistry().removeProvider(provider)


def clicks_layer(scene_crs, points):
    """A memory point layer, as an analyst would draw: Processing must export it for the engine."""
    layer = QgsVectorLayer(f"Point?crs={scene_crs}", "clicks", "memory")
    layer.dataProvider().addAttributes([QgsField("class_id", QVariant.Int)])
    layer.updateFields()
    for (x, y), class_id in points:
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPointXY(QgsPointXY(x, y)))
        feature["class_id"] = class_id
        layer.dataProvider().addFeature(feature)
    return layer


def test_predict_and_rank(provider, scene, small_tile_model, tmp_path):
    import processing

    result = processing.run(
        "sial:predict",
        {"INPUT": str(scene.image), "MODEL": str(small_tile_model), "ACQUISITION": 1, "DEVICE": 1,
         "OUTPUT_CLASSES": str(tmp_path / "classes.tif"), "OUTPUT_UNCERTAINTY": str(tmp_path / "u.tif"),
         "OUTPUT_PATCHES": str(tmp_path / "patches.gpkg")},
    )  # fmt: skip
    classes = QgsRasterLayer(result["OUTPUT_CLASSES"], "classes")
    assert classes.isValid() and classes.width() == 384 and classes.crs().authid() == "EPSG:32640"
    patches = QgsVectorLayer(result["OUTPUT_PATCHES"], "patches", "ogr")
    assert patches.featureCount() == 9 and "rank" in patches.fields().names()

    plain = processing.run(
        "sial:rank", {"INPUT": result["OUTPUT_UNCERTAINTY"], "PATCH_SIZE": 128, "OUTPUT": "memory:"}
    )["OUTPUT"]  # no class map: the mean uncertainty of each patch, as Predict ranks them
    scores = sorted((f["patch_id"], f["rank"], f["score"]) for f in plain.getFeatures())
    assert sorted(r for _, r, _ in scores) == list(range(1, 10))
    original = sorted((f["patch_id"], f["rank"], f["score"]) for f in patches.getFeatures())
    assert [r for _, r, _ in original] == [r for _, r, _ in scores]  # the engine's ranking
    assert [s for _, _, s in scores] == pytest.approx([s for _, _, s in original])

    weighted = processing.run(
        "sial:rank",
        {"INPUT": result["OUTPUT_UNCERTAINTY"], "CLASSES": result["OUTPUT_CLASSES"], "PATCH_SIZE": 128,
         "OUTPUT": "memory:"},
    )["OUTPUT"]  # fmt: skip
    u, labels = read_band(Path(result["OUTPUT_UNCERTAINTY"])), read_band(Path(result["OUTPUT_CLASSES"]))
    n_classes = load_bundle(small_tile_model).card.n_classes
    for feature in weighted.getFeatures():
        window = np.s_[feature["row"] : feature["row"] + 128, feature["col"] : feature["col"] + 128]
        assert feature["score"] == pytest.approx(class_weighted_score(labels, u, window, n_classes), rel=1e-5)
    assert {f["patch_id"]: f["score"] for f in plain.getFeatures()} != pytest.approx(
        {f["patch_id"]: f["score"] for f in weighted.getFeatures()}
    )


def test_refine_with_memory_layer_clicks_and_keep_the_adapted_model(
    provider, scene, small_tile_model, tmp_path
):
    import processing

    from backend.model.bundle import load_bundle

    clicks = clicks_layer("EPSG:32640", [((300_010.25, 2_779_990.25), 3), ((300_150.25, 2_779_900.25), 1)])
    result = processing.run(
        "sial:refine",
        {"INPUT": str(scene.image), "MODEL": str(small_tile_model), "CLICKS": clicks, "ROUNDS": 1, "STEPS": 2,
         "ANCHOR_WEIGHT": 1.0, "LR": 0.001, "DEVICE": 1, "OUTPUT_CLASSES": str(tmp_path / "c.tif"),
         "OUTPUT_UNCERTAINTY": str(tmp_path / "u.tif"), "OUTPUT_PATCHES": "memory:",
         "OUTPUT_MODEL": str(tmp_path / "adapted")},
    )  # fmt: skip
    assert QgsRasterLayer(result["OUTPUT_CLASSES"], "c").isValid()
    adapted = load_bundle(tmp_path / "adapted")
    assert adapted.card.provenance["adapted"]["clicks"] == 2


def test_refine_offers_the_engines_disca_defaults(provider):
    from backend.learn.disca import DiscaSettings

    algorithm = QgsApplication.processingRegistry().algorithmById("sial:refine")
    names = ("STEPS", "ANCHOR_WEIGHT", "LR", "WEIGHT_AVERAGE")
    defaults = {name: algorithm.parameterDefinition(name).defaultValue() for name in names}
    engine = DiscaSettings()
    assert engine.steps is None  # by the round's clicks: the algorithm's 0
    assert defaults == {
        "STEPS": 0,
        "ANCHOR_WEIGHT": engine.anchor_weight,
        "LR": engine.learning_rate,
        "WEIGHT_AVERAGE": engine.weight_average,
    }


def test_engine_errors_become_one_processing_error(provider, small_tile_model, tmp_path):
    import processing
    from qgis.core import QgsProcessingException

    from tests.helpers import random_image, write_raster

    gray = write_raster(tmp_path / "gray.tif", random_image(64, 64, bands=1))
    with pytest.raises(QgsProcessingException, match=r"has 1 band\(s\) but the model reads"):
        processing.run(
            "sial:predict",
            {"INPUT": str(gray), "MODEL": str(small_tile_model), "OUTPUT_CLASSES": "TEMPORARY_OUTPUT",
             "OUTPUT_UNCERTAINTY": "TEMPORARY_OUTPUT", "OUTPUT_PATCHES": "memory:"},
        )  # fmt: skip


def test_confidnet_ranks_with_the_bundled_head_and_is_refused_without_one(
    provider, scene, small_tile_model, tmp_path
):
    import numpy as np
    import processing
    import rasterio
    from qgis.core import QgsProcessingException

    from sial_qgis_plugin.environment import bundled_models
    from sial_qgis_plugin.processing.algorithms import ACQUISITIONS

    algorithm = QgsApplication.processingRegistry().algorithmById("sial:predict")
    assert algorithm.parameterDefinition("ACQUISITION").options() == ACQUISITIONS
    confidnet = ACQUISITIONS.index("confidnet")
    landcover = next(m.directory for m in bundled_models() if m.name == "dubai-landcover")
    outputs = {"OUTPUT_CLASSES": "TEMPORARY_OUTPUT", "OUTPUT_UNCERTAINTY": str(tmp_path / "u.tif"),
               "OUTPUT_PATCHES": "memory:"}  # fmt: skip
    maps = {}
    for key in ("confidnet", "entropy"):
        outputs["OUTPUT_UNCERTAINTY"] = str(tmp_path / f"{key}.tif")
        parameters = {"INPUT": str(scene.image), "MODEL": str(landcover), "DEVICE": 1, **outputs}
        result = processing.run("sial:predict", parameters | {"ACQUISITION": ACQUISITIONS.index(key)})
        with rasterio.open(result["OUTPUT_UNCERTAINTY"]) as dataset:
            maps[key] = dataset.read(1)
    valid = np.isfinite(maps["entropy"])  # the scene's nodata stays NaN in both
    assert (np.isfinite(maps["confidnet"]) == valid).all() and valid.mean() > 0.5
    values = maps["confidnet"][valid]
    assert 0.0 <= values.min() < values.max() <= 1.0
    assert not np.allclose(values, maps["entropy"][valid], atol=1e-3)  # the head's map, not entropy's
    with pytest.raises(QgsProcessingException, match="has no ConfidNet head"):
        processing.run(
            "sial:predict",
            {"INPUT": str(scene.image), "MODEL": str(small_tile_model), "ACQUISITION": confidnet,
             "DEVICE": 1, **outputs},
        )  # fmt: skip


def test_predict_many_runs_a_local_dask_cluster_and_resumes(provider, scene, small_tile_model, tmp_path):
    """One worker process on this machine; the 384-px scene in four blocks, mosaicked in a VRT."""
    import json
    from pathlib import Path

    import processing

    parameters = {"INPUTS": [str(scene.image)], "MODEL": str(small_tile_model), "DEVICE": 1, "BLOCK": 256,
                  "WORKERS": 1, "OUTPUT": str(tmp_path / "many")}  # fmt: skip
    result = processing.run("sial:predict_many", parameters)
    run = json.loads(Path(result["RUN"]).read_text())
    assert run["blocks"] == {"total": 4, "computed": 4, "reused": 0}
    classes = QgsRasterLayer(result["CLASSES"][0], "classes")
    assert classes.isValid() and classes.width() == 384 and classes.crs().authid() == "EPSG:32640"
    again = json.loads(Path(processing.run("sial:predict_many", parameters)["RUN"]).read_text())
    assert again["blocks"]["reused"] == 4 and again["cluster"]["scheduler"] is None  # nothing to redo


def test_predict_many_bad_input_is_one_processing_error_and_writes_nothing(
    provider, scene, small_tile_model, tmp_path
):
    import processing
    from qgis.core import QgsProcessingException

    out = tmp_path / "many"
    parameters = {"MODEL": str(small_tile_model), "DEVICE": 1, "OUTPUT": str(out)}
    with pytest.raises(QgsProcessingException, match="no input"):
        processing.run("sial:predict_many", parameters)
    with pytest.raises(QgsProcessingException, match="not a multiple of the patch size"):
        processing.run("sial:predict_many", parameters | {"INPUTS": [str(scene.image)], "BLOCK": 300})
    with pytest.raises(QgsProcessingException, match="no raster matches"):
        processing.run("sial:predict_many", parameters | {"PATHS": str(tmp_path / "none" / "*.tif")})
    assert not out.exists()
