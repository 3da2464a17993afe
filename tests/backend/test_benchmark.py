import json

import numpy as np
import pytest

from backend.demo.scene import write_scene
from backend.learn.disca import DiscaSettings
from backend.predict.evaluation import read_labels
from backend.protocols.dial import BenchmarkParameters, run_benchmark
from tests.helpers import run_cli


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("bench-scene"), size=512, seed=9)


def bench(scene, model, out, **options):
    params = dict(raster=scene.image, labels=scene.labels, out_dir=out, clicks=6, model_dir=model,
                  device="cpu", patch_size=128) | options  # fmt: skip
    return run_benchmark(BenchmarkParameters(**params))


def test_ac_run_follows_the_contract_and_clicks_carry_the_true_class(scene, fast_model, tmp_path):
    result = bench(scene, fast_model, tmp_path / "ac")
    assert {"initial_miou", "final_miou", "per_class_iou", "steps"} <= set(result)
    assert [s["clicks"] for s in result["steps"]] == list(range(1, len(result["steps"]) + 1))
    assert 1 <= len(result["steps"]) <= 6
    assert all(0 <= s["miou"] <= 100 and s["seconds"] > 0 for s in result["steps"])
    assert result["final_miou"] == result["steps"][-1]["miou"]
    truth = read_labels(scene.labels)
    for step in result["steps"]:
        row, col, class_id = step["click"]
        assert truth[row, col] == class_id
    visited = [s["patch"] for s in result["steps"]]
    assert len(set(visited)) == len(visited)  # one click per patch in the first pass
    saved = json.loads((tmp_path / "ac" / "benchmark.json").read_text())
    assert saved["steps"] == result["steps"]
    assert (tmp_path / "ac" / "benchmark.png").stat().st_size > 5000
    assert (tmp_path / "ac" / "clicks.gpkg").is_file()


def test_each_mode_visits_first_the_patch_the_dock_ranks_first_in_that_mode(scene, fast_model, tmp_path):
    """AC ranks by class-weighted uncertainty and DISCA by the mean, as the dock does; each
    begins at the patch that ``predict --patch-score`` of that rule ranks first (64-px patches:
    on this scene the two rules rank different patches first)."""
    from osgeo import ogr

    from backend.predict.job import PredictParameters, run_predict

    settings, firsts = DiscaSettings(steps=1, crop=128), []
    for mode, rule in (("ac", "class-weighted"), ("disca", "mean")):
        result = bench(scene, fast_model, tmp_path / mode, mode=mode, clicks=1, disca=settings, patch_size=64)
        assert result["patch_score"] == rule
        out = tmp_path / f"predict-{rule}"
        run_predict(
            PredictParameters(scene.image, out, fast_model, device="cpu", patch_size=64, patch_score=rule)
        )
        source = ogr.Open(str(out / "patches.gpkg"))
        first = next(f["patch_id"] for f in source.GetLayerByName("patches") if f["rank"] == 1)
        assert result["steps"][0]["patch"] == first
        firsts.append(first)
    assert firsts[0] != firsts[1]
    chosen = bench(scene, fast_model, tmp_path / "ac-mean", clicks=1, patch_score="mean")
    assert chosen["patch_score"] == "mean"


def test_random_order_is_reproducible_with_the_seed(scene, fast_model, tmp_path):
    a = bench(scene, fast_model, tmp_path / "a", order="random", seed=4, clicks=4)
    b = bench(scene, fast_model, tmp_path / "b", order="random", seed=4, clicks=4)
    c = bench(scene, fast_model, tmp_path / "c", order="random", seed=5, clicks=4)
    assert [s["patch"] for s in a["steps"]] == [s["patch"] for s in b["steps"]]
    assert [s["patch"] for s in a["steps"]] != [s["patch"] for s in c["steps"]]


def test_disca_run_retrains_after_every_click(scene, fast_model, tmp_path):
    settings = DiscaSettings(steps=2, learning_rate=0.01, crop=128)
    result = bench(scene, fast_model, tmp_path / "disca", mode="disca", clicks=2, disca=settings)
    assert result["mode"] == "disca" and len(result["steps"]) == 2 and result["patch_score"] == "mean"
    assert all(s["retrain_seconds"] > 0 for s in result["steps"])
    assert result["disca"]["steps"] == 2
    clicked = set()
    for step in result["steps"]:  # a round holds off the map only classes no click named
        clicked.add(step["click"][2])
        assert not clicked & set(step["held_classes"])
    final = read_labels(tmp_path / "disca" / "classes.tif")
    assert not np.isin(final, result["steps"][-1]["held_classes"]).any()


def test_the_cli_writes_results_and_several_runs_plot_together(scene, fast_model, tmp_path):
    common = [
        "--labels",
        scene.labels,
        "--model",
        fast_model,
        "--clicks",
        "3",
        "--device",
        "cpu",
        "--patch-size",
        "128",
    ]
    first = run_cli(
        "benchmark", scene.image, "--out", tmp_path / "one", "--mode", "ac", "--order", "random", *common
    )
    assert first.returncode == 0, first.stderr
    assert "mIoU" in first.stdout
    second = run_cli("benchmark", scene.image, "--out", tmp_path / "two", "--order", "margin", *common)
    assert second.returncode == 0, second.stderr
    plot = run_cli(
        "plot", tmp_path / "one", tmp_path / "two" / "benchmark.json", "--out", tmp_path / "both.png"
    )
    assert plot.returncode == 0 and (tmp_path / "both.png").stat().st_size > 5000


def test_labels_on_another_grid_are_refused(scene, fast_model, tmp_path):
    from tests.helpers import write_raster

    small = write_raster(tmp_path / "small.tif", np.zeros((1, 100, 100), np.uint8))
    options = ["--labels", small, "--model", fast_model, "--out", tmp_path / "x", "--clicks", "2"]
    result = run_cli("benchmark", scene.image, *options)
    assert result.returncode == 2 and "must share the grid" in result.stderr
