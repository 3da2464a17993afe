"""Sessions an analyst can find again, the acquisition switch, and the dock's small promises:
every control says what it does (and why it is off), one message per event, nothing heavy when
QGIS starts."""

import json
import re
import subprocess
import sys
import warnings

import pytest
from qgis.core import QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QListWidget,
    QProgressBar,
    QTableWidget,
)

from tests.helpers import REPO, random_image, write_raster
from tests.plugin.conftest import wait_until_idle


@pytest.fixture
def dock(make_dock, controller, raster_layer, tmp_path, monkeypatch):
    monkeypatch.setattr(controller, "sessions_folder", lambda: tmp_path)
    dock = make_dock()
    controller.load_engine()
    wait_until_idle(controller)
    dock.raster.setLayer(raster_layer)
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    return dock


def start(controller, layer, model, path):
    assert controller.start(layer, model, "cpu", path)
    wait_until_idle(controller)
    assert controller.session is not None and controller.session.path == path, controller.messages


def select(dock, path):
    box = dock.sessions_box
    row = next(i for i in range(box.list.count()) if box.list.item(i).data(256) == str(path))
    box.list.setCurrentRow(row)
    return box


def visible_groups():
    from sial_qgis_plugin.layers import session_groups

    return {g.name(): g.isVisible() for g in session_groups(QgsProject.instance())}


def test_two_sessions_are_named_apart_kept_and_switched_between(
    dock, controller, raster_layer, small_tile_model, tmp_path
):
    first, second = tmp_path / "first.gpkg", tmp_path / "second.gpkg"
    dock.mode_disca.setChecked(True)
    dock.view_buttons["uncertainty"].setChecked(True)
    start(controller, raster_layer, small_tile_model, first)
    start(controller, raster_layer, small_tile_model, second)
    dock.mode_ac.setChecked(True)  # the dock's choices are the session in use's
    dock.view_buttons["classes"].setChecked(True)
    assert any("is kept: reopen it from the Sessions list" in m for m in controller.messages)
    labels = [s.label for s in controller.sessions()]
    made_of = f"sample_image · {controller.session.bundle.card.name} · 20"  # raster · model · time
    assert len(set(labels)) == 2 and all(label.startswith(made_of) for label in labels)
    names = visible_groups()
    assert len(names) == 2 and all(n.startswith(f"Segmentation session — {made_of}") for n in names)
    assert [visible for name, visible in sorted(names.items())] == [False, True]  # "(2)", in use
    assert dock.sessions_box.list.count() == 2 and dock.sessions_box.list.item(0).font().bold()

    select(dock, first).open_selected()  # as a double-click does
    wait_until_idle(controller)
    assert controller.session.path == first and controller.layers is not None
    assert dock.mode_disca.isChecked() and controller.mode == "disca"  # the dock as it was left
    assert dock.view_buttons["uncertainty"].isChecked() and controller.layers.group.isVisible()
    assert dock.raster.currentLayer() is raster_layer
    assert dock.model.currentText() == f"{small_tile_model.name} (other bundle)"
    assert sum(visible_groups().values()) == 1
    assert not dock.sessions_box.open_button.isEnabled()  # the session in use
    assert "This is the session in use" in dock.sessions_box.open_button.toolTip()


def test_cancelling_a_first_prediction_leaves_nothing_and_keeps_the_session_before(
    dock, controller, raster_layer, small_tile_model, tmp_path, monkeypatch
):
    from backend.progress import Monitor

    first = tmp_path / "first.gpkg"
    start(controller, raster_layer, small_tile_model, first)
    before = sorted(p.name for p in tmp_path.iterdir())
    original = Monitor.check

    def cancel_at_once(self):
        controller.task.cancel()  # the analyst presses Cancel during the first prediction
        original(self)

    monkeypatch.setattr(Monitor, "check", cancel_at_once)
    assert controller.start(raster_layer, small_tile_model, "cpu", tmp_path / "new.gpkg")
    wait_until_idle(controller)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing of the new session
    assert controller.messages[-1].startswith("Cancelled: the new session was removed, nothing of it is left")
    assert "You are back in session" in controller.messages[-1]
    assert controller.session.path == first and [s.path for s in controller.sessions()] == [first]
    assert controller.next_patch() is not None  # the session in use goes on, patches and all


