"""The dock, the click tool (real mouse events on a real canvas), layers and background tasks."""

import json
from pathlib import Path

import pytest
from qgis.core import QgsProject
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QKeyEvent

from tests.plugin.conftest import wait_until_idle


@pytest.fixture
def started(controller, raster_layer, small_tile_model, tmp_path):
    assert controller.start(raster_layer, small_tile_model, "cpu", tmp_path / "session.gpkg")
    wait_until_idle(controller)
    assert controller.layers is not None, controller.messages
    return controller


def pixel_of(canvas, x, y):
    """The canvas pixel (QPoint) showing map point (x, y)."""
    point = canvas.getCoordinateTransform().transform(x, y)
    return QPoint(round(point.x()), round(point.y()))


def mouse(canvas, point: QPoint, button):
    return QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease, point, button, button, Qt.NoModifier)


def test_the_dock_starts_a_session_with_styled_grouped_layers(
    qgis_iface, make_dock, controller, raster_layer, small_tile_model, tmp_path, monkeypatch
):
    dock = make_dock()
    assert not dock.start_button.isEnabled() and "still loading" in dock.start_button.toolTip()
    dock.show()  # the dock loads the engine in the background the first time it is shown
    wait_until_idle(controller)
    assert controller.engine_loaded and dock.start_button.isEnabled()
    assert dock.steps.text() == "auto" and dock.anchor.value() == 3.0  # the engine's defaults, once loaded
    assert dock.disca_spread.isChecked() == controller.settings.spread
    dock.disca_spread.setChecked(not controller.settings.spread)  # the checkbox sets the next round's
    assert controller.settings.spread == dock.disca_spread.isChecked()
    dock.disca_spread.setChecked(not controller.settings.spread)
    assert dock.hold_classes.isChecked() and controller.settings.hold_classes  # the default
    dock.hold_classes.setChecked(False)
    assert not controller.settings.hold_classes
    dock.hold_classes.setChecked(True)
    assert dock.class_balance.value() == controller.settings.class_balance == 0.5
    dock.class_balance.setValue(1.0)  # the field sets the next round's weighing of the classes
    assert controller.settings.class_balance == 1.0
    dock.class_balance.setValue(0.5)
    assert dock.weight_average.value() == controller.settings.weight_average == 0.5
    dock.weight_average.setValue(0.0)  # each round's own weights from the next round on
    assert controller.settings.weight_average == 0.0
    dock.weight_average.setValue(0.5)
    dock.raster.setLayer(raster_layer)
    monkeypatch.setattr(dock, "selected_model", lambda: str(small_tile_model))
    monkeypatch.setattr(controller, "_new_session_path", lambda raster: tmp_path / "docked.gpkg")
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    dock.start_button.click()
    wait_until_idle(controller)
    layers = controller.layers
    assert layers is not None, controller.messages
    assert layers.group.name().startswith("Segmentation session") and len(layers.group.findLayers()) == 4
    assert layers.classes.renderer().type() == "paletted"
    assert [c.label for c in layers.classes.renderer().classes()] == [
        "building",
        "land",
        "road",
        "vegetation",
        "water",
    ]
    assert layers.uncertainty.renderer().type() == "singlebandpseudocolor"
    assert layers.uncertainty.renderer().opacity() == pytest.approx(0.6)
    ranked_by = json.loads((controller.session.outputs / "run.json").read_text())["patch_score"]
    assert ranked_by == "class-weighted"  # AC mode: a click corrects only where it is
    assert layers.patches.labelsEnabled() and layers.patches.labeling().settings().fieldName == "rank"
    assert layers.patches.featureCount() == 9  # 128-px patches over 384²
    assert layers.clicks.renderer().type() == "categorizedSymbol"
    assert dock.history.rowCount() == 1 and dock.history.item(0, 1).text() == "start"
    assert [b.text() for b in dock.class_buttons][:2] == ["1 building (0)", "2 land (0)"]
    assert dock.tool_button.isEnabled() and not dock.retrain_button.isEnabled()  # AC mode
    assert "Off now: Retraining is off in AC mode" in dock.retrain_button.toolTip()  # and says why
    dock.mode_disca.setChecked(True)
    assert dock.retrain_button.isEnabled() and "Off now" not in dock.retrain_button.toolTip()


