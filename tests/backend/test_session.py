import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.learn.disca import DiscaSettings
from backend.model.bundle import load_bundle
from backend.session.session import Session
from tests.helpers import REPO

QUICK = DiscaSettings(steps=3, learning_rate=0.01, crop=128)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("session-scene"), size=384, seed=5)


@pytest.fixture
def session(tmp_path, scene, small_tile_model):
    s = Session.create(tmp_path / "work.gpkg", scene.image, small_tile_model, "cpu", settings=QUICK)
    yield s
    s.close()


def weights(network):
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def click_set(session):
    return [(c.click_id, c.row, c.col, c.class_id) for c in session.clicks()]


def test_clicks_are_stored_with_class_iteration_and_map_position(session, scene):
    first = session.add_click(10, 20, 3)
    second = session.add_click_at(300_000 + 200.25, 2_780_000 - 101.75, 4)  # map x/y, 1-m pixels
    assert (second.row, second.col) == (101, 200)
    assert (first.class_name, first.iteration, first.source) == ("vegetation", 0, "user")
    reopened = Session.open(session.path, "cpu")
    assert click_set(reopened) == [(1, 10, 20, 3), (2, 101, 200, 4)]
    from osgeo import ogr

    store = ogr.Open(str(session.path))  # keep the dataset alive while its layer is used
    layer = store.GetLayerByName("clicks")
    assert layer.GetSpatialRef().GetAuthorityCode(None) == "32640" and layer.GetFeatureCount() == 2


def test_undo_restores_exactly_the_previous_checkpoint_and_click_set(session):
    base = weights(session.bundle.network)
    session.add_click(50, 60, 1)
    session.add_click(200, 220, 4)
    before_round = (weights(session.bundle.network), click_set(session))
    report = session.retrain()
    assert report.clicks == 2 and session.iteration == 1
    assert session.current_checkpoint().is_file()
    assert not same(weights(session.bundle.network), base)

    assert session.undo() == "undid retraining round 1"
    assert same(weights(session.bundle.network), before_round[0]) and same(before_round[0], base)
    assert click_set(session) == before_round[1] and session.iteration == 0

    session.retrain()
    after_round = weights(session.bundle.network)
    session.add_click(300, 10, 2)
    assert session.undo() == "removed click 3"
    assert click_set(session) == before_round[1]
    assert same(weights(session.bundle.network), after_round)

    session.remove_click(1)
    assert session.undo() == "restored click 1"
    assert click_set(session) == before_round[1]
    reopened = Session.open(session.path, "cpu")  # the same state from disk
    assert same(weights(reopened.bundle.network), after_round) and click_set(reopened) == before_round[1]


def test_a_rounds_steps_count_the_clicks_since_the_models_round_across_reopening(
    tmp_path, scene, small_tile_model
):
    settings = DiscaSettings(learning_rate=0.01, crop=64, max_crops=2, replay=8, anchor_crops=1, guard=False)
    session = Session.create(tmp_path / "auto.gpkg", scene.image, small_tile_model, "cpu", settings=settings)
    for i in range(5):
        session.add_click(40 + 60 * i, 50 + 50 * i, i % 3)
    assert session.retrain().steps == 5  # a batch of five new clicks
    session.add_click(330, 40, 1)
    assert session.retrain().steps == 10  # one new click
    session.close()
    reopened = Session.open(tmp_path / "auto.gpkg", "cpu")  # a fresh engine, seven clicks, one new
    reopened.add_click(60, 330, 2)
    assert reopened.retrain().steps == 10
    reopened.close()


def test_nothing_to_undo_and_bad_clicks(session):
    with pytest.raises(UserError, match="nothing to undo"):
        session.undo()
    with pytest.raises(UserError, match="outside the raster"):
        session.add_click(384, 0, 1)
    with pytest.raises(UserError, match="not a class"):
        session.add_click(0, 0, 9)
    with pytest.raises(UserError, match="no clicks to learn from"):
        session.retrain()


def test_a_click_updates_only_the_tiles_it_touches(session):
    first = session.predict()
    assert first.run["mode"] == "full" and first.run["tile_count"] == 16  # 128-px tiles over 384²
    session.add_click(100, 100, 2)
    update = session.predict()
    assert update.run["mode"] == "incremental" and update.run["tiles_computed"] <= 4
    session.retrain()
    assert session.predict().run["mode"] == "full"  # new weights: everything changes
    from osgeo import ogr

    store = ogr.Open(str(session.path))
    patches = store.GetLayerByName("patches")
    assert patches.GetFeatureCount() == update.run["patches_ranked"] > 0


