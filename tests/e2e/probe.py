"""Run inside the real QGIS desktop (``qgis --code probe.py``): a scripted analyst session.

Loads a raster, predicts, makes three clicks with the click tool (real mouse events on the real
canvas), retrains, goes to the next patch, exports everything, saves screenshots, writes
``report.json`` into ``$SIAL_E2E_OUT`` and quits QGIS.
"""

import json
import os
import time
import traceback
from dataclasses import replace
from pathlib import Path

from qgis.core import QgsApplication, QgsProject
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QCoreApplication, QEvent, QPoint, Qt
from qgis.PyQt.QtWidgets import QToolButton
from qgis.utils import iface, plugins

OUT = Path(os.environ["SIAL_E2E_OUT"])
RASTER = os.environ["SIAL_E2E_RASTER"]
MODEL = os.environ["SIAL_E2E_MODEL"]
report: dict = {"steps": []}


def wait(condition, timeout=300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        QCoreApplication.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    raise TimeoutError("waited too long")


def idle(controller):
    return not controller.busy and QgsApplication.taskManager().countActiveTasks() == 0


def screenshot(name):
    for _ in range(20):
        QCoreApplication.processEvents()
        time.sleep(0.05)
    iface.mapCanvas().waitWhileRendering()
    iface.mainWindow().grab().save(str(OUT / f"{name}.png"))
    report["steps"].append(name)


def click(canvas, tool, info, row, col, button=Qt.LeftButton):
    x, y = info.map_transform * (col + 0.5, row + 0.5)
    pixel = canvas.getCoordinateTransform().transform(x, y)
    event = QgsMapMouseEvent(canvas, QEvent.MouseButtonRelease, QPoint(round(pixel.x()), round(pixel.y())),
                             button, button, Qt.NoModifier)  # fmt: skip
    tool.canvasReleaseEvent(event)


def session():
    plugin = plugins["sial_qgis_plugin"]
    controller, dock, tool = plugin.controller, plugin.dock, plugin.map_tool
    canvas = iface.mapCanvas()
    iface.mainWindow().resize(1600, 1000)
    iface.mainWindow().showMaximized()
    layer = iface.addRasterLayer(RASTER, "sample scene")
    canvas.setExtent(layer.extent())
    plugin.action.trigger()  # opens the dock, as the toolbar button does
    dock.raster.setLayer(layer)
    dock.other_model = Path(MODEL)
    dock.model.setCurrentIndex(dock.model.findText("Other bundle…"))  # chosen above
    dock.device.setCurrentIndex(dock.device.findData("cpu"))
    dock.mode_disca.setChecked(True)
    dock.steps.setValue(3)
    dock.start_button.click()
    wait(lambda: idle(controller) and controller.layers is not None)
    report["predicted"] = controller.last_error or "ok"
    screenshot("1-predicted")
    dock.view_buttons["uncertainty"].setChecked(True)
    screenshot("1b-uncertainty-heatmap")
    dock.view_buttons["classes"].setChecked(True)

    dock.tool_button.setChecked(True)
    info = controller.session.info
    for row, col, class_id in ((120, 150, 4), (400, 500, 0), (650, 220, 3)):
        dock._pick_class(class_id)
        click(canvas, tool, info, row, col)
        wait(lambda: idle(controller))
    report["clicks"] = [(c.row, c.col, c.class_name) for c in controller.session.clicks()]
    screenshot("2-three-clicks")

    dock.retrain_button.click()
    wait(lambda: idle(controller))
    report["history"] = controller.history()
    screenshot("3-retrained")

    dock.next_button.click()
    report["next_patch_extent"] = canvas.extent().toString(1)
    screenshot("4-next-patch")

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

    # SIAL: a network for the analyst's own classes that learns from the clicks alone
    dock.choose_new_model("built-up:#d7301f, bare:#e0c9a6, green:#33a02c, water:#1f78b4")
    dock.sial_steps.setValue(30)  # short rounds: the test is about the plugin
    training = controller.sial_settings.training
    controller.sial_settings = replace(controller.sial_settings, training=replace(training, batch=4))
    dock.start_button.click()
    wait(lambda: idle(controller) and controller.layers is not None and controller.is_sial)
    screenshot("5-sial-untrained")
    info = controller.session.info
    for row, col, class_id in ((400, 500, 0), (120, 150, 3), (650, 220, 2), (300, 650, 1)):
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
    screenshot("6-sial-retrained")
    report["sial_history"] = controller.history()
    report["sial_legend_classes"] = [c.label for c in controller.layers.classes.renderer().classes()]
    report["sial_last_error"] = controller.last_error


try:
    session()
except Exception:  # everything is reported to the test
    report["error"] = traceback.format_exc()
finally:
    (OUT / "report.json").write_text(json.dumps(report, indent=2, default=str))
    QgsProject.instance().setDirty(False)
    os._exit(0)  # no "save the project?" question: the test reads report.json