def test_the_dock_starts_a_network_for_new_classes_that_learns_from_clicks_alone(
    qgis_canvas, make_dock, controller, raster_layer, tmp_path, monkeypatch
):
    """SIAL in the dock: the analyst types a class list, gets an untrained network (no click
    channels) next to the session, and Retrain runs SIAL rounds with the session's own settings,
    whatever the DISCA settings in the dock say."""
    import json
    from dataclasses import replace

    dock = make_dock()
    controller.load_engine()
    wait_until_idle(controller)
    dock.raster.setLayer(raster_layer)
    monkeypatch.setattr(controller, "_new_session_path", lambda raster: tmp_path / "fresh.gpkg")
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    dock.choose_new_model("built:#ff0000, open")
    assert dock.model.currentText() == "New model: built:#ff0000, open (SIAL)"
    dock.start_button.click()
    wait_until_idle(controller)
    assert controller.layers is not None, controller.messages
    card = controller.session.bundle.card
    assert [(c.name, c.color) for c in card.classes] == [("built", "#ff0000"), ("open", "#377eb8")]
    assert not card.clicks.enabled and card.provenance["training"].startswith("none")
    assert (tmp_path / "fresh-model" / "model.json").is_file()
    assert controller.mode == "ac" and controller.is_sial  # Retrain needs no DISCA mode
    assert dock.retrain_button.isEnabled() and dock.retrain_button.text() == "Retrain (SIAL)"
    assert not dock.steps.isEnabled()
    assert dock.sial_steps.value() == 300 and dock.sial_superpixels.isChecked()  # the measured recipe
    assert controller.session.settings.training.loss == "ce"
    dock.sial_steps.setValue(10)
    training = controller.sial_settings.training
    controller.sial_settings = replace(controller.sial_settings, training=replace(training, batch=2, crop=64))
    info = controller.session.info
    for class_id, (col, row) in enumerate([(40, 40), (300, 300)]):
        controller.current_class = class_id
        controller.add_click(_map_point(info, col, row), qgis_canvas.mapSettings().destinationCrs())
        wait_until_idle(controller)
    controller.retrain()
    wait_until_idle(controller)
    assert controller.session.iteration == 1, controller.messages
    assert any(m.startswith("Round 1 (SIAL): 10 steps on 2 clicks") for m in controller.messages), (
        controller.messages
    )
    details = json.loads(controller.session.iterations()[-1].details)
    assert details["settings"]["training"]["steps"] == 10  # SIAL's settings, not DISCA's
    assert details["settings"]["expansion"]["method"] == "slic"
    from backend.model.bundle import read_card

    learnt = read_card(controller.export_bundle(tmp_path / "learnt"))
    assert learnt.provenance["adapted"]["sial"]["training"]["steps"] == 10 and learnt.n_classes == 2
    path = controller.session.path
    dock.sial_steps.setValue(50)
    assert controller.open_session(path, "cpu")
    wait_until_idle(controller)
    assert controller.is_sial
    assert dock.sial_steps.value() == 10  # a reopened session shows the settings it trains with


def test_a_new_model_needs_two_distinct_class_names(controller, raster_layer, tmp_path):
    controller.start_from_clicks(raster_layer, "water", "cpu", tmp_path / "one.gpkg")
    wait_until_idle(controller)
    assert "at least two class names" in controller.last_error
    controller.start_from_clicks(raster_layer, "water, water", "cpu", tmp_path / "two.gpkg")
    wait_until_idle(controller)
    assert "distinct" in controller.last_error
    assert controller.session is None and list(tmp_path.iterdir()) == []


