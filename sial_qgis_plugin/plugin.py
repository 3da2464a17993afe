"""The plugin object QGIS creates: owns the toolbar action and, later, the dock panel."""

from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

PLUGIN_NAME = "Interactive segmentation (SIAL)"
ICON = Path(__file__).resolve().parent / "icons" / "icon.svg"


class SialPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.action: QAction | None = None

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        self.action = QAction(QIcon(str(ICON)), PLUGIN_NAME, self.iface.mainWindow())
        self.action.setObjectName("sialOpenPanel")
        self.action.triggered.connect(self.show_about)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(PLUGIN_NAME, self.action)

    def unload(self) -> None:
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu(PLUGIN_NAME, self.action)
            self.action.deleteLater()
            self.action = None

    def show_about(self) -> None:
        from qgis.core import Qgis

        from .engine import engine_status

        self.iface.messageBar().pushMessage(PLUGIN_NAME, engine_status(), level=Qgis.Info)
