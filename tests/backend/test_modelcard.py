import json

from backend.demo.scene import write_scene
from backend.model.bundle import load_bundle
from backend.protocols.modelcard import evaluate, record, write_model_card


def test_evaluation_is_recorded_and_the_card_shows_it(tmp_path, fast_model):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(fast_model, model)
    scene = write_scene(tmp_path / "scene", size=320, seed=6)
    evaluation = evaluate(model, [(str(scene.image), str(scene.labels))], clicks=2, device="cpu")
    assert set(evaluation) == {"rasters", "clicks_0", "clicks_2"}
    assert set(evaluation["clicks_0"]["per_class_iou"]) == {"building", "land", "road", "vegetation", "water"}
    sha = load_bundle(model).card.weights_sha256
    record(model, evaluation)
    card = load_bundle(model).card  # still loads: the weights and their hash are untouched
    assert card.weights_sha256 == sha and card.provenance["evaluation"] == json.loads(json.dumps(evaluation))
    text = write_model_card(model, failure_modes=["confuses wet sand with water"]).read_text()
    assert "| no clicks |" in text and "| 2 simulated clicks per raster (AC) |" in text
    assert "confuses wet sand with water" in text and "## Classes" in text and "`#3c1098`" in text


def test_the_card_states_the_trained_pixel_sizes_and_other_sensor_augmentations(tmp_path, fast_model):
    import shutil
    from dataclasses import replace

    from backend.model.bundle import save_bundle

    model = tmp_path / "model"
    shutil.copytree(fast_model, model)
    bundle = load_bundle(model)
    config = {"scale_range": [0.25, 1.33], "colour_jitter": 0.15, "hue_degrees": 15, "noise_std": 0.02}
    card = bundle.card.with_updates(
        input=replace(bundle.card.input, gsd_m=1.0, gsd_range_m=(0.25, 1.33)),
        provenance={**bundle.card.provenance, "config": config, "gsd_estimate": "from road widths"},
    )
    save_bundle(replace(bundle, card=card), model)
    text = write_model_card(model).read_text()
    assert "training imagery: 1 m (from road widths)" in text
    assert "zoomed training crops covered: 0.25–1.33 m" in text and "drone image at 0.25 m" in text
    assert "colour jitter 0.15, then hue turned by up to 15°, noise of σ up to 0.02." in text