def test_real_mouse_clicks_add_and_remove_points_and_update_touched_tiles(qgis_canvas, started):
    from sial_qgis_plugin.map_tool import ClickTool

    controller = started
    tool = ClickTool(qgis_canvas, controller)
    qgis_canvas.setMapTool(tool)
    tool.keyPressEvent(QKeyEvent(QEvent.KeyPress, Qt.Key_4, Qt.NoModifier))
    assert controller.current_class == 3
    info = controller.session.info
    x, y = info.map_transform * (200.5, 100.5)  # the centre of pixel (row 100, col 200)
    tool.canvasReleaseEvent(mouse(qgis_canvas, pixel_of(qgis_canvas, x, y), Qt.LeftButton))
    wait_until_idle(controller)
    [click] = controller.session.clicks()
    assert abs(click.row - 100) <= 1 and abs(click.col - 200) <= 1 and click.class_name == "vegetation"
    run = controller.session.outputs / "run.json"
    import json

    update = json.loads(run.read_text())
    assert update["mode"] == "incremental" and update["tiles_computed"] <= 4
    assert controller.layers.clicks.featureCount() == 1
    assert controller.click_counts()[3] == 1

    tool.canvasReleaseEvent(mouse(qgis_canvas, pixel_of(qgis_canvas, x + 1.0, y - 1.0), Qt.RightButton))
    wait_until_idle(controller)
    assert controller.session.clicks() == []
    tool.keyPressEvent(QKeyEvent(QEvent.KeyPress, Qt.Key_Z, Qt.ControlModifier))  # undo the removal
    wait_until_idle(controller)
    assert [c.class_id for c in controller.session.clicks()] == [3]


def test_retrain_then_visible_extent_first_then_everything(qgis_canvas, started):
    controller = started
    controller.mode = "disca"
    from dataclasses import replace

    controller.settings = replace(controller.settings, steps=3, crop=128)
    controller.current_class = 1
    info = controller.session.info
    controller.add_click(_map_point(info, 40, 40), qgis_canvas.mapSettings().destinationCrs())
    wait_until_idle(controller)
    ranked_by = json.loads((controller.session.outputs / "run.json").read_text())["patch_score"]
    assert ranked_by == "mean"  # clicks that retrain: the queue by the mean uncertainty
    x0, y0 = info.map_transform * (0, 0)
    x1, y1 = info.map_transform * (128, 128)
    from qgis.core import QgsRectangle

    qgis_canvas.setExtent(QgsRectangle(x0, y1, x1, y0))
    region = controller.visible_region()
    assert region is not None and region[0] == 0 and region[1] == 0 and region[2] <= 200
    modes = []
    original = controller.session.prediction

    def spy(*args, **kwargs):
        modes.append(kwargs.get("region"))
        return original(*args, **kwargs)

    controller.session.prediction = spy
    controller.retrain()
    wait_until_idle(controller)
    assert controller.session.iteration == 1
    assert modes[0] is not None and modes[1] is None  # the visible extent first, then the whole raster
    assert [row["kind"] for row in controller.history()] == ["start", "retrain"]
    held = controller.session.held_classes()  # the untrained network leaves classes off this map
    names = [c.name for c in controller.session.bundle.card.classes]
    assert held and 1 not in held
    said = [m for m in controller.messages if "kept off the map" in m]
    assert said and all(f"'{names[c]}'" in said[-1] for c in held), controller.messages


def test_cancel_in_the_middle_of_a_prediction_and_of_a_retraining(qgis_canvas, started, monkeypatch):
    controller = started
    before = (controller.session.outputs / "classes.tif").read_bytes()
    from backend.progress import Monitor

    original = Monitor.check

    def slow_check(self):
        controller.task.cancel()  # the user presses Cancel while the task runs
        original(self)

    monkeypatch.setattr(Monitor, "check", slow_check)
    controller.predict()
    wait_until_idle(controller)
    assert "Cancelled" in controller.messages[-1]
    assert (controller.session.outputs / "classes.tif").read_bytes() == before

    controller.mode = "disca"
    controller.current_class = 2
    controller.session.add_click(10, 10, 2)
    weights = {k: v.clone() for k, v in controller.session.bundle.network.state_dict().items()}
    controller.retrain()
    wait_until_idle(controller)
    assert controller.session.iteration == 0
    after = controller.session.bundle.network.state_dict()
    assert all((weights[k] == after[k]).all() for k in weights)


