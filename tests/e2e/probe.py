"""Run inside the real QGIS desktop (``qgis --code probe.py``): a scripted analyst session.

On the generated sample scene, with the bundled models: opens the dock (the engine loads in the
background), predicts, shows the uncertainty, switches the ranking to MC dropout and to ConfidNet
(their heatmaps), goes to the next patch and clicks corrections there with the click tool (real
mouse events on the real canvas, where the prediction disagrees with the scene's labels),
retrains with DISCA, opens the export menu and exports everything, starts a second session with a
new model for the analyst's own classes (SIAL), clicks and retrains it, goes back to the first
session from the session list, cancels a third session's first prediction, makes a binary
model's session and deletes it from the list (its confirmation shown), renames the first
session, saves the project and reopens it; last, two rasters without a CRS (one storing the
identity geotransform, one storing none) are predicted and clicked where QGIS draws them.

While the session starts, predicts, switches, retrains and reopens, a 20 ms timer measures the
longest stall of QGIS's GUI thread. A screenshot follows each step (``SCREENSHOTS``);
``report.json`` in ``$SIAL_E2E_OUT`` says what happened, and QGIS quits.
"""

import json
import os
import time
import traceback
from dataclasses import replace
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt, QTimer
from qgis.PyQt.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QListWidget,
    QMessageBox,
    QToolButton,
)
from qgis.utils import iface, plugins

OUT = Path(os.environ["SIAL_E2E_OUT"])
RASTER = os.environ["SIAL_E2E_RASTER"]
LABELS = os.environ["SIAL_E2E_LABELS"]
MODEL = os.environ.get("SIAL_E2E_MODEL", "dubai-landcover")  # a bundled model's name
BINARY = "dubai-buildings"  # a bundled binary model: building / background, no ConfidNet head
SIAL_CLASSES = "built-up:#d7301f, bare:#e0c9a6, road:#7f7f7f, green:#33a02c, water:#1f78b4"
SCREENSHOTS = {
    "1-dock-before-predict": "the dock filled in, the scene on the canvas, nothing predicted yet",
    "2-class-map": "the class map after Predict, its legend in the Layers panel",
    "3-uncertainty-patches": "the entropy heatmap with the ranked patches",
    "4-mcdropout-heatmap": "the ranking switched to MC dropout: its heatmap, styled to its values",
    "5-confidnet-heatmap": "the ranking switched to ConfidNet: its heatmap",
    "6-next-patch-clicks": "Next patch: zoomed to patch 1, three correction clicks",
    "7-retrained-history": "after Retrain (DISCA): the whole map redrawn, the history with mIoU",
    "8-export-menu": "the Export menu",
    "9-sial-new-model": "a second session: a new model for the analyst's own classes (SIAL) after a round",
    "10-session-list": "back in the first session, chosen from the Sessions list",
    "11-delete-session": "deleting a session: the confirmation lists its files",
    "12-reopened-project": "the project reopened: both sessions listed, the dock as it was",
    "13-no-crs-identity": "a raster without a CRS that stores the identity geotransform: overlaid, clicked",
    "14-no-crs-none": "a raster without a CRS or a geotransform: overlaid, clicked",
    "15-dock": "the dock alone",
}
NO_CANVAS = {"15-dock"}  # a screenshot of the dock only
PLACEMENTS = {"13-no-crs-identity": "identity", "14-no-crs-none": "none"}
CLICKED = (40, 70)  # (row, col) clicked on each unplaced raster
MODAL = {"11-delete-session": "Delete the session"}
report: dict = {"steps": [], "modal": {}, "canvas": {}, "stalls": {}}


class StallMeter:
    """The longest gap between ticks of a 20 ms timer on the GUI thread: how long QGIS froze."""

    def __init__(self):
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self.tick)
        self.last, self.worst = 0.0, 0.0

    def tick(self):
        now = time.perf_counter()
        self.worst, self.last = max(self.worst, now - self.last), now

    def start(self):
        self.last, self.worst = time.perf_counter(), 0.0
        self.timer.start()

    def stop(self, name):
        self.tick()
        self.timer.stop()
        report["stalls"][name] = round(self.worst, 3)


