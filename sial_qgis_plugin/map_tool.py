"""The click tool: left click adds a correction of the current class, right click removes the
nearest click, keys 1–9 pick the class, Ctrl+Z undoes."""

from __future__ import annotations

from qgis.gui import QgsMapTool
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QCursor

REMOVE_TOLERANCE_PIXELS = 12


class ClickTool(QgsMapTool):
    class_chosen = pyqtSignal(int)

    def __init__(self, canvas, controller):
        super().__init__(canvas)
        self.controller = controller
        self.setCursor(QCursor(Qt.CursorShape.CrossCursor))

    def canvasReleaseEvent(self, event) -> None:  # noqa: N802 - Qt API
        crs = self.canvas().mapSettings().destinationCrs()
        point = event.mapPoint()
        if event.button() == Qt.MouseButton.LeftButton:
            self.controller.add_click(point, crs)
        elif event.button() == Qt.MouseButton.RightButton:
            tolerance = REMOVE_TOLERANCE_PIXELS * self.canvas().mapUnitsPerPixel()
            self.controller.remove_click_near(point, crs, tolerance)

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt API
        key = event.key()
        if Qt.Key.Key_1 <= key <= Qt.Key.Key_9:
            index = key - Qt.Key.Key_1
            if index < len(self.controller.classes):
                self.controller.current_class = index
                self.class_chosen.emit(index)
                event.accept()
                return
        if key == Qt.Key.Key_Z and event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.controller.undo()
            event.accept()
            return
        event.ignore()