def test_project_saved_and_reopened_mid_session_resumes(qgis_canvas, started, tmp_path):
    controller = started
    controller.current_class = 4
    controller.add_click(
        _map_point(controller.session.info, 300, 300), qgis_canvas.mapSettings().destinationCrs()
    )
    wait_until_idle(controller)
    project_file = tmp_path / "work.qgz"
    assert QgsProject.instance().write(str(project_file))
    session_path = controller.session.path
    controller.session.close()
    controller.session = None
    QgsProject.instance().clear()
    assert QgsProject.instance().read(str(project_file))
    wait_until_idle(controller)  # the session reopens in the background
    assert controller.session is not None and controller.session.path == session_path
    assert [c.class_id for c in controller.session.clicks()] == [4]
    assert controller.layers is not None and controller.layers.clicks.featureCount() == 1


def test_next_and_previous_patch_zoom_and_mark_done(qgis_canvas, started):
    controller = started
    first = controller.next_patch()
    assert first.rank == 1
    assert qgis_canvas.extent().contains(_rect(first.extent).center())
    second = controller.next_patch()
    assert (
        second.rank == 2
        and {p.patch_id: p.status for p in controller.session.patches()}[first.patch_id] == "done"
    )
    back = controller.previous_patch()
    assert back.patch_id == first.patch_id


def test_exports(qgis_canvas, started, tmp_path):
    from backend.model.bundle import load_bundle

    controller = started
    controller.session.add_click(20, 20, 1)
    assert Path(controller.export_class_map(tmp_path / "c.tif")).stat().st_size > 0
    assert load_bundle(controller.export_bundle(tmp_path / "adapted")).card.name.endswith("-adapted")
    assert controller.export_clicks(tmp_path / "clicks.gpkg").is_file()
    controller.export_polygons(tmp_path / "polygons.gpkg")
    wait_until_idle(controller)
    from osgeo import ogr

    polygons = ogr.Open(str(tmp_path / "polygons.gpkg"))
    assert polygons.GetLayerByName("classes").GetFeatureCount() >= 1


def _map_point(info, col, row):
    from qgis.core import QgsPointXY

    return QgsPointXY(*(info.map_transform * (col + 0.5, row + 0.5)))


def _rect(extent):
    from qgis.core import QgsRectangle

    return QgsRectangle(*extent)


def test_a_round_that_gets_the_clicks_wrong_is_rolled_back_and_the_dock_says_why(qgis_canvas, started):
    """The round guard, as the analyst meets it: a round that blows the weights up (an absurd
    learning rate) leaves the clicks wrong; it is not kept, the map stays, the dock says why."""
    from dataclasses import replace

    import numpy as np
    import rasterio
    import torch

    controller = started
    controller.mode = "disca"
    controller.settings = replace(controller.settings, steps=4, crop=128, learning_rate=1e6)
    classes_file = controller.session.outputs / "classes.tif"
    with rasterio.open(classes_file) as src:
        predicted = src.read(1)
    rows, cols = np.nonzero((predicted > 0) & (predicted < 255))
    for i in np.linspace(0, len(rows) - 1, 4).astype(int):  # clicks that agree with the map
        controller.session.add_click(int(rows[i]), int(cols[i]), int(predicted[rows[i], cols[i]]))
    before = classes_file.read_bytes()
    weights = {k: v.clone() for k, v in controller.session.bundle.network.state_dict().items()}
    controller.retrain()
    wait_until_idle(controller)
    assert controller.session.iteration == 0 and [r["kind"] for r in controller.history()] == ["start"]
    assert controller.last_error.startswith("Round not kept: the retrained map gets"), controller.last_error
    assert classes_file.read_bytes() == before  # nothing re-predicted
    after = controller.session.bundle.network.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)
