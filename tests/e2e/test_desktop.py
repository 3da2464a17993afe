"""The packaged plugin in the real QGIS desktop under Xvfb: a scripted session, end to end.

Screenshots land in e2e_output/ (ignored by git) for a person to look at.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.demo.scene import write_scene
from tests.helpers import REPO, make_bundle

pytestmark = pytest.mark.e2e
SCREENSHOTS = REPO / "e2e_output"


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                    reason="needs xvfb-run and the QGIS desktop (Debian: xvfb, qgis)")  # fmt: skip
def test_a_scripted_session_in_the_qgis_desktop(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    from desktop import command, environment, make_profile

    scene = write_scene(tmp_path / "scene", size=768, seed=4)
    model = tmp_path / "model"
    make_bundle(model, tile=256, overlap=64)  # a small real network: the test is about the plugin
    profiles = make_profile(tmp_path / "profiles")
    out = tmp_path / "out"
    out.mkdir()
    env = environment() | {
        "SIAL_E2E_OUT": str(out),
        "SIAL_E2E_RASTER": str(scene.image),
        "SIAL_E2E_MODEL": str(model),
    }
    probe = Path(__file__).with_name("probe.py")
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *command(profiles, "--code", str(probe))],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    report_file = out / "report.json"
    assert report_file.exists(), (
        f"QGIS ended without a report (exit {result.returncode}):\n{result.stderr[-3000:]}"
    )
    report = json.loads(report_file.read_text())
    SCREENSHOTS.mkdir(exist_ok=True)
    for png in out.glob("*.png"):
        shutil.copyfile(png, SCREENSHOTS / png.name)
    assert "error" not in report, report["error"]
    assert report["predicted"] == "ok" and report["last_error"] == ""
    assert report["steps"] == [
        "1-predicted",
        "1b-uncertainty-heatmap",
        "2-three-clicks",
        "3-retrained",
        "4-next-patch",
        "5-sial-untrained",
        "6-sial-retrained",
    ]
    assert [c[2] for c in report["clicks"]] == ["water", "building", "vegetation"]
    assert [h["kind"] for h in report["history"]] == ["start", "retrain"] and report["history"][1][
        "clicks"
    ] == 3
    assert report["group"]["layers"] == ["clicks", "patch queue", "uncertainty", "class map"]
    assert report["legend_classes"] == ["building", "land", "road", "vegetation", "water"]
    assert report["sial_retrain_button"] == "Retrain (SIAL)" and report["sial_last_error"] == ""
    assert [(h["kind"], h["clicks"]) for h in report["sial_history"]] == [("start", 0), ("retrain", 4)]
    assert report["sial_palette"] == ["1 built-up (1)", "2 bare (1)", "3 green (1)", "4 water (1)"]
    assert report["sial_legend_classes"] == ["built-up", "bare", "green", "water"]
    renderers = {layer["name"]: layer["renderer"] for layer in report["layers"]}
    assert renderers["class map"] == "paletted" and renderers["uncertainty"] == "singlebandpseudocolor"
    for name in (
        "export-classes.tif",
        "export-polygons.gpkg",
        "export-clicks.gpkg",
        "export-bundle/model.json",
    ):
        assert (out / name).is_file(), name
    assert all((SCREENSHOTS / f"{step}.png").stat().st_size > 20_000 for step in report["steps"])
