import json
from pathlib import Path

from backend.demo.run import run_demo
from backend.demo.scene import write_scene
from backend.progress import Monitor
from tests.helpers import run_cli


def test_the_demo_runs_the_whole_loop_and_writes_a_report(tmp_path, fast_model):
    scene = write_scene(tmp_path / "scene", size=512, seed=1)
    seen = []
    monitor = Monitor(lambda fraction, message: seen.append(fraction))
    result = run_demo(tmp_path / "demo", scene.image, scene.labels, fast_model, clicks=2, monitor=monitor)
    assert set(result.miou) == {"initial", "ac", "disca"}
    assert seen[-1] == 1.0 and seen == sorted(seen)
    html = result.report.read_text()
    pictures = (
        "uncertainty.png",
        "classes-before.png",
        "classes-after-ac.png",
        "classes-after-disca.png",
        "miou.png",
    )
    for picture in pictures:
        assert f"report/{picture}" in html
        assert (tmp_path / "demo" / "report" / picture).stat().st_size > 10_000
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert "mIoU with DISCA" in summary["facts"] and (tmp_path / "demo" / "disca" / "classes.tif").is_file()


def test_the_demo_on_a_raster_without_labels_skips_the_clicks(tmp_path, fast_model):
    scene = write_scene(tmp_path / "scene", size=300, seed=2)
    result = run_demo(tmp_path / "demo", scene.image, None, fast_model)
    assert result.miou == {}
    assert "No reference labels" in result.report.read_text()


def test_labels_without_a_raster_are_refused(tmp_path):
    result = run_cli("demo", "--labels", tmp_path / "x.tif", "--out", tmp_path / "o")
    assert result.returncode == 2 and "give the raster too" in result.stderr


def test_the_demo_finds_the_bundled_model():
    from backend.demo.run import DEFAULT_MODEL, pick_model

    model, warning = pick_model(None, Path("unused"))
    assert model.name == DEFAULT_MODEL and (model / "model.json").is_file() and warning is None
