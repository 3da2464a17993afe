import json

import numpy as np
import pytest
import rasterio
import torch

from backend.demo.scene import write_scene
from backend.io.clicks import Click
from backend.learn.disca import DiscaSettings
from backend.predict.held_classes import (
    classes_to_hold,
    classes_to_hold_on,
    held_message,
    released,
    without_classes,
)
from backend.session.session import Session
from tests.helpers import read_band, run_cli

QUICK = DiscaSettings(steps=3, learning_rate=0.01, crop=128)


def test_a_class_is_held_when_the_map_lacks_it_and_no_click_names_it():
    classes = np.array([[0, 1, 255], [3, 1, 0]], dtype=np.uint8)  # 255: nodata, never a class
    clicks = [Click(0, 0, 4)]
    assert classes_to_hold(classes, clicks, 5) == (2,)
    assert classes_to_hold(classes, [], 5) == (2, 4)
    assert released((2, 4), [Click(1, 1, 4)]) == (2,)


def test_a_trace_of_a_class_counts_as_absent():
    classes = np.zeros((100, 100), dtype=np.uint8)
    classes[:10] = 1
    classes[50, :10] = 2  # 10 px of 10 000: 0.1 %, a trace the model left
    classes[60, :11] = 3  # 11 px: on the map
    assert classes_to_hold(classes, [], 4) == (2,)
    assert classes_to_hold(classes, [Click(0, 0, 2)], 4) == ()


def test_held_classes_get_no_probability_and_the_rest_still_sum_to_one():
    probabilities = torch.tensor([[0.5, 0.1], [0.3, 0.2], [0.2, 0.7]])[:, :, None]  # 3 classes × 2 px
    held = without_classes(probabilities, (0,))
    assert torch.allclose(held[:, :, 0], torch.tensor([[0.0, 0.0], [0.6, 2 / 9], [0.4, 7 / 9]]))
    assert held.argmax(dim=0).flatten().tolist() == [1, 2]  # the first pixel's class was held
    assert without_classes(probabilities, ()) is probabilities
    assert torch.equal(without_classes(probabilities, (0, 1, 2)), probabilities)  # nothing left to hold for


def test_the_classes_on_a_map_file_are_read_block_by_block(tmp_path):
    path = tmp_path / "classes.tif"
    data = np.zeros((64, 64), dtype=np.uint8)
    data[60:, 60:] = 3  # in the last block alone
    profile = dict(driver="GTiff", width=64, height=64, count=1, dtype="uint8", tiled=True)
    with rasterio.open(path, "w", blockxsize=16, blockysize=16, **profile) as dataset:
        dataset.write(data, 1)
    assert classes_to_hold_on(path, [Click(0, 0, 1)], 5) == (2, 4)
    data[:] = 0
    data[:2, :2] = 3  # 4 px of 4096 in the first block: a trace of the whole map, not of its block
    with rasterio.open(path, "r+") as dataset:
        dataset.write(data, 1)
    assert classes_to_hold_on(path, [Click(0, 0, 1)], 5) == (2, 3, 4)
    assert classes_to_hold_on(tmp_path / "none.tif", [], 5) == ()  # no map yet: nothing to judge


def test_the_message_names_the_held_classes():
    assert held_message((), ["a", "b"]) is None
    assert "'road', 'water'" in held_message((2, 3), ["land", "tree", "road", "water"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("held-scene"), size=384, seed=5)


def test_a_sessions_round_keeps_unclicked_absent_classes_off_the_map_until_a_click_names_them(
    tmp_path, scene, small_tile_model
):
    session = Session.create(tmp_path / "work.gpkg", scene.image, small_tile_model, "cpu", settings=QUICK)
    session.add_click(300, 300, 1)
    session.predict()
    before = read_band(session.outputs / "classes.tif")
    n = session.bundle.card.n_classes
    absent = set(range(n)) - set(np.unique(before[before < n]).tolist())
    assert absent == {3, 4}  # the untrained network maps this scene with classes 0–2
    session.add_click(100, 100, 3)
    trained = session.train_round(session.click_list())
    session.commit_round(trained)
    assert trained.held_classes == session.held_classes() == (4,)
    assert json.loads(session.current.details)["held_classes"] == [4]
    session.predict()
    after = read_band(session.outputs / "classes.tif")
    assert not (after == 4).any()
    session.add_click(200, 200, 4)  # a click of a held class lets it back at once
    assert session.held_classes() == ()
    assert session.prediction().held_classes == session.held_classes()
    session.close()
    with Session.open(tmp_path / "work.gpkg", "cpu") as reopened:
        assert reopened.held_classes() == ()
        reopened.undo()  # the click
        assert reopened.held_classes() == (4,)
        reopened.undo()  # the round: the weights from before it hold nothing back
        assert reopened.held_classes() == ()


def test_a_session_may_leave_every_class_free(tmp_path, scene, small_tile_model):
    settings = DiscaSettings(steps=3, learning_rate=0.01, crop=128, hold_classes=False)
    with Session.create(tmp_path / "free.gpkg", scene.image, small_tile_model, "cpu", settings=settings) as s:
        s.add_click(300, 300, 1)
        s.predict()
        assert s.train_round(s.click_list()).held_classes == () and s.held_classes() == ()


def test_the_command_line_says_which_classes_a_round_held(tmp_path, scene, small_tile_model):
    path = tmp_path / "cli.gpkg"
    with Session.create(path, scene.image, small_tile_model, "cpu") as session:
        session.add_click(300, 300, 1)
    assert run_cli("session", "predict", path, "--device", "cpu").returncode == 0
    result = run_cli("session", "retrain", path, "--device", "cpu", "--disca-steps", "2")
    assert result.returncode == 0, result.stderr
    assert "kept off the map: 'vegetation', 'water'" in result.stdout, result.stdout
    result = run_cli("session", "retrain", path, "--device", "cpu", "--disca-steps", "2", "--no-hold-classes")
    assert result.returncode == 0 and "kept off the map" not in result.stdout, result.stdout
    with Session.open(path, "cpu", writer=False) as session:
        assert session.held_classes() == () and not session.settings.hold_classes
