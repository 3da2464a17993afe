"""The seed-ensemble study (experiments/seeds.py): runs on the same labels, alone, picked by
held-out points, and as an ensemble."""

import argparse

import numpy as np
import pytest

from backend.demo.scene import write_scene
from backend.errors import UserError
from backend.learn.sparse_training import SparseSettings
from backend.predict.evaluation import LABEL_NODATA
from backend.protocols.sial import run_sial
from tests.helpers import sial_parameters

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("seeds-scene"), size=384, seed=12)


def test_the_seeds_benchmark_picks_by_held_out_points_and_refuses_runs_on_other_labels(
    scene, tmp_path, monkeypatch
):
    from benchmarks import report
    from experiments import seeds

    monkeypatch.setattr(report, "OUT", tmp_path / "benchmarks-out")  # not the real figures' folder
    runs = []
    for seed, first_clicks in ((0, "regions"), (1, "regions"), (0, "untrained")):
        folder = tmp_path / f"{first_clicks}-{seed}"
        folder.mkdir()
        training = SparseSettings(steps=3, batch=2, crop=64, seed=seed)
        params = sial_parameters(scene, folder, seed=seed, first_clicks=first_clicks, training=training)
        params.iterations = 1
        run_sial(params)
        runs.append(params.out_dir)
    args = argparse.Namespace(
        runs=runs[:2],
        config=runs[0].parent / "config.json",
        points=300,
        size=2,
        corrected=False,
        seed=0,
        device="cpu",
    )
    data = seeds.run(args)
    networks, (session,) = data["networks"], data["sessions"]
    best = max(networks, key=lambda n: n["points_miou"])
    assert session["picked"] == pytest.approx(best["validation_miou"], abs=0.005)
    assert session["mean"] == pytest.approx(np.mean([n["validation_miou"] for n in networks]), abs=0.01)
    assert 0 < session["ensemble"] <= 100 and (tmp_path / "benchmarks-out" / "seeds.json").is_file()
    with pytest.raises(UserError, match="share their labels"):
        seeds.run(argparse.Namespace(**{**vars(args), "runs": runs[1:]}))
    with pytest.raises(UserError, match="not the output folder"):
        seeds.run(argparse.Namespace(**{**vars(args), "runs": [runs[0], tmp_path]}))


def test_held_out_points_are_labelled_pixels_spread_over_the_rasters_by_their_size():
    from experiments.seeds import held_out_points

    small, large = np.full((10, 10), LABEL_NODATA, np.uint8), np.zeros((100, 100), np.uint8)
    small[:5] = 1
    points = held_out_points([small, large], 400, seed=3)
    assert sum(len(p) for p in points) == 400 and len(points[0]) < 10
    assert (small.ravel()[points[0]] == 1).all() and len(np.unique(points[1])) == len(points[1])
    again = held_out_points([small, large], 400, seed=3)
    assert all((a == b).all() for a, b in zip(points, again, strict=True))
