"""The dock panel: the analyst's whole loop in one place. UI only; the controller does the work.

From top to bottom: what to start (raster, model, device, acquisition, mode, which map to show),
the class palette, the loop's buttons, the *Advanced* settings, the history of rounds and the
running task's progress. The palette, the *Advanced* panel and the export menu are widgets of
their own (class_palette.py, advanced_panel.py, export_menu.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QShortcut,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .advanced_panel import AdvancedPanel
from .class_palette import ClassPalette
from .environment import bundled_models, gpu_description
from .export_menu import ExportButton

OTHER_MODEL = "Other bundle…"
NEW_MODEL = "New model, learnt from clicks (SIAL)…"
NEW_MODEL_DATA = "sial:new"
NEW_MODEL_EXAMPLE = "building, road, vegetation, water, other"
ACQUISITION_LABELS = {
    "entropy": "Entropy",
    "margin": "Margin (best two classes)",
    "mcdropout": "MC dropout (5 passes)",
    "odin": "ODIN",
}
VIEWS = (("classes", "Classes"), ("uncertainty", "Uncertainty"), ("both", "Both"))
MESSAGE_TITLE = "Interactive segmentation"


class SegmentationDock(QgsDockWidget):
    """Built once by the plugin; follows the controller's signals to show the session's state."""

    def __init__(self, controller: Any, map_tool: Any, parent: QWidget | None = None):
        super().__init__("Interactive segmentation", parent)
        self.setObjectName("SialSegmentationDock")
        self.controller, self.map_tool = controller, map_tool
        self.other_model: Path | None = None
        self.new_model_classes = ""  # the class names typed for a new SIAL model
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(self._setup_form())
        self.palette = ClassPalette()
        self.palette.picked.connect(self._pick_class)
        layout.addWidget(self.palette)
        layout.addLayout(self._loop_buttons())
        self.advanced_box = AdvancedPanel(controller)
        layout.addWidget(self.advanced_box)
        panel = self.advanced_box  # its widgets by their old names, for scripts and tests
        self.anchor, self.steps, self.learning_rate = panel.anchor, panel.steps, panel.learning_rate
        self.sial_steps, self.sial_superpixels = panel.sial_steps, panel.sial_superpixels
        self.click_loss, self.sial_prior, self.reference = panel.click_loss, panel.sial_prior, panel.reference
        layout.addWidget(QLabel("History"))
        layout.addWidget(self._history_table())
        layout.addLayout(self._progress_row())
        self.status = QLabel("")
        layout.addWidget(self.status)
        layout.addStretch()
        self.setWidget(body)
        controller.changed.connect(self.refresh)
        controller.busy_changed.connect(self._busy)
        controller.progress.connect(self._progress)
        controller.message.connect(self._message)
        map_tool.class_chosen.connect(self.palette.select)
        for index in range(9):
            shortcut = QShortcut(QKeySequence(str(index + 1)), body, context=Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda i=index: self._pick_class(i))
        self.refresh()

    @property
    def class_buttons(self) -> list[QToolButton]:
        return self.palette.buttons

    # ------------------------------------------------------------------ building

    def _setup_form(self) -> QFormLayout:
        form = QFormLayout()
        self.raster = QgsMapLayerComboBox()
        self.raster.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster.setAllowEmptyLayer(True)
        self.raster.setLayer(None)
        form.addRow("Raster", self.raster)
        form.addRow("Model", self._model_choice())
        self.device = QComboBox()
        gpu = gpu_description()
        self.device.addItem("Automatic" + (f" ({gpu})" if gpu else " (CPU: no GPU found)"), "auto")
        self.device.addItem("CPU", "cpu")
        self.device.addItem(f"CUDA ({gpu})" if gpu else "CUDA (no GPU found)", "cuda")
        form.addRow("Device", self.device)
        self.acquisition = QComboBox()
        for key, label in ACQUISITION_LABELS.items():
            self.acquisition.addItem(label, key)
        self.acquisition.currentIndexChanged.connect(
            lambda: setattr(self.controller, "acquisition", self.acquisition.currentData())
        )
        form.addRow("Next patch by", self.acquisition)
        form.addRow("Mode", self._mode_row())
        form.addRow("Show", self._view_row())
        self.start_button = QPushButton("Predict (start a session)")
        self.start_button.clicked.connect(self.start)
        form.addRow(self.start_button)
        return form

    def _model_choice(self) -> QComboBox:
        """The bundled models by name, another bundle's folder, or a new model for the analyst's
        own classes (SIAL)."""
        self.model = QComboBox()
        for model in bundled_models():
            self.model.addItem(model.name, str(model.directory))
            self.model.setItemData(self.model.count() - 1, model.description, Qt.ToolTipRole)
        self.model.addItem(OTHER_MODEL, "")
        self.model.addItem(NEW_MODEL, NEW_MODEL_DATA)
        self.model.setItemData(
            self.model.count() - 1,
            "An untrained network for your own classes: it learns from your clicks alone, "
            "one Retrain round after another (SIAL).",
            Qt.ToolTipRole,
        )
        self.model.activated.connect(self._model_chosen)
        return self.model

    def _mode_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.mode_ac = QRadioButton("AC")
        self.mode_ac.setToolTip("Clicks enter the model as input channels; only nearby tiles change.")
        self.mode_disca = QRadioButton("AC + DISCA")
        self.mode_disca.setToolTip("Also retrain the model on the clicks (Retrain): corrections spread.")
        self.mode_ac.setChecked(True)
        modes = QButtonGroup(self)
        for button in (self.mode_ac, self.mode_disca):
            modes.addButton(button)
            row.addWidget(button)
        self.mode_ac.toggled.connect(self._mode_changed)
        return row

    def _view_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.view_buttons: dict[str, QRadioButton] = {}
        views = QButtonGroup(self)
        for key, label in VIEWS:
            button = QRadioButton(label)
            button.toggled.connect(lambda on, k=key: on and self._show(k))
            views.addButton(button)
            row.addWidget(button)
            self.view_buttons[key] = button
        self.view_buttons["classes"].setChecked(True)
        return row

    def _loop_buttons(self) -> QGridLayout:
        grid = QGridLayout()
        self.tool_button = QPushButton("Click tool")
        self.tool_button.setCheckable(True)
        self.tool_button.setToolTip(
            "Left click: add a point of the current class. Right click: remove the nearest."
        )
        self.tool_button.toggled.connect(self._toggle_tool)
        self.previous_button = QPushButton("◀ Previous patch")
        self.previous_button.clicked.connect(self.controller.previous_patch)
        self.next_button = QPushButton("Next patch ▶")
        self.next_button.clicked.connect(self.controller.next_patch)
        self.retrain_button = QPushButton("Retrain (DISCA)")
        self.retrain_button.clicked.connect(self.controller.retrain)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setShortcut(QKeySequence.Undo)
        self.undo_button.clicked.connect(self.controller.undo)
        self.export_button = ExportButton(self.controller, self._message)
        buttons = (self.tool_button, self.undo_button, self.previous_button, self.next_button)
        for i, button in enumerate((*buttons, self.retrain_button, self.export_button)):
            grid.addWidget(button, i // 2, i % 2)
        return grid

    def _history_table(self) -> QTableWidget:
        self.history = QTableWidget(0, 5)
        self.history.setHorizontalHeaderLabels(["#", "step", "clicks", "s", "mIoU"])
        self.history.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.history.verticalHeader().setVisible(False)
        self.history.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.history.horizontalHeader().setStretchLastSection(True)
        return self.history

    def _progress_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.controller.cancel)
        row.addWidget(self.progress)
        row.addWidget(self.cancel_button)
        return row

    # ------------------------------------------------------------------ actions

    def selected_model(self) -> str:
        return self.model.currentData() or (str(self.other_model) if self.other_model else "")

    def start(self) -> None:
        """*Predict (start a session)*: a new session with what the form says."""
        self.controller.mode = "disca" if self.mode_disca.isChecked() else "ac"
        self.advanced_box.apply_disca_settings()
        layer, device = self.raster.currentLayer(), self.device.currentData()
        if self.model.currentData() == NEW_MODEL_DATA:
            self.controller.start_from_clicks(layer, self.new_model_classes, device)
        else:
            self.controller.start(layer, self.selected_model(), device)

    def _model_chosen(self) -> None:
        if self.model.currentData() == NEW_MODEL_DATA:
            text, ok = QInputDialog.getText(
                self,
                "Classes of the new model",
                "Class names, separated by commas (each optionally name:#rrggbb):",
                text=self.new_model_classes or NEW_MODEL_EXAMPLE,
            )
            if ok:
                self.choose_new_model(text)
            return
        if self.model.currentText() != OTHER_MODEL:
            return
        folder = QFileDialog.getExistingDirectory(self, "Model bundle folder (with model.json)")
        if folder:
            self.other_model = Path(folder)
            self.model.setItemText(self.model.currentIndex(), f"{Path(folder).name} (other bundle)")

    def choose_new_model(self, class_names: str) -> None:
        """Select an untrained model for ``class_names`` (what the class dialog asks for)."""
        self.new_model_classes = class_names.strip()
        index = self.model.findData(NEW_MODEL_DATA)
        self.model.setCurrentIndex(index)
        self.model.setItemText(index, f"New model: {self.new_model_classes} (SIAL)")

    def _mode_changed(self) -> None:
        self.controller.mode = "disca" if self.mode_disca.isChecked() else "ac"
        self.refresh()

    def _show(self, view: str) -> None:
        if self.controller.layers is not None:
            self.controller.layers.show(view)

    def _toggle_tool(self, on: bool) -> None:
        canvas = self.map_tool.canvas()
        if on:
            canvas.setMapTool(self.map_tool)
        elif canvas.mapTool() is self.map_tool:
            canvas.unsetMapTool(self.map_tool)

    def _pick_class(self, index: int) -> None:
        if index < len(self.controller.classes):
            self.controller.current_class = index
            self.palette.select(index)

    # ------------------------------------------------------------------ showing state

    def refresh(self) -> None:
        """The buttons, palette, settings and history as the session now is."""
        controller = self.controller
        has_session = controller.session is not None
        for button in (self.tool_button, self.undo_button, self.previous_button, self.next_button,
                       self.export_button):  # fmt: skip
            button.setEnabled(has_session)
        self.retrain_button.setEnabled(controller.can_retrain)
        self.retrain_button.setText("Retrain (SIAL)" if controller.is_sial else "Retrain (DISCA)")
        self.advanced_box.refresh()
        self.palette.show_classes(controller.classes, controller.click_counts(), controller.current_class)
        rows = controller.history()
        self.history.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = [row["iteration"], row["kind"], row["clicks"],
                      "" if row["seconds"] is None else f"{row['seconds']:.1f}",
                      "" if row["miou"] is None else f"{row['miou']:.1f}"]  # fmt: skip
            for c, value in enumerate(values):
                self.history.setItem(r, c, QTableWidgetItem(str(value)))

    def _busy(self, busy: bool, what: str) -> None:
        self.cancel_button.setEnabled(busy)
        self.start_button.setEnabled(not busy)
        self.retrain_button.setEnabled(not busy and self.controller.can_retrain)
        self.status.setText(what + "…" if busy else "")
        self.progress.setValue(0 if busy else 100 if self.controller.session else 0)

    def _progress(self, value: int, text: str) -> None:
        self.progress.setValue(value)
        self.status.setText(text)

    def _message(self, text: str, level: Any) -> None:
        self.status.setText(text)
        from qgis.utils import iface

        if iface is not None and hasattr(iface, "messageBar"):
            iface.messageBar().pushMessage(MESSAGE_TITLE, text, level=level, duration=6)