def test_a_session_is_renamed_and_deleted_from_the_list_keeping_what_is_not_its_own(
    dock, controller, raster_layer, small_tile_model, tmp_path, monkeypatch
):
    from backend.session import files
    from sial_qgis_plugin import session_list

    first, second = tmp_path / "first.gpkg", tmp_path / "second.gpkg"
    start(controller, raster_layer, small_tile_model, first)
    start(controller, raster_layer, small_tile_model, second)
    (tmp_path / "first.outputs" / "my-notes.txt").write_text("mine")
    box = select(dock, first)
    monkeypatch.setattr(session_list.QInputDialog, "getText", lambda *a, **k: ("  north field  ", True))
    box._rename_clicked()
    assert files.read_summary(first).label == "north field"
    assert "Segmentation session — north field" in visible_groups()
    assert any(box.list.item(i).text() == "north field" for i in range(box.list.count()))

    asked = []
    monkeypatch.setattr(box, "confirm", lambda text: asked.append(text) or True)
    select(dock, first)._delete_clicked()
    assert "first.gpkg" in asked[0] and "first.outputs/ (its maps)" in asked[0]
    assert not first.exists() and not (tmp_path / "first.checkpoints").exists()
    assert sorted(p.name for p in (tmp_path / "first.outputs").iterdir()) == ["my-notes.txt"]
    assert "Segmentation session — north field" not in visible_groups() and box.list.count() == 1
    assert controller.session.path == second  # another session was deleted: this one goes on

    select(dock, second)._delete_clicked()  # the session in use: closed first
    assert controller.session is None and not second.exists() and box.list.count() == 0
    assert not [
        layer
        for layer in QgsProject.instance().mapLayers().values()
        if "sial/session" in layer.customPropertyKeys()
    ]


def test_a_reopened_project_finds_both_sessions_and_the_dock_as_it_was(
    dock, controller, raster_layer, small_tile_model, tmp_path
):
    first, second = tmp_path / "first.gpkg", tmp_path / "second.gpkg"
    dock.mode_disca.setChecked(True)
    start(controller, raster_layer, small_tile_model, first)
    start(controller, raster_layer, small_tile_model, second)
    dock.mode_ac.setChecked(True)
    dock.acquisition.setCurrentIndex(dock.acquisition.findData("margin"))
    wait_until_idle(controller)
    project_file, raster = tmp_path / "work.qgz", raster_layer.source()
    assert QgsProject.instance().write(str(project_file))
    controller.close_session()
    QgsProject.instance().clear()
    dock.raster.setLayer(None)
    dock.mode_disca.setChecked(True)  # the dock left in another state
    assert QgsProject.instance().read(str(project_file))
    wait_until_idle(controller)
    assert controller.session is not None and controller.session.path == second
    assert {s.path for s in controller.sessions()} == {first, second}
    assert dock.mode_ac.isChecked() and dock.acquisition.currentData() == "margin"
    assert dock.raster.currentLayer() is not None and dock.raster.currentLayer().source() == raster
    assert controller.layers is not None and controller.layers.uncertainty.name() == "uncertainty: Margin"
    select(dock, first).open_selected()
    wait_until_idle(controller)
    assert controller.session.path == first and dock.mode_disca.isChecked()
    assert dock.acquisition.currentData() == "entropy"  # what its maps show


def test_switching_the_function_predicts_at_once_with_an_estimate_and_a_heatmap_that_fits(
    dock, controller, raster_layer, small_tile_model, tmp_path
):
    from sial_qgis_plugin.acquisitions import NO_CONFIDNET
    from sial_qgis_plugin.layers import heatmap_range

    start(controller, raster_layer, small_tile_model, tmp_path / "s.gpkg")
    shader = controller.layers.uncertainty.renderer().shader().rasterShaderFunction()
    assert (shader.minimumValue(), shader.maximumValue()) == (0.0, 1.0)  # entropy: 0–1
    dock.acquisition.setCurrentIndex(dock.acquisition.findData("mcdropout"))
    assert (
        controller.busy_with == "Switching to MC dropout" and dock.status.text() == "Switching to MC dropout…"
    )
    said = [m for m in controller.messages if m.startswith("Ranking by MC dropout")]
    assert re.fullmatch(
        r"Ranking by MC dropout: a whole new prediction of 16 tiles, about \d+ s\.", said[0]
    ), said
    wait_until_idle(controller)
    run = json.loads((controller.session.outputs / "run.json").read_text())
    assert run["acquisition"] == "mcdropout" and run["mode"] == "full"
    shader = controller.layers.uncertainty.renderer().shader().rasterShaderFunction()
    low, high = heatmap_range(controller.session.outputs)
    assert (shader.minimumValue(), shader.maximumValue()) == pytest.approx((low, high)) and high < 1.0
    assert controller.layers.uncertainty.name() == "uncertainty: MC dropout"

    item = dock.acquisition.model().item(dock.acquisition.findData("confidnet"))
    assert not item.isEnabled() and item.toolTip() == NO_CONFIDNET  # this bundle has no head
    assert not controller.set_acquisition("confidnet") and controller.messages[-1] == NO_CONFIDNET
    dock.model.setCurrentIndex(dock.model.findText("dubai-landcover"))  # the bundled one has a head
    assert item.isEnabled()


def test_a_binary_models_background_is_not_drawn(tmp_path):
    from sial_qgis_plugin.layers import ClassStyle, style_class_map

    layer = QgsRasterLayer(str(write_raster(tmp_path / "c.tif", random_image(8, 8, bands=1))), "c")
    style_class_map(layer, [ClassStyle(0, "background", "#d9d9d9"), ClassStyle(1, "building", "#e31a1c")])
    assert [c.color.alpha() for c in layer.renderer().classes()] == [0, 255]
    three = [
        ClassStyle(0, "background", "#d9d9d9"),
        ClassStyle(1, "road", "#777777"),
        ClassStyle(2, "x", "#000000"),
    ]
    style_class_map(layer, three)
    assert [c.color.alpha() for c in layer.renderer().classes()] == [255, 255, 255]  # a real class there


