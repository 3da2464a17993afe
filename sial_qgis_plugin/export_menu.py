"""The dock's *Export ▾* button: asks where each of the session's products goes, then lets the
controller write it and says where it went."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QFileDialog, QMenu, QPushButton, QWidget


class ExportButton(QPushButton):
    """``say(text, level)`` reports a finished export (the dock's status line and message bar)."""

    def __init__(self, controller: Any, say: Callable[[str, Any], None], parent: QWidget | None = None):
        super().__init__("Export ▾", parent)
        self.controller, self.say = controller, say
        menu = QMenu(self)
        menu.addAction("Class map (GeoTIFF)…", self.export_class_map)
        menu.addAction("Class polygons (GeoPackage)…", self.export_polygons)
        menu.addAction("Adapted model (bundle)…", self.export_bundle)
        menu.addAction("Clicks (GeoPackage)…", self.export_clicks)
        self.setMenu(menu)

    def _save_path(self, title: str, default: str, filter_: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, title, default, filter_)
        return path

    def export_class_map(self) -> None:
        if path := self._save_path("Export the class map", "classes.tif", "GeoTIFF (*.tif)"):
            self.say(f"Wrote {self.controller.export_class_map(path)}", Qgis.MessageLevel.Success)

    def export_polygons(self) -> None:
        """In the background: the controller says when the polygons are written."""
        if path := self._save_path("Export class polygons", "classes.gpkg", "GeoPackage (*.gpkg)"):
            self.controller.export_polygons(path)

    def export_bundle(self) -> None:
        """A folder of the analyst's: a non-empty one gets a sub-folder named after the model."""
        folder = QFileDialog.getExistingDirectory(self, "Folder for the adapted model bundle")
        if folder and (written := self.controller.export_bundle(folder)):
            self.say(f"Wrote the model bundle {written}", Qgis.MessageLevel.Success)

    def export_clicks(self) -> None:
        if path := self._save_path("Export the clicks", "clicks.gpkg", "GeoPackage (*.gpkg)"):
            self.say(f"Wrote {self.controller.export_clicks(path)}", Qgis.MessageLevel.Success)