def test_a_process_killed_while_retraining_leaves_a_usable_store(tmp_path, scene, small_tile_model):
    path = tmp_path / "crash.gpkg"
    session = Session.create(path, scene.image, small_tile_model, "cpu", settings=QUICK)
    session.add_click(40, 40, 1)
    session.retrain()
    good = weights(session.bundle.network)
    session.add_click(300, 300, 3)
    session.close()
    command = ["session", "retrain", str(path), "--device", "cpu", "--disca-steps", "100000"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "backend", *command], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and "retraining step 2" not in (worker.stderr.readline() or ""):
        pass
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL

    reopened = Session.open(path, "cpu")
    assert [i.iteration for i in reopened.iterations()] == [0, 1]
    assert [c.row for c in reopened.clicks()] == [40, 300]
    assert same(weights(reopened.bundle.network), good)
    assert sorted(p.name for p in reopened.checkpoints.iterdir()) == ["round-0001.safetensors"]
    reopened.retrain()  # and the session goes on
    assert reopened.iteration == 2


def test_files_a_crash_left_behind_are_cleaned_up(session):
    session.add_click(10, 10, 0)
    session.retrain()
    (session.checkpoints / "round-0002.safetensors").write_bytes(b"written, never committed")
    (session.checkpoints / "round-0002.safetensors.tmp").write_bytes(b"half")
    reopened = Session.open(session.path, "cpu")
    assert sorted(p.name for p in reopened.checkpoints.iterdir()) == ["round-0001.safetensors"]


def test_the_adapted_model_exports_as_a_bundle_that_loads(session, tmp_path):
    session.add_click(10, 10, 0)
    session.retrain()
    target = session.export_bundle(tmp_path / "adapted")
    loaded = load_bundle(target)
    assert same(weights(loaded.network), weights(session.bundle.network))
    assert loaded.card.provenance["adapted"]["rounds"] == 1 and loaded.card.name.endswith("-adapted")


def test_sequential_adaptation_starts_from_the_previous_image_weights(
    session, tmp_path, scene, small_tile_model
):
    session.add_click(10, 10, 0)
    session.retrain()
    adapted = weights(session.bundle.network)
    keep = Session.create(
        tmp_path / "next.gpkg",
        scene.image,
        small_tile_model,
        "cpu",
        starting_weights=session.current_checkpoint(),
    )
    reset = Session.create(tmp_path / "reset.gpkg", scene.image, small_tile_model, "cpu")
    assert same(weights(keep.bundle.network), adapted)
    assert not same(weights(reset.bundle.network), adapted)


def test_a_region_refresh_predicts_that_region_alone_and_the_next_run_redoes_everything(session):
    """The dock's redraw after a round: the visible extent in one window, nothing outside it."""
    from backend.predict.job import run_predict
    from backend.predict.updates import window_tiles
    from tests.helpers import read_band

    session.add_click(300, 300, 2)
    session.predict()
    session.retrain()  # new weights: every tile is stale
    before = read_band(session.outputs / "uncertainty.tif")
    report = run_predict(session.prediction(region=(0, 0, 100, 100)))
    assert report.run["mode"] == "region"
    # no click changed: only the window (100² and 128 px of context), counted as the tiles its area makes
    assert report.run["tiles_computed"] == window_tiles((0, 0, 100, 100), 384, 384, 128) == 4
    after = read_band(session.outputs / "uncertainty.tif")
    changed = ~np.isclose(after, before, atol=0, equal_nan=True)  # the scene's masked corner is NaN in both
    assert changed[:100, :100].any()
    changed[:100, :100] = False
    assert not changed.any()
    region_classes = read_band(session.outputs / "classes.tif")[:100, :100]
    assert session.predict().run["mode"] == "full"  # the mixed cache is never mistaken for a model's
    whole = read_band(session.outputs / "classes.tif")[:100, :100]
    assert (region_classes == whole).mean() > 0.98  # one window with its margin ≈ the blended tiles


def test_a_region_too_large_for_one_window_is_refreshed_by_its_tiles(session, monkeypatch):
    from backend.io.tiling import TileGrid
    from backend.predict import job, updates
    from tests.helpers import read_band

    monkeypatch.setattr(updates, "REGION_PIXELS", 128 * 128)
    session.add_click(300, 300, 2)
    session.predict()
    session.retrain()
    before = read_band(session.outputs / "uncertainty.tif")
    report = job.run_predict(session.prediction(region=(0, 0, 100, 100)))
    region_tiles = TileGrid(384, 384, 128, 32).tiles_intersecting(0, 0, 100, 100)
    assert report.run["mode"] == "region" and report.run["tiles_computed"] == len(region_tiles)
    footprint = np.zeros_like(before, dtype=bool)
    for t in region_tiles:
        footprint[t.row : t.row + t.size, t.col : t.col + t.size] = True
    changed = ~np.isclose(read_band(session.outputs / "uncertainty.tif"), before, atol=0, equal_nan=True)
    assert changed[:100, :100].any() and not changed[~footprint].any()


