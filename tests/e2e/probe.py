"""Run inside the real QGIS desktop (``qgis --code probe.py``): a scripted analyst session.

On the generated sample scene, with the bundled model: opens the dock, predicts, shows the
uncertainty and the ranked patches, goes to the next patch and clicks corrections there with the
click tool (real mouse events on the real canvas, where the prediction disagrees with the scene's
labels), retrains with DISCA, opens the export menu and exports everything, then starts a new
model for the analyst's own classes (SIAL), clicks and retrains it. A screenshot of the main
window follows each step (the list is in ``SCREENSHOTS``); ``report.json`` in ``$SIAL_E2E_OUT``
says what happened, and QGIS quits.
"""

import json
import os
import time
import traceback
from dataclasses import replace
from pathlib import Path

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt
from qgis.PyQt.QtWidgets import QApplication, QDockWidget, QToolButton
from qgis.utils import iface, plugins

OUT = Path(os.environ["SIAL_E2E_OUT"])
RASTER = os.environ["SIAL_E2E_RASTER"]
LABELS = os.environ["SIAL_E2E_LABELS"]
MODEL = os.environ.get("SIAL_E2E_MODEL", "dubai-landcover")  # a bundled model's name
SIAL_CLASSES = "built-up:#d7301f, bare:#e0c9a6, road:#7f7f7f, green:#33a02c, water:#1f78b4"
SCREENSHOTS = {
    "1-dock-before-predict": "the dock filled in, the scene on the canvas, nothing predicted yet",
    "2-class-map": "the class map after Predict, its legend in the Layers panel",
    "3-uncertainty-patches": "the uncertainty heatmap with the ranked patches",
    "4-next-patch-clicks": "Next patch: zoomed to patch 1, three correction clicks",
    "5-retrained-history": "after Retrain (DISCA): the whole map redrawn, the history with mIoU",
    "6-export-menu": "the Export menu",
    "7-sial-new-model": "a new model for the analyst's own classes (SIAL) after a first round",
}
report: dict = {"steps": [], "modal": {}, "canvas": {}}


def wait(condition, timeout=600.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        QCoreApplication.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    raise TimeoutError("waited too long")


def idle(controller):
    return not controller.busy and QgsApplication.taskManager().countActiveTasks() == 0


def settle(seconds=1.0):
    for _ in range(int(seconds / 0.05)):
        QCoreApplication.processEvents()
        time.sleep(0.05)
    iface.mapCanvas().waitWhileRendering()
    QCoreApplication.processEvents()


def screenshot(name, whole_screen=False):
    """The main window as it is now (``whole_screen``: the screen, so that popups show too)."""
    assert name in SCREENSHOTS, name
    settle()
    window = iface.mainWindow()
    image = window.screen().grabWindow(0) if whole_screen else window.grab()
    image.save(str(OUT / f"{name}.png"))
    canvas = iface.mapCanvas()
    corner = canvas.mapTo(window, QPoint(0, 0))
    report["canvas"][name] = [corner.x(), corner.y(), canvas.width(), canvas.height()]
    modal = QApplication.activeModalWidget()
    report["modal"][name] = modal.windowTitle() if modal is not None else None
    report["steps"].append(name)


def click(canvas, tool, info, row, col, button=Qt.LeftButton):
    """A real mouse release on the canvas pixel that shows raster pixel (row, col)."""
    x, y = info.map_transform * (col + 0.5, row + 0.5)
    pixel = canvas.getCoordinateTransform().transform(x, y)
    event = QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease, QPoint(round(pixel.x()), round(pixel.y())),
                             button, button, Qt.NoModifier)  # fmt: skip
    tool.canvasReleaseEvent(event)


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
    plugin.action.trigger()  # opens the dock, as the toolbar button does
    dock.raster.setLayer(layer)
    dock.model.setCurrentIndex(dock.model.findText(MODEL))
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    dock.mode_disca.setChecked(True)
    dock.steps.setValue(3)  # short rounds: the test is about the plugin
    dock.reference.setLayer(reference)
    report["model_choice"] = dock.model.currentText()
    screenshot("1-dock-before-predict")
    dock.start_button.click()
    wait(lambda: idle(controller) and controller.layers is not None)
    report["predicted"] = controller.last_error or "ok"
    screenshot("2-class-map")
    dock.view_buttons["uncertainty"].setChecked(True)
    screenshot("3-uncertainty-patches")
    dock.view_buttons["classes"].setChecked(True)
    return layer


