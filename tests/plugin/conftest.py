import time

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QCoreApplication, QEvent

from backend.demo.scene import write_scene


def wait_until_idle(controller, timeout: float = 180) -> None:
    """Let QGIS run the controller's background tasks (and what they queue) to the end."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        QCoreApplication.processEvents()
        if not controller.busy and QgsApplication.taskManager().countActiveTasks() == 0:
            QCoreApplication.processEvents()
            if not controller.busy:
                return
        time.sleep(0.01)
    raise TimeoutError("the controller's tasks did not finish in time")


@pytest.fixture(scope="session")
def scene(tmp_path_factory):
    return write_scene(tmp_path_factory.mktemp("plugin-scene"), size=384, seed=2)


@pytest.fixture
def raster_layer(scene, qgis_new_project):
    layer = QgsRasterLayer(str(scene.image), "scene")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


@pytest.fixture
def controller(qgis_canvas, raster_layer, tmp_path):
    from sial_qgis_plugin.controller import SessionController

    qgis_canvas.window().show()  # an unshown canvas keeps a stale tiny size: clicks would be imprecise
    QCoreApplication.processEvents()
    qgis_canvas.setDestinationCrs(raster_layer.crs())
    qgis_canvas.setExtent(raster_layer.extent())
    qgis_canvas.setLayers([raster_layer])
    controller = SessionController(qgis_canvas)
    messages = []
    controller.message.connect(lambda text, level: messages.append(text))
    controller.messages = messages
    yield controller
    controller.cancel()
    wait_until_idle(controller)
    controller.detach()  # a later test's project must not reach this controller


@pytest.fixture
def make_dock(qgis_canvas, controller):
    """``make_dock()``: the dock on the test's controller, deleted (with its widgets and their
    connections) when the test ends, so that no later signal reaches a half-collected one."""
    from sial_qgis_plugin.dock import SegmentationDock
    from sial_qgis_plugin.map_tool import ClickTool

    docks = []

    def make():
        docks.append(SegmentationDock(controller, ClickTool(qgis_canvas, controller)))
        return docks[-1]

    yield make
    controller.cancel()  # what still runs reports to the docks: let it end first
    wait_until_idle(controller)
    for dock in docks:
        dock.hide()
        dock.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
