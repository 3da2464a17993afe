"""The packaged plugin in the real QGIS desktop under Xvfb: a scripted session, end to end.

The plugin is installed from the built zip into a throwaway profile; probe.py drives it on the
generated sample scene with the bundled model. The screenshots land in the test's output folder
and in e2e_output/ (ignored by git) at full size, and as the small PNGs of the user guide in
e2e_output/docs-images/ (the numbers dropped from their names; 2-class-map is also overview.png).
``SIAL_UPDATE_DOCS_IMAGES=1`` copies those into docs/images/ (a run's timings show in them, so a
plain test run leaves the committed pictures alone).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.demo.scene import write_scene
from sial_qgis_plugin.acquisitions import NO_CONFIDNET
from tests.helpers import REPO

pytestmark = pytest.mark.e2e
SCREENSHOTS = REPO / "e2e_output"
DOCS_IMAGES = REPO / "docs" / "images"
SMALL_IMAGES = SCREENSHOTS / "docs-images"
OVERVIEW = "2-class-map"
DOCS_LIMIT = 300_000  # bytes per image in docs/images
STEPS = [
    "1-dock-before-predict",
    "2-class-map",
    "3-uncertainty-patches",
    "4-mcdropout-heatmap",
    "5-confidnet-heatmap",
    "6-next-patch-clicks",
    "7-retrained-history",
    "8-export-menu",
    "9-sial-new-model",
    "10-session-list",
    "11-delete-session",
    "12-reopened-project",
    "13-no-crs-identity",
    "14-no-crs-none",
    "15-dock",
]
MODAL = {"11-delete-session": "Delete the session"}  # the confirmation, on screen
MAX_STALL_S = 1.5
"""The longest QGIS may freeze while the plugin works, in this test: the target is 0.5 s, and an
idle run measures 0.11–0.37 s (BENCHMARKS.md); the test's bound leaves room for a loaded CI
machine (importing torch alone holds Python's lock 0.2–0.3 s) and still fails on the 2–5 s
freezes the plugin had (session creation and the torch import on the GUI thread)."""
GROUP = "Segmentation session — "


def small_png(source: Path, target: Path, limit: int = DOCS_LIMIT) -> int:
    """``source`` as a palette PNG under ``limit`` bytes: 256 colours by octree (small UI colours,
    such as the legend's swatches, stay true), smaller if need be, fewer colours as a last resort."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    for scale, colours in ((1.0, 256), (0.9, 256), (0.8, 256), (0.7, 256), (0.7, 128)):
        size = (round(image.width * scale), round(image.height * scale))
        resized = image if scale == 1.0 else image.resize(size, Image.LANCZOS)
        resized.quantize(colours, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)
        if target.stat().st_size < limit:
            return target.stat().st_size
    raise AssertionError(f"{source.name} does not fit in {limit} bytes")


def canvas_colours(png: Path, box: list[int]) -> int:
    """How many colours the map canvas shows in a screenshot (an empty canvas has one or two)."""
    from PIL import Image

    x, y, width, height = box
    canvas = Image.open(png).convert("RGB").crop((x, y, x + width, y + height)).reduce(4)
    return len(canvas.getcolors(maxcolors=1 << 20) or [])


@pytest.mark.skipif(shutil.which("xvfb-run") is None or shutil.which("qgis") is None,
                    reason="needs xvfb-run and the QGIS desktop (Debian: xvfb, qgis)")  # fmt: skip
def test_a_scripted_session_in_the_qgis_desktop(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    from desktop import command, environment, make_profile

    scene = write_scene(tmp_path / "scene", size=768, seed=4)
    profiles = make_profile(tmp_path / "profiles")
    out = tmp_path / "out"
    out.mkdir()
    env = environment() | {
        "SIAL_E2E_OUT": str(out),
        "SIAL_E2E_RASTER": str(scene.image),
        "SIAL_E2E_LABELS": str(scene.labels),
    }
    probe = Path(__file__).with_name("probe.py")
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1440x960x24", *command(profiles, "--code", str(probe))],
        env=env, capture_output=True, text=True, timeout=1500,
    )  # fmt: skip
    report_file = out / "report.json"
    assert report_file.exists(), (
        f"QGIS ended without a report (exit {result.returncode}):\n{result.stderr[-3000:]}"
    )
    report = json.loads(report_file.read_text())
    SCREENSHOTS.mkdir(exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):  # an earlier run's, perhaps of other steps
        old.unlink()
    for png in out.glob("*.png"):
        shutil.copyfile(png, SCREENSHOTS / png.name)
    assert "error" not in report, report["error"]
    check_the_session(report, out)
    check_the_acquisition_functions(report)
    check_the_sessions(report)
    check_the_unplaced_rasters(report)
    check_the_small_promises(report)

    SMALL_IMAGES.mkdir(parents=True, exist_ok=True)
    for step in report["steps"]:
        png = out / f"{step}.png"
        assert report["modal"][step] == MODAL.get(step), f"{step}: modal dialog {report['modal'][step]}"
        if report["canvas"][step] is not None:  # the dock alone has no canvas
            assert canvas_colours(png, report["canvas"][step]) > 200, f"{step}: the map canvas is empty"
        small_png(png, SMALL_IMAGES / f"{step.split('-', 1)[1]}.png")
    shutil.copyfile(SMALL_IMAGES / f"{OVERVIEW.split('-', 1)[1]}.png", SMALL_IMAGES / "overview.png")
    if os.environ.get("SIAL_UPDATE_DOCS_IMAGES"):
        shutil.copytree(SMALL_IMAGES, DOCS_IMAGES, dirs_exist_ok=True)


def check_the_session(report, out):
    """Predict, next patch, clicks, DISCA, exports, and a SIAL session."""
    assert report["steps"] == STEPS
    assert report["engine_module"] == "sial_qgis_plugin.engine.learn.disca"  # the zip's own engine
    assert report["model_choice"] == "dubai-landcover"
    assert report["predicted"] == "ok" and report["last_error"] == ""
    assert report["next_patch"]["rank"] == 1
    assert len(report["clicks"]) == 3 and [c[2] for c in report["clicks"]] == report["click_truth"]
    history = report["history"]
    assert [(h["kind"], h["clicks"]) for h in history] == [("start", 0), ("retrain", 3)]
    assert all(h["miou"] is not None for h in history)  # the reference labels were chosen
    assert report["group"]["layers"] == ["clicks", "patch queue", "uncertainty: Entropy", "class map"]
    assert report["legend_classes"] == ["building", "land", "road", "vegetation", "water"]
    assert report["export_menu"] == [
        "Class map (GeoTIFF)…",
        "Class polygons (GeoPackage)…",
        "Adapted model (bundle)…",
        "Clicks (GeoPackage)…",
    ]
    assert report["sial_retrain_button"] == "Retrain (SIAL)" and report["sial_last_error"] == ""
    assert [(h["kind"], h["clicks"]) for h in report["sial_history"]] == [("start", 0), ("retrain", 5)]
    assert report["sial_palette"] == [
        "1 built-up (1)", "2 bare (1)", "3 road (1)", "4 green (1)", "5 water (1)"
    ]  # fmt: skip
    assert report["sial_legend_classes"] == ["built-up", "bare", "road", "green", "water"]
    assert sum(report["sial_group_visible"].values()) == 1  # only the session in use is shown
    renderers = {layer["name"]: layer["renderer"] for layer in report["layers"]}
    assert (
        renderers["class map"] == "paletted" and renderers["uncertainty: Entropy"] == "singlebandpseudocolor"
    )
    for name in (
        "export-classes.tif",
        "export-polygons.gpkg",
        "export-clicks.gpkg",
        "export-bundle/model.json",
    ):
        assert (out / name).is_file(), name


def check_the_acquisition_functions(report):
    """MC dropout and ConfidNet: a visible task with an estimate, a heatmap that shows."""
    entropy = report["heatmap_entropy"]
    assert entropy["range"] == [0.0, 1.0] and entropy["name"] == "uncertainty: Entropy"
    for key, name in (("mcdropout", "MC dropout"), ("confidnet", "ConfidNet")):
        switch, heatmap = report["switches"][key], report[f"heatmap_{key}"]
        assert switch["task"] == f"Switching to {name}" and switch["status"] == f"Switching to {name}…"
        assert len(switch["said"]) == 1 and "a whole new prediction of" in switch["said"][0], switch
        assert heatmap["name"] == f"uncertainty: {name}"
        low, high = heatmap["range"]
        assert 0.0 <= low < high and heatmap["visible_share"] > 0.1, heatmap  # no invisible veil
    assert report["heatmap_mcdropout"]["range"][1] < 0.5  # styled to MC dropout's small values
    assert report["confidnet_for_model"] is True
    assert report["confidnet_for_binary"] == [False, NO_CONFIDNET]


def check_the_sessions(report):
    """Two sessions kept and switched between, a cancelled first prediction, a deletion, a
    rename, and the project reopened with both sessions and the dock as it was."""
    back = report["back"]
    first = back["session"]
    assert back["mode"] == "disca" and back["disca_checked"] and back["model"] == "dubai-landcover"
    assert back["raster"] == "sample scene" and sum(back["groups"].values()) == 1
    assert len(back["groups"]) == 2 and len(set(back["groups"])) == 2  # named apart
    assert all(" · " in name for name in back["groups"])  # raster · model · time
    cancelled = report["cancelled"]
    assert cancelled["left"] == [] and cancelled["session"] == first
    assert cancelled["message"].startswith("Cancelled: the new session was removed")
    assert report["binary_alpha"] == {"background": 0, "building": 255}
    assert ".gpkg" in report["delete_question"] and "cannot be undone" in report["delete_question"]
    assert report["deleted"] == {"exists": False, "left": [], "listed": 2, "in_use": False}
    assert report["renamed_group"] == GROUP + "Sample scene, first pass"
    reopened = report["reopened"]
    assert reopened["session"] == first and reopened["group"] == GROUP + "Sample scene, first pass"
    assert len(reopened["listed"]) == 2 and "Sample scene, first pass" in reopened["listed"]
    assert reopened["raster"] == "sample scene" and reopened["model"] == "dubai-landcover"
    assert (
        reopened["disca_checked"] and reopened["uncertainty_shown"] and reopened["acquisition"] == "entropy"
    )


def check_the_unplaced_rasters(report):
    """No CRS, with the identity geotransform stored or none: maps on the image, clicks land."""
    for placement in ("identity", "none"):
        found = report["unplaced"][placement]
        assert found["maps"] == [found["image"]] * 2 and found["patches_inside"], found
        assert found["clicks"] == [[40, 70]] and found["refused"] == [] and found["last_error"] == "", found
    assert report["unplaced"]["identity"]["image"] != report["unplaced"]["none"]["image"]  # y ≥ 0, y ≤ 0


def check_the_small_promises(report):
    """Tooltips everywhere, one message at a time, torch not loaded at start, no stall > 0.5 s."""
    assert report["engine_loaded_before_dock"] is False
    assert "Off now: Start a session first" in report["retrain_tooltip_before"]
    assert "Off now: Retraining is off in AC mode" in report["unplaced"]["none"]["retrain_tooltip"]
    assert report["untipped_before"] == [] and report["untipped_after"] == []
    assert len(report["message_bar_items"]) <= 1
    stalls = report["stalls"]
    assert {"open_dock_and_load_engine", "start_and_predict", "switch_to_mcdropout", "retrain",
            "switch_session", "reopen_session_with_project", "start_identity"} <= set(stalls)  # fmt: skip
    assert max(stalls.values()) <= MAX_STALL_S, stalls