def correct_and_retrain(controller, dock, tool, layer):
    canvas = iface.mapCanvas()
    dock.next_button.click()
    patch = next(p for p in controller.session.patches() if p.patch_id == controller._visited[-1])
    report["next_patch"] = {"rank": patch.rank, "extent": canvas.extent().toString(1)}
    dock.tool_button.setChecked(True)
    info = controller.session.info
    wanted = corrections_in(controller, patch)
    for row, col, class_id in wanted:
        dock._pick_class(class_id)  # as keys 1–9 do
        click(canvas, tool, info, row, col)
        wait(lambda: idle(controller))
    truth = labels()
    report["clicks"] = [(c.row, c.col, c.class_name) for c in controller.session.clicks()]
    report["click_truth"] = [
        controller.classes[int(truth[c.row, c.col])].name for c in controller.session.clicks()
    ]
    screenshot("4-next-patch-clicks")

    dock.retrain_button.click()
    wait(lambda: idle(controller))
    canvas.setExtent(layer.extent())
    report["history"] = controller.history()
    screenshot("5-retrained-history")


def export_everything(controller, dock):
    menu = dock.export_button.menu()
    menu.popup(dock.export_button.mapToGlobal(QPoint(0, dock.export_button.height())))
    wait(menu.isVisible, 10)
    report["export_menu"] = [action.text() for action in menu.actions()]
    screenshot("6-export-menu", whole_screen=True)
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
    """SIAL: a network for the analyst's own classes that learns from the clicks alone."""
    from sial_qgis_plugin.engine.protocols.agents import region_centres

    canvas = iface.mapCanvas()
    dock.choose_new_model(SIAL_CLASSES)
    dock.sial_steps.setValue(30)  # a short round: the test is about the plugin
    training = controller.sial_settings.training
    controller.sial_settings = replace(controller.sial_settings, training=replace(training, batch=4))
    dock.start_button.click()
    wait(lambda: idle(controller) and controller.layers is not None and controller.is_sial)
    canvas.setExtent(layer.extent())
    for group in QgsProject.instance().layerTreeRoot().findGroups():  # the earlier session's
        group.setExpanded(group is controller.layers.group)  # layers out of the way
        group.setItemVisibilityChecked(group is controller.layers.group)
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
    dock.retrain_button.click()
    wait(lambda: idle(controller))
    dock.advanced_box.setCollapsed(False)
    window = iface.mainWindow()
    window.resize(window.width(), window.height() + 120)  # room for the history under Advanced
    screenshot("7-sial-new-model")
    report["sial_history"] = controller.history()
    report["sial_legend_classes"] = [c.label for c in controller.layers.classes.renderer().classes()]
    report["sial_last_error"] = controller.last_error


def session():
    plugin = plugins["sial_qgis_plugin"]
    controller, dock, tool = plugin.controller, plugin.dock, plugin.map_tool
    report["engine_module"] = type(controller.settings).__module__  # the zip's engine, by its name
    prepare_window()
    layer = start_session(plugin, controller, dock)
    correct_and_retrain(controller, dock, tool, layer)
    export_everything(controller, dock)
    new_model_from_clicks(controller, dock, tool, layer)


try:
    session()
except Exception:  # everything is reported to the test
    report["error"] = traceback.format_exc()
finally:
    (OUT / "report.json").write_text(json.dumps(report, indent=2, default=str))
    QgsProject.instance().setDirty(False)
    os._exit(0)  # no "save the project?" question: the test reads report.json
