import numpy as np
import pytest
import torch

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.learn.confidnet import train_confidnet
from backend.model.bundle import ModelBundle, load_bundle, save_bundle
from backend.predict.job import PredictParameters, run_predict
from tests.helpers import read_band


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("confid"), size=256, seed=8)


def test_confidnet_trains_round_trips_through_the_bundle_and_drives_predict(scene, fast_model, tmp_path):
    bundle = load_bundle(fast_model)
    report = train_confidnet(
        bundle,
        [(str(scene.image), str(scene.labels))],
        steps=30,
        crop=64,
        batch=4,
        learning_rate=1e-3,
        device="cpu",
    )
    assert report["last_loss"] < report["first_loss"]
    save_bundle(bundle, tmp_path / "with-head")
    loaded = load_bundle(tmp_path / "with-head")
    assert loaded.card.confidnet_file == "confidnet.safetensors" and loaded.card.confidnet_sha256
    for a, b in zip(
        loaded.confidnet.state_dict().values(), bundle.confidnet.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    run = run_predict(
        PredictParameters(
            raster=scene.image,
            out_dir=tmp_path / "out",
            model_dir=tmp_path / "with-head",
            acquisition="confidnet",
        )
    )
    u = read_band(run.uncertainty)
    valid = ~np.isnan(u)
    assert valid.any() and u[valid].min() >= 0.0 and u[valid].max() <= 1.0 and u[valid].std() > 0


@pytest.fixture(scope="module")
def headed_model(scene, fast_model, tmp_path_factory):
    bundle = load_bundle(fast_model)
    train_confidnet(bundle, [(str(scene.image), str(scene.labels))], steps=3, crop=64, batch=2, device="cpu")
    target = save_bundle(bundle, tmp_path_factory.mktemp("headed") / "model")
    (target / "MODEL_CARD.md").write_text("# validation figures of the original model\n")
    return target


def test_disca_ranks_by_confidnet_and_adapted_exports_keep_the_head(scene, headed_model, tmp_path):
    from backend.protocols.dial import BenchmarkParameters, run_benchmark
    from backend.session.session import Session

    result = run_benchmark(
        BenchmarkParameters(
            raster=scene.image,
            labels=scene.labels,
            out_dir=tmp_path / "bench",
            clicks=2,
            mode="disca",
            order="confidnet",
            model_dir=headed_model,
            patch_size=128,
        )
    )
    assert len(result["steps"]) == 2
    session = Session.create(tmp_path / "s.gpkg", scene.image, headed_model, device="cpu")
    session.add_click(40, 40, 1)
    session.retrain()
    exported = load_bundle(session.export_bundle(tmp_path / "adapted"))
    assert exported.confidnet is not None and exported.card.confidnet_file == "confidnet.safetensors"
    assert not (tmp_path / "adapted" / "MODEL_CARD.md").exists()  # the original's card would mislead


def test_a_card_copied_from_a_headed_bundle_saves_without_a_dangling_head(headed_model, tmp_path):
    headed = load_bundle(headed_model)
    assert headed.card.confidnet_file
    target = save_bundle(ModelBundle(headed.card, headed.network), tmp_path / "no-head")
    reloaded = load_bundle(target)
    assert reloaded.confidnet is None and reloaded.card.confidnet_file == ""


def test_a_bundle_without_a_head_says_how_to_get_one(scene, fast_model, tmp_path):
    with pytest.raises(UserError, match="no ConfidNet head"):
        run_predict(
            PredictParameters(
                raster=scene.image, out_dir=tmp_path / "o", model_dir=fast_model, acquisition="confidnet"
            )
        )


def test_the_confidnet_command_records_its_run_and_the_card_shows_the_head(scene, fast_model, tmp_path):
    import json

    from backend.protocols.modelcard import write_model_card
    from tests.helpers import run_cli

    config = tmp_path / "config.json"
    classes = [[c.name, c.color] for c in load_bundle(fast_model).card.classes]
    config.write_text(
        json.dumps({"name": "t", "classes": classes, "train": [[str(scene.image), str(scene.labels)]]})
    )
    result = run_cli("confidnet", fast_model, "--config", config, "--steps", "3", "--out", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    head = load_bundle(tmp_path / "m").card.provenance["confidnet"]
    assert head["steps"] == 3 and head["command"].endswith(f"--steps 3 --out {tmp_path / 'm'}")
    text = write_model_card(tmp_path / "m").read_text()
    assert "## ConfidNet head" in text and "trained 3 steps" in text and head["command"] in text