def test_every_control_says_what_it_does_and_why_it_is_off(
    dock, controller, raster_layer, small_tile_model, tmp_path
):
    def problems():
        kinds = (QAbstractButton, QComboBox, QAbstractSpinBox, QTableWidget, QListWidget, QProgressBar)
        controls = [w for kind in kinds for w in dock.findChildren(kind)]
        inner = ("QgsGroupBoxCollapseButton", "QTableCornerButton", "QDockWidgetTitleButton")  # Qt's own
        controls = [
            w
            for w in controls
            if w.metaObject().className() not in inner and w.objectName() != "qt_spinbox_lineedit"
        ]
        found = [
            f"{w.metaObject().className()} {w.text() if hasattr(w, 'text') else ''}: no tooltip"
            for w in controls
            if not w.toolTip()
        ]
        off = [w for w in controls if not w.isEnabled() and "Off now:" not in w.toolTip()]
        found += [
            f"{w.metaObject().className()} {getattr(w, 'text', lambda: '')()}: off, no reason" for w in off
        ]
        header = dock.history.horizontalHeaderItem
        found += [f"history column {c}" for c in range(dock.history.columnCount()) if not header(c).toolTip()]
        return found

    assert problems() == []  # before a session: most buttons off, each saying why
    start(controller, raster_layer, small_tile_model, tmp_path / "s.gpkg")
    assert (
        problems() == []
        and dock.class_buttons
        and dock.class_buttons[0].toolTip().startswith("The next clicks")
    )


def test_one_message_bar_item_per_event(qgis_iface):
    from sial_qgis_plugin import classFactory
    from sial_qgis_plugin.plugin import PLUGIN_NAME

    plugin = classFactory(qgis_iface)
    plugin.initGui()
    try:
        for text in ("Round 1 (DISCA): 3 steps on 3 clicks in 8.1 s.", "Round 2 …", "Round 3 …"):
            plugin.controller.say(text)
        ours = [i for i in qgis_iface.messageBar().items() if i.title() == PLUGIN_NAME]
        assert [i.text() for i in ours] == ["Round 3 …"]  # the newest replaced the ones before
    finally:
        plugin.unload()


def test_rasterio_s_not_georeferenced_warning_stays_out_of_qgis_s_log(tmp_path):
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from sial_qgis_plugin.engine_loader import quiet_rasterio

    path = write_raster(tmp_path / "plain.tif", random_image(16, 16), crs=None, transform=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_rasterio()
        with rasterio.open(path):
            pass
    assert not [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)]


def test_qgis_starts_the_plugin_without_importing_torch(tmp_path):
    """The plugin's objects are built when QGIS starts; torch comes later, in a task."""
    code = (
        "import sys\nfrom qgis.core import QgsApplication\napp = QgsApplication([], True)\napp.initQgis()\n"
        "from qgis.gui import QgsMapCanvas\n"
        "from sial_qgis_plugin.controller import SessionController\n"
        "from sial_qgis_plugin.dock import SegmentationDock\n"
        "from sial_qgis_plugin.map_tool import ClickTool\n"
        "canvas = QgsMapCanvas()\ncontroller = SessionController(canvas)\n"
        "dock = SegmentationDock(controller, ClickTool(canvas, controller))\n"
        "print('torch' in sys.modules, 'rasterio' in sys.modules, dock.start_button.isEnabled())\n"
        ""
    )
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # its profile
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, env=env)
    assert result.stdout.split()[-3:] == ["False", "False", "False"], result.stderr[-2000:]


def test_reference_labels_that_do_not_fit_leave_the_session_without_an_miou(
    dock, controller, raster_layer, scene, small_tile_model, tmp_path
):
    """The reference chosen for another raster or model: the session starts all the same, the
    history has no mIoU, and one notice says why; fitting labels give one."""
    import numpy as np

    fitting = QgsRasterLayer(str(scene.labels), "labels")
    other_model = write_raster(tmp_path / "seven.tif", np.full((1, 384, 384), 7, dtype=np.uint8))
    other_grid = write_raster(tmp_path / "small.tif", np.zeros((1, 100, 100), dtype=np.uint8))
    cases = (
        (fitting, None),
        (QgsRasterLayer(str(other_model), "seven"), "they hold class 7, and the model has 5 classes"),
        (QgsRasterLayer(str(other_grid), "small"), "they must share the grid"),
    )
    for n, (reference, why) in enumerate(cases):
        QgsProject.instance().addMapLayer(reference, False)  # the project owns it, as in QGIS
        controller.reference = reference
        start(controller, raster_layer, small_tile_model, tmp_path / f"s{n}.gpkg")
        [row] = controller.history()
        notices = [m for m in controller.messages if m.startswith("No mIoU against the reference labels")]
        if why is None:
            assert row["miou"] is not None and not notices
        else:
            assert row["miou"] is None and why in notices[-1], notices