def test_a_session_can_train_an_untrained_network_from_clicks_alone(tmp_path, scene):
    """SIAL's path: any class list, no pretrained model, EWDL rounds on every click so far."""
    from backend.learn.sparse_training import SparseSettings as Training
    from backend.model.bundle import create_bundle, save_bundle
    from backend.model.card import ClassInfo, ClickEncoding
    from backend.predict.evaluation import read_labels
    from backend.session.settings import SialSettings
    from tests.helpers import make_card

    card = make_card(
        classes=(ClassInfo(0, "built", "#ff0000"), ClassInfo(1, "open", "#00ff00")),
        clicks=ClickEncoding(enabled=False),
    )
    save_bundle(create_bundle(card, seed=1), tmp_path / "fresh")
    settings = SialSettings(training=Training(steps=40, batch=4, crop=64, learning_rate=3e-3))
    session = Session.create(
        tmp_path / "sial.gpkg", scene.image, tmp_path / "fresh", "cpu", settings=settings
    )
    truth = read_labels(scene.labels)
    rng = np.random.default_rng(0)
    for _ in range(12):
        row, col = (int(v) for v in rng.integers(20, 360, 2))
        if truth[row, col] != 255:
            session.add_click(row, col, 0 if truth[row, col] == 0 else 1)
    report = session.retrain()
    assert report.steps == 40 and report.losses[-1] < report.losses[0]
    assert session.iteration == 1 and session.current_checkpoint().is_file()
    reopened = Session.open(session.path, "cpu")
    assert isinstance(reopened.settings, SialSettings) and reopened.settings.training.steps == 40


def test_a_session_carries_one_prior_correction_through_sial_and_disca_rounds(tmp_path, scene):
    """Each round corrects the model for the clicks' class shares; the next round takes that
    correction out before it trains, so corrections never pile up in the output bias."""
    from backend.learn.prior_shift import PriorShift
    from backend.learn.sparse_training import SparseSettings as Training
    from backend.model.bundle import create_bundle, save_bundle
    from backend.model.card import ClickEncoding
    from backend.predict.evaluation import read_labels
    from backend.session.settings import SialSettings
    from tests.helpers import make_card

    save_bundle(create_bundle(make_card(clicks=ClickEncoding(enabled=False)), seed=1), tmp_path / "fresh")
    training = Training(steps=20, batch=4, crop=64, learning_rate=3e-3, adjust_prior=True)
    session = Session.create(
        tmp_path / "sial.gpkg", scene.image, tmp_path / "fresh", "cpu", settings=SialSettings(training)
    )
    truth = read_labels(scene.labels)
    rng = np.random.default_rng(0)
    while len(session.click_list()) < 15:
        row, col = (int(v) for v in rng.integers(20, 360, 2))
        if truth[row, col] != 255:
            session.add_click(row, col, int(truth[row, col]))
    first = session.retrain()
    assert first.prior_shift is not None
    assert sum(first.prior_shift["estimated_shares"]) == pytest.approx(1, abs=1e-6)
    head = session.bundle.network.segmentation_head[0].bias.detach().clone()
    # a round that cannot move the weights (learning rate 0) must leave them as the first round
    # did, less its correction, plus its own
    second = session.retrain(SialSettings(replace(training, learning_rate=0.0)))
    expected = head - torch.tensor(PriorShift.from_json(first.prior_shift).adjustment, dtype=torch.float32)
    expected += torch.tensor(PriorShift.from_json(second.prior_shift).adjustment, dtype=torch.float32)
    assert torch.allclose(session.bundle.network.segmentation_head[0].bias, expected, atol=1e-5)
    reopened = Session.open(session.path, "cpu")
    assert reopened.weights.prior() == PriorShift.from_json(second.prior_shift)
    assert reopened.settings.training.learning_rate == 0.0  # it trains on as its last round did
    # a DISCA round fine-tunes around the correction and keeps it on record, so that the next
    # SIAL round (here one without a correction of its own) still takes it out
    disca = session.retrain(DiscaSettings(steps=2, crop=64, max_crops=2, replay=4, anchor_crops=1))
    assert disca.prior_shift == second.prior_shift
    tuned = session.bundle.network.segmentation_head[0].bias.detach().clone()
    session.retrain(SialSettings(replace(training, learning_rate=0.0, adjust_prior=False)))
    plain = tuned - torch.tensor(PriorShift.from_json(second.prior_shift).adjustment, dtype=torch.float32)
    assert torch.allclose(session.bundle.network.segmentation_head[0].bias, plain, atol=1e-5)
    reopened = Session.open(session.path, "cpu")
    assert reopened.weights.prior() is None
    assert isinstance(reopened.settings, SialSettings) and not reopened.settings.training.adjust_prior
