"""The plugin object QGIS creates: toolbar action, dock, click tool and Processing provider.

If torch or another engine package is missing, the plugin still loads: its action opens a dialog
that explains and offers to install them, instead of failing with a traceback. Nothing here
imports torch: the dock loads the engine in the background the first time it is opened.

The controller's sentences go to QGIS's message bar one at a time: a new one replaces the
plugin's previous one instead of queueing behind it.
"""

from __future__ import annotations

import contextlib
from typing import Any

from qgis.core import Qgis, QgsApplication
from qgis.gui import QgsMessageBarItem
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon

from .compat import QAction
from .environment import PLUGIN_DIR, add_paths, missing_packages

PLUGIN_NAME = "Interactive segmentation"
ICON = PLUGIN_DIR / "icons" / "icon.svg"
SECONDS = {Qgis.MessageLevel.Info: 5, Qgis.MessageLevel.Success: 5}  # warnings stay 10 s


class SialPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.action: QAction | None = None
        self.provider = None
        self.controller = None
        self.map_tool = None
        self.dock = None
        self.missing: list[str] = []
        self.bar_item: QgsMessageBarItem | None = None

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        add_paths()
        self.missing = missing_packages()
        self.action = QAction(QIcon(str(ICON)), PLUGIN_NAME, self.iface.mainWindow())
        self.action.setObjectName("sialOpenPanel")
        self.action.setCheckable(not self.missing)
        self.action.triggered.connect(self.run)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(PLUGIN_NAME, self.action)
        if self.missing:
            return
        from .controller import SessionController
        from .dock import SegmentationDock
        from .map_tool import ClickTool
        from .processing.provider import SegmentationProvider

        self.provider = SegmentationProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)
        canvas = self.iface.mapCanvas()
        self.controller = SessionController(canvas)
        self.controller.tree_view = self.iface.layerTreeView()
        self.controller.message.connect(self._push_message)
        self.map_tool = ClickTool(canvas, self.controller)
        self.dock = SegmentationDock(self.controller, self.map_tool, self.iface.mainWindow())
        self.dock.setToggleVisibilityAction(self.action)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()

    def run(self) -> None:
        if self.missing:
            self.show_dependencies()

    def show_dependencies(self):
        from .dependencies import DependencyDialog

        dialog = DependencyDialog(self.missing, self.iface.mainWindow())
        dialog.show()
        return dialog

    def _push_message(self, text: str, level: Any) -> None:
        """One message bar item of the plugin's at a time: the newest replaces the one before."""
        bar = self.iface.messageBar()
        if self.bar_item is not None:
            with contextlib.suppress(RuntimeError):  # gone already: its time ran out
                bar.popWidget(self.bar_item)
        self.bar_item = QgsMessageBarItem(PLUGIN_NAME, text, level, SECONDS.get(level, 10))
        bar.pushItem(self.bar_item)

    def unload(self) -> None:
        if self.controller is not None:
            self.controller.cancel()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.map_tool is not None:
            canvas = self.iface.mapCanvas()
            if canvas.mapTool() is self.map_tool:
                canvas.unsetMapTool(self.map_tool)
            self.map_tool = None
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu(PLUGIN_NAME, self.action)
            self.action.deleteLater()
            self.action = None
        if self.controller is not None:
            self.controller.detach()
        self.controller = None