METER = StallMeter()


def wait(condition, timeout=600.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        QCoreApplication.processEvents()
        if condition():
            return True
        time.sleep(0.01)
    raise TimeoutError("waited too long")


def idle(controller):
    return not controller.busy and QgsApplication.taskManager().countActiveTasks() == 0


def measured(name, controller, action, ready=None):
    """``action()``, then wait until the controller is idle (and ``ready()``), timing the stalls."""
    METER.start()
    action()
    wait(lambda: idle(controller) and (ready is None or ready()))
    METER.stop(name)


def settle(seconds=1.0):
    for _ in range(int(seconds / 0.05)):
        QCoreApplication.processEvents()
        time.sleep(0.05)
    iface.mapCanvas().waitWhileRendering()
    QCoreApplication.processEvents()


def screenshot(name, whole_screen=False, widget=None):
    """The main window as it is now (``whole_screen``: the screen, so that popups show too)."""
    assert name in SCREENSHOTS, name
    settle()
    window = iface.mainWindow()
    image = window.screen().grabWindow(0) if whole_screen else (widget or window).grab()
    image.save(str(OUT / f"{name}.png"))
    canvas = iface.mapCanvas()
    corner = canvas.mapTo(window, QPoint(0, 0))
    report["canvas"][name] = None if widget else [corner.x(), corner.y(), canvas.width(), canvas.height()]
    modal = QApplication.activeModalWidget()
    report["modal"][name] = modal.windowTitle() if modal is not None else None
    report["steps"].append(name)


def click(canvas, tool, info, row, col, button=Qt.MouseButton.LeftButton):
    """A real mouse release on the canvas pixel that shows raster pixel (row, col)."""
    x, y = info.map_transform * (col + 0.5, row + 0.5)
    pixel = canvas.getCoordinateTransform().transform(x, y)
    point = QPoint(round(pixel.x()), round(pixel.y()))
    release = QEvent.Type.MouseButtonRelease
    tool.canvasReleaseEvent(
        QgsMapMouseEvent(canvas, release, point, button, button, Qt.KeyboardModifier.NoModifier)
    )


def labels():
    from sial_qgis_plugin.engine.predict.evaluation import read_labels

    return read_labels(Path(LABELS))


def corrections_in(controller, patch, count=3):
    """Where an analyst who knows the scene would click in ``patch``: the centres of the largest
    regions the class map gets wrong, with their true classes."""
    import rasterio

    from sial_qgis_plugin.engine.protocols.agents import errors, region_centres
    from sial_qgis_plugin.geometry import pixel_window

    row0, col0, row1, col1 = pixel_window(controller.session.info, QgsRectangle(*patch.extent))
    truth = labels()[row0:row1, col0:col1]
    with rasterio.open(controller.session.outputs / "classes.tif") as classes:
        predicted = classes.read(1)[row0:row1, col0:col1]
    centres = region_centres(errors(predicted, truth), count)
    return [(row0 + r, col0 + c, int(truth[r, c])) for r, c in centres]


def heatmap(controller):
    """The heatmap as drawn: its layer's name, its style's range, and the share of pixels drawn
    above the bottom quarter of that range (an "invisible veil" has almost none)."""
    import numpy as np
    import rasterio

    function = controller.layers.uncertainty.renderer().shader().rasterShaderFunction()
    low, high = function.minimumValue(), function.maximumValue()
    with rasterio.open(controller.session.outputs / "uncertainty.tif") as dataset:
        values = dataset.read(1)
    values = values[np.isfinite(values)]
    share = float((values > low + 0.25 * (high - low)).mean())
    name = controller.layers.uncertainty.name()
    return {
        "name": name,
        "range": [low, high],
        "visible_share": round(share, 3),
        "mean": round(float(values.mean()), 4),
    }


def untipped(dock):
    """The dock's controls without a tooltip, or off without saying why."""
    kinds = (QAbstractButton, QComboBox, QAbstractSpinBox, QListWidget)
    inner = ("QgsGroupBoxCollapseButton", "QTableCornerButton", "QDockWidgetTitleButton")
    found = []
    for widget in (w for kind in kinds for w in dock.findChildren(kind)):
        what = widget.metaObject().className()
        if what in inner:
            continue
        text = f"{what} {widget.text()}" if hasattr(widget, "text") else what
        if not widget.toolTip():
            found.append(f"{text}: no tooltip")
        elif not widget.isEnabled() and "Off now:" not in widget.toolTip():
            found.append(f"{text}: off, no reason")
    return found


def prepare_window():
    window = iface.mainWindow()
    for dock in window.findChildren(QDockWidget):
        if dock.objectName().startswith("Browser"):  # room for the Layers panel and its legends
            dock.hide()
    window.setGeometry(window.screen().geometry())  # no window manager under Xvfb to maximise it
    window.show()
    settle()


def start_session(plugin, controller, dock):
    canvas = iface.mapCanvas()
    layer = iface.addRasterLayer(RASTER, "sample scene")
    canvas.setExtent(layer.extent())
    reference = QgsRasterLayer(LABELS, "scene labels")
    QgsProject.instance().addMapLayer(reference, False)  # for the mIoU only: not in the legend
    report["engine_loaded_before_dock"] = controller.engine_loaded
    measured("open_dock_and_load_engine", controller, plugin.action.trigger, lambda: controller.engine_loaded)
    dock.raster.setLayer(layer)
    confidnet = dock.acquisition.model().item(dock.acquisition.findData("confidnet"))
    dock.model.setCurrentIndex(dock.model.findText(BINARY))
    report["confidnet_for_binary"] = [confidnet.isEnabled(), confidnet.toolTip()]
    dock.model.setCurrentIndex(dock.model.findText(MODEL))
    report["confidnet_for_model"] = confidnet.isEnabled()
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    report["retrain_tooltip_before"] = dock.retrain_button.toolTip()
    dock.mode_disca.setChecked(True)
    dock.steps.setValue(3)  # short rounds: the test is about the plugin
    dock.reference.setLayer(reference)
    report["model_choice"] = dock.model.currentText()
    report["untipped_before"] = untipped(dock)
    screenshot("1-dock-before-predict")
    measured("start_and_predict", controller, dock.start_button.click, lambda: controller.layers is not None)
    report["predicted"] = controller.last_error or "ok"
    report["engine_module"] = type(controller.settings).__module__  # the zip's own engine, by its name
    report["first_label"] = controller.session_label()
    screenshot("2-class-map")
    dock.view_buttons["uncertainty"].setChecked(True)
    report["heatmap_entropy"] = heatmap(controller)
    screenshot("3-uncertainty-patches")
    return layer


def switch_functions(controller, dock):
    """MC dropout, then ConfidNet: a visible task each, announced with an estimate."""
    report["switches"] = {}
    for key, shot in (("mcdropout", "4-mcdropout-heatmap"), ("confidnet", "5-confidnet-heatmap")):
        said = len(controller.messages)

        def choose(key=key):
            dock.acquisition.setCurrentIndex(dock.acquisition.findData(key))
            report["switches"][key] = {"task": controller.busy_with, "status": dock.status.text()}

        measured(f"switch_to_{key}", controller, choose)
        report["switches"][key]["said"] = [
            m for m in controller.messages[said:] if m.startswith("Ranking by")
        ]
        report[f"heatmap_{key}"] = heatmap(controller)
        screenshot(shot)
    measured("switch_to_entropy", controller, lambda: dock.acquisition.setCurrentIndex(0))
    dock.view_buttons["classes"].setChecked(True)


def correct_and_retrain(controller, dock, tool, layer):
    canvas = iface.mapCanvas()
    dock.next_button.click()
    patch = next(p for p in controller.session.patches() if p.patch_id == controller._visited[-1])
    report["next_patch"] = {"rank": patch.rank, "extent": canvas.extent().toString(1)}
    dock.tool_button.setChecked(True)
    info = controller.session.info
    for row, col, class_id in corrections_in(controller, patch):
        dock._pick_class(class_id)  # as keys 1–9 do
        measured("click", controller, lambda row=row, col=col: click(canvas, tool, info, row, col))
    truth = labels()
    report["clicks"] = [(c.row, c.col, c.class_name) for c in controller.session.clicks()]
    report["click_truth"] = [
        controller.classes[int(truth[c.row, c.col])].name for c in controller.session.clicks()
    ]
    screenshot("6-next-patch-clicks")
    measured("retrain", controller, dock.retrain_button.click)
    bar = iface.messageBar()
    report["message_bar_items"] = [i.text() for i in bar.items() if i.title() == "Interactive segmentation"]
    canvas.setExtent(layer.extent())
    report["history"] = controller.history()
    screenshot("7-retrained-history")


def export_everything(controller, dock):
    menu = dock.export_button.menu()
    menu.popup(dock.export_button.mapToGlobal(QPoint(0, dock.export_button.height())))
    wait(menu.isVisible, 10)
    report["export_menu"] = [action.text() for action in menu.actions()]
    screenshot("8-export-menu", whole_screen=True)
    menu.hide()
    controller.export_class_map(OUT / "export-classes.tif")
    controller.export_polygons(OUT / "export-polygons.gpkg")
    wait(lambda: idle(controller))
    controller.export_bundle(OUT / "export-bundle")
    controller.export_clicks(OUT / "export-clicks.gpkg")
    report["layers"] = [
        {"name": layer.name(), "renderer": layer.renderer().type() if hasattr(layer, "renderer") else None}
        for layer in QgsProject.instance().mapLayers().values()
    ]
    group = controller.layers.group
    report["group"] = {"name": group.name(), "layers": [node.name() for node in group.findLayers()]}
    report["legend_classes"] = [c.label for c in controller.layers.classes.renderer().classes()]
    report["last_error"] = controller.last_error


def new_model_from_clicks(controller, dock, tool, layer):
    """SIAL: a second session, a network for the analyst's own classes that learns from clicks."""
    from sial_qgis_plugin.engine.protocols.agents import region_centres

    canvas = iface.mapCanvas()
    dock.choose_new_model(SIAL_CLASSES)
    dock.sial_steps.setValue(30)  # a short round: the test is about the plugin
    training = controller.sial_settings.training
    controller.sial_settings = replace(controller.sial_settings, training=replace(training, batch=4))
    measured(
        "start_sial",
        controller,
        dock.start_button.click,
        lambda: controller.is_sial and controller.layers is not None,
    )
    canvas.setExtent(layer.extent())
    settle()
    truth = labels()
    info = controller.session.info
    for class_id in range(len(controller.classes)):  # the scene's classes, renamed
        for row, col in region_centres(truth == class_id, 1):
            dock._pick_class(class_id)
            click(canvas, tool, info, row, col)
            wait(lambda: idle(controller))
    report["sial_retrain_button"] = dock.retrain_button.text()
    report["sial_palette"] = [
        b.text()
        for b in dock.findChildren(QToolButton)
        if b.property("class_index") is not None and b.isVisible()
    ]
    measured("retrain_sial", controller, dock.retrain_button.click)
    dock.advanced_box.setCollapsed(False)
    screenshot("9-sial-new-model")
    dock.advanced_box.setCollapsed(True)
    report["sial_history"] = controller.history()
    report["sial_legend_classes"] = [c.label for c in controller.layers.classes.renderer().classes()]
    report["sial_last_error"] = controller.last_error
    report["sial_group_visible"] = {g: v for g, v in groups().items()}


def groups():
    from sial_qgis_plugin.layers import session_groups

    return {g.name(): g.isVisible() for g in session_groups(QgsProject.instance())}


def select(dock, path):
    box = dock.sessions_box
    box.list.setCurrentRow(
        next(i for i in range(box.list.count()) if box.list.item(i).data(256) == str(path))
    )
    return box


def back_to_the_first(controller, dock, first):
    box = select(dock, first)
    measured("switch_session", controller, box.open_selected, lambda: controller.layers is not None)
    iface.mapCanvas().setExtent(controller.layers.classes.extent())
    raster = dock.raster.currentLayer()
    report["back"] = {"session": controller.session.path.name, "mode": controller.mode,
                      "model": dock.model.currentText(), "raster": raster.name() if raster else None,
                      "disca_checked": dock.mode_disca.isChecked(), "groups": groups()}  # fmt: skip
    screenshot("10-session-list")


def cancel_then_delete_a_binary_session(controller, dock, first):
    folder = controller.sessions_folder()
    before = sorted(p.name for p in folder.iterdir())
    dock.model.setCurrentIndex(dock.model.findText(BINARY))
    dock.mode_ac.setChecked(True)

    def start_and_cancel():
        dock.start_button.click()
        wait(lambda: len(list(folder.glob("*.gpkg"))) > len([n for n in before if n.endswith(".gpkg")]), 120)
        dock.cancel_button.click()  # during the first prediction

    measured("cancel_first_prediction", controller, start_and_cancel)
    left = sorted(set(p.name for p in folder.iterdir()) - set(before))
    report["cancelled"] = {
        "left": left,
        "message": controller.messages[-1],
        "session": controller.session.path.name,
    }
    measured("start_binary", controller, dock.start_button.click, lambda: controller.layers is not None)
    binary = controller.session.path
    if binary == first:  # never delete the first session in its place
        raise AssertionError(f"the binary model's session did not start: {controller.last_error}")
    report["binary_alpha"] = {
        c.label: c.color.alpha() for c in controller.layers.classes.renderer().classes()
    }
    box = select(dock, binary)

    def confirm_on_screen():
        screenshot("11-delete-session", whole_screen=True)
        box_ = QApplication.activeModalWidget()
        report["delete_question"] = box_.text() if isinstance(box_, QMessageBox) else None
        box_.button(QMessageBox.StandardButton.Yes).click()

    QTimer.singleShot(300, confirm_on_screen)
    box._delete_clicked()
    left = sorted(p.name for p in folder.glob(f"{binary.stem}*"))
    report["deleted"] = {"exists": binary.exists(), "left": left, "listed": box.list.count(),
                         "in_use": controller.session is not None}  # fmt: skip
    measured("switch_session_again", controller, lambda: select(dock, first).open_selected(),
             lambda: controller.layers is not None)  # fmt: skip


def rename_save_and_reopen(controller, dock, first):
    controller.rename_session(first, "Sample scene, first pass")
    report["renamed_group"] = controller.layers.group.name()
    dock.view_buttons["uncertainty"].setChecked(True)
    dock.mode_disca.setChecked(True)  # back to AC + DISCA (AC was chosen for the binary session)
    project = QgsProject.instance()
    assert project.write(str(OUT / "work.qgz"))
    controller.close_session()
    project.clear()
    dock.mode_ac.setChecked(True)  # the dock left in another state
    started = time.perf_counter()
    assert project.read(str(OUT / "work.qgz"))  # QGIS's own work: the project's layers
    report["qgis_reads_project_s"] = round(time.perf_counter() - started, 3)
    measured("reopen_session_with_project", controller, lambda: None, lambda: controller.layers is not None)
    iface.mapCanvas().setExtent(controller.layers.classes.extent())
    report["reopened"] = {
        "session": controller.session.path.name, "listed": [s.label for s in controller.sessions()],
        "raster": dock.raster.currentLayer().name() if dock.raster.currentLayer() else None,
        "model": dock.model.currentText(), "disca_checked": dock.mode_disca.isChecked(),
        "uncertainty_shown": dock.view_buttons["uncertainty"].isChecked(),
        "acquisition": dock.acquisition.currentData(), "group": controller.layers.group.name(),
    }  # fmt: skip
    dock.sessions_box.setCollapsed(False)
    screenshot("12-reopened-project")


def unplaced_raster(name, placement):
    """A crop of the scene without a CRS: storing the identity geotransform, or none at all."""
    import warnings

    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    with rasterio.open(RASTER) as scene:
        data = scene.read(window=Window(128, 128, 256, 192))
        profile = {"driver": "GTiff", "width": 256, "height": 192, "count": scene.count, "dtype": data.dtype}
    if placement == "identity":
        profile["transform"] = Affine.identity()  # what rasterio writes: GDAL stores it
    path = OUT / f"{name}.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with rasterio.open(path, "w", **profile) as target:
            target.write(data)
    return path


def map_point(layer, row, col, flipped):
    """The map point of pixel (row, col)'s centre where QGIS draws ``layer`` (its extent)."""
    from qgis.core import QgsPointXY

    extent = layer.extent()
    width, height = extent.width() / layer.width(), extent.height() / layer.height()
    y = extent.yMinimum() + (row + 0.5) * height if flipped else extent.yMaximum() - (row + 0.5) * height
    return QgsPointXY(extent.xMinimum() + (col + 0.5) * width, y)


def unplaced_rasters(controller, dock, tool):
    """Both kinds of raster without a CRS: the maps lie exactly on the image, clicks land."""
    canvas = iface.mapCanvas()
    report["unplaced"] = {}
    for shot, placement in PLACEMENTS.items():
        layer = iface.addRasterLayer(str(unplaced_raster(shot, placement)), f"no CRS, {placement}")
        canvas.setDestinationCrs(layer.crs())
        canvas.setExtent(layer.extent())
        dock.raster.setLayer(layer)
        dock.mode_ac.setChecked(True)
        said, controller.last_error = len(controller.messages), ""

        def started(layer=layer):  # or refused: the report says why
            return controller.last_error or (
                controller.layers is not None and getattr(controller.raster_layer, "id", str)() == layer.id()
            )

        measured(f"start_{placement}", controller, dock.start_button.click, started)
        if controller.last_error:
            raise AssertionError(f"{placement}: {controller.last_error}")
        layers = controller.layers
        # QGIS draws a stored identity geotransform with row 0 at the bottom (y = 0 … +height)
        point = map_point(layer, *CLICKED, flipped=placement == "identity")
        screen = canvas.getCoordinateTransform().transform(point)
        dock.tool_button.setChecked(True)
        release = QEvent.Type.MouseButtonRelease
        left = Qt.MouseButton.LeftButton
        event = QgsMapMouseEvent(canvas, release, QPoint(round(screen.x()), round(screen.y())), left, left,
                                 Qt.KeyboardModifier.NoModifier)  # fmt: skip
        measured(f"click_{placement}", controller, lambda event=event: tool.canvasReleaseEvent(event))
        report["unplaced"][placement] = {
            "image": layer.extent().toString(3),
            "maps": [lyr.extent().toString(3) for lyr in (layers.classes, layers.uncertainty)],
            "patches_inside": layer.extent().contains(layers.patches.extent()),
            "clicks": [(c.row, c.col) for c in controller.session.clicks()],
            "refused": [m for m in controller.messages[said:] if "outside" in m],
            "last_error": controller.last_error,
            "retrain_tooltip": dock.retrain_button.toolTip(),  # a session in AC mode: off, and why
        }
        dock.view_buttons["classes"].setChecked(True)
        screenshot(shot)
        QgsProject.instance().layerTreeRoot().findLayer(layer.id()).setItemVisibilityChecked(False)
    report["untipped_after"] = untipped(dock)
    dock.scroll.verticalScrollBar().setValue(0)  # expanding a box scrolled the dock to it
    screenshot("15-dock", widget=dock)


def session():
    plugin = plugins["sial_qgis_plugin"]
    controller, dock, tool = plugin.controller, plugin.dock, plugin.map_tool
    messages = []
    controller.message.connect(lambda text, level: messages.append(text))
    controller.messages = messages
    prepare_window()
    layer = start_session(plugin, controller, dock)
    first = controller.session.path
    switch_functions(controller, dock)
    correct_and_retrain(controller, dock, tool, layer)
    export_everything(controller, dock)
    new_model_from_clicks(controller, dock, tool, layer)
    back_to_the_first(controller, dock, first)
    cancel_then_delete_a_binary_session(controller, dock, first)
    rename_save_and_reopen(controller, dock, first)
    unplaced_rasters(controller, dock, tool)


try:
    session()
except Exception:  # everything is reported to the test
    report["error"] = traceback.format_exc()
finally:
    (OUT / "report.json").write_text(json.dumps(report, indent=2, default=str))
    QgsProject.instance().setDirty(False)
    os._exit(0)  # no "save the project?" question: the test reads report.json
