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
from tests.helpers import REPO

pytestmark = pytest.mark.e2e
SCREENSHOTS = REPO / "e2e_output"
DOCS_IMAGES = REPO / "docs" / "images"
SMALL_IMAGES = SCREENSHOTS / "docs-images"
OVERVIEW = "2-class-map"
DOCS_LIMIT = 300_000  # bytes per image in docs/images


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
    assert report["engine_module"] == "sial_qgis_plugin.engine.learn.disca"  # the zip's own engine
    assert report["model_choice"] == "dubai-landcover"
    assert report["predicted"] == "ok" and report["last_error"] == ""
    assert report["steps"] == [
        "1-dock-before-predict",
        "2-class-map",
        "3-uncertainty-patches",
        "4-next-patch-clicks",
        "5-retrained-history",
        "6-export-menu",
        "7-sial-new-model",
    ]
    assert report["next_patch"]["rank"] == 1
    assert len(report["clicks"]) == 3 and [c[2] for c in report["clicks"]] == report["click_truth"]
    history = report["history"]
    assert [(h["kind"], h["clicks"]) for h in history] == [("start", 0), ("retrain", 3)]
    assert all(h["miou"] is not None for h in history)  # the reference labels were chosen
    assert report["group"]["layers"] == ["clicks", "patch queue", "uncertainty", "class map"]
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
    renderers = {layer["name"]: layer["renderer"] for layer in report["layers"]}
    assert renderers["class map"] == "paletted" and renderers["uncertainty"] == "singlebandpseudocolor"
    for name in (
        "export-classes.tif",
        "export-polygons.gpkg",
        "export-clicks.gpkg",
        "export-bundle/model.json",
    ):
        assert (out / name).is_file(), name

    SMALL_IMAGES.mkdir(parents=True, exist_ok=True)
    for step in report["steps"]:
        png = out / f"{step}.png"
        assert report["modal"][step] is None, f"{step}: a modal dialog is open"
        assert canvas_colours(png, report["canvas"][step]) > 200, f"{step}: the map canvas is empty"
        small_png(png, SMALL_IMAGES / f"{step.split('-', 1)[1]}.png")
    shutil.copyfile(SMALL_IMAGES / f"{OVERVIEW.split('-', 1)[1]}.png", SMALL_IMAGES / "overview.png")
    if os.environ.get("SIAL_UPDATE_DOCS_IMAGES"):
        shutil.copytree(SMALL_IMAGES, DOCS_IMAGES, dirs_exist_ok=True)
