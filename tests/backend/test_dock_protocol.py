"""``benchmark --protocol dock``: a few clicks on the current map, then one round, as in the dock."""

import json

import numpy as np
import pytest

from backend.demo.scene import write_scene
from backend.learn.disca import DiscaSettings
from backend.predict.evaluation import read_labels
from backend.protocols.dock import DockParameters, run_dock
from tests.helpers import run_cli, write_raster


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("dock"), size=384, seed=2)


def test_rounds_of_clicks_on_the_errors_then_one_retraining(scene, fast_model, tmp_path):
    settings = DiscaSettings(crop=128, steps=3)
    result = run_dock(
        DockParameters(
            scene.image, scene.labels, tmp_path / "out", pattern="per-class", rounds=2,
            model_dir=fast_model, disca=settings,
        )
    )  # fmt: skip
    truth = read_labels(scene.labels)
    assert json.loads((tmp_path / "out" / "dock.json").read_text()) == result
    assert 1 <= len(result["rounds"]) <= 2
    seen = set()
    for number, r in enumerate(result["rounds"], start=1):
        assert r["round"] == number and 1 <= len(r["new_clicks"]) <= 5  # one per class at most
        for row, col, class_id in r["new_clicks"]:
            assert truth[row, col] == class_id and (row, col) not in seen  # true class, new place
            seen.add((row, col))
        assert r["clicks"] == len(seen)
        assert r["miou_kept"] == (r["miou_after_round"] if r["kept"] else r["miou_with_clicks"])
        assert set(r["check"]) == {
            "clicks",
            "wrong_before",
            "wrong_after",
            "changed_far",
            "worst_class",
            "worst_loss",
            "confident_changed",
        }
        assert r["kept"] == (r["check"]["wrong_after"] <= r["check"]["wrong_before"])
    assert result["initial_miou"] == result["rounds"][0]["miou_before_clicks"]
    assert result["final_miou"] == result["rounds"][-1]["miou_kept"]


def test_the_cli_runs_the_largest_errors_and_refuses_labels_on_another_grid(scene, fast_model, tmp_path):
    common = ("--protocol", "dock", "--model", fast_model, "--disca-steps", "2")
    result = run_cli(
        "benchmark", scene.image, "--labels", scene.labels, "--out", tmp_path / "a", "--clicks", "4", *common
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("round 1: 4 clicks, mIoU "), result.stdout
    small = write_raster(tmp_path / "small.tif", np.zeros((1, 100, 100), dtype=np.uint8))
    result = run_cli("benchmark", scene.image, "--labels", small, "--out", tmp_path / "b", *common)
    assert (
        result.returncode == 2
        and result.stderr.startswith("error: labels ")
        and "share the grid" in result.stderr
    )


def test_labels_with_a_class_the_model_lacks_are_one_clear_error():
    from backend.errors import UserError
    from backend.predict.evaluation import score

    truth = np.array([[0, 1], [7, 255]], dtype=np.uint8)
    with pytest.raises(UserError, match="the labels hold class 7 but the model has 5 classes"):
        score(np.zeros((2, 2), dtype=np.uint8), truth, ["a", "b", "c", "d", "e"])
    assert score(np.zeros((2, 2), dtype=np.uint8), truth, [str(i) for i in range(8)]).confusion.sum() == 3
