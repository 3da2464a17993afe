"""The dock panel: the analyst's whole loop in one place. UI only; the controller does the work."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsMapLayerProxyModel
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor, QIcon, QKeySequence, QPixmap
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QShortcut,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .environment import bundled_models, gpu_description

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


def swatch(color: str, size: int = 14) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(color))
    return QIcon(pixmap)


class SegmentationDock(QgsDockWidget):
    def __init__(self, controller, map_tool, parent=None):
        super().__init__("Interactive segmentation", parent)
        self.setObjectName("SialSegmentationDock")
        self.controller, self.map_tool = controller, map_tool
        self.other_model: Path | None = None
        self.new_model_classes = ""  # the class names typed for a new SIAL model
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(self._setup_form())
        layout.addWidget(self._palette_box())
        layout.addLayout(self._loop_buttons())
        layout.addWidget(self._advanced_box())
        layout.addWidget(QLabel("History"))
        self.history = QTableWidget(0, 5)
        self.history.setHorizontalHeaderLabels(["#", "step", "clicks", "s", "mIoU"])
        self.history.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.history.verticalHeader().setVisible(False)
        self.history.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.history.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.history)
        progress_row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(controller.cancel)
        progress_row.addWidget(self.progress)
        progress_row.addWidget(self.cancel_button)
        layout.addLayout(progress_row)
        layout.addWidget(self.status)
        layout.addStretch()
        self.setWidget(body)
        controller.changed.connect(self.refresh)
        controller.busy_changed.connect(self._busy)
        controller.progress.connect(self._progress)
        controller.message.connect(self._message)
        map_tool.class_chosen.connect(self._select_class)
        for index in range(9):
            shortcut = QShortcut(QKeySequence(str(index + 1)), body, context=Qt.WidgetWithChildrenShortcut)
            shortcut.activated.connect(lambda i=index: self._pick_class(i))
        self.refresh()

    # ------------------------------------------------------------------ building

    def _setup_form(self) -> QFormLayout:
        form = QFormLayout()
        self.raster = QgsMapLayerComboBox()
        self.raster.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.raster.setAllowEmptyLayer(True)
        self.raster.setLayer(None)
        form.addRow("Raster", self.raster)
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
        form.addRow("Model", self.model)
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
        mode_row = QHBoxLayout()
        self.mode_ac = QRadioButton("AC")
        self.mode_ac.setToolTip("Clicks enter the model as input channels; only nearby tiles change.")
        self.mode_disca = QRadioButton("AC + DISCA")
        self.mode_disca.setToolTip("Also retrain the model on the clicks (Retrain): corrections spread.")
        self.mode_ac.setChecked(True)
        modes = QButtonGroup(self)
        for button in (self.mode_ac, self.mode_disca):
            modes.addButton(button)
            mode_row.addWidget(button)
        self.mode_ac.toggled.connect(self._mode_changed)
        form.addRow("Mode", mode_row)
        view_row = QHBoxLayout()
        self.view_buttons = {}
        views = QButtonGroup(self)
        for key, label in (("classes", "Classes"), ("uncertainty", "Uncertainty"), ("both", "Both")):
            button = QRadioButton(label)
            button.toggled.connect(lambda on, k=key: on and self._show(k))
            views.addButton(button)
            view_row.addWidget(button)
            self.view_buttons[key] = button
        self.view_buttons["classes"].setChecked(True)
        form.addRow("Show", view_row)
        self.start_button = QPushButton("Predict (start a session)")
        self.start_button.clicked.connect(self.start)
        form.addRow(self.start_button)
        return form

    def _palette_box(self) -> QWidget:
        box = QgsCollapsibleGroupBox("Classes (keys 1–9)")
        self.palette = QGridLayout(box)
        self.palette_group = QButtonGroup(self)
        self.palette_group.setExclusive(True)
        self.palette_group.idClicked.connect(self._pick_class)
        self.class_buttons: list[QToolButton] = []
        return box

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
        self.export_button = QPushButton("Export ▾")
        menu = QMenu(self.export_button)
        menu.addAction("Class map (GeoTIFF)…", self.export_class_map)
        menu.addAction("Class polygons (GeoPackage)…", self.export_polygons)
        menu.addAction("Adapted model (bundle)…", self.export_bundle)
        menu.addAction("Clicks (GeoPackage)…", self.export_clicks)
        self.export_button.setMenu(menu)
        buttons = (self.tool_button, self.undo_button, self.previous_button, self.next_button)
        for i, button in enumerate((*buttons, self.retrain_button, self.export_button)):
            grid.addWidget(button, i // 2, i % 2)
        return grid

    def _advanced_box(self) -> QWidget:
        box = self.advanced_box = QgsCollapsibleGroupBox("Advanced")
        box.setCollapsed(True)
        form = QFormLayout(box)
        settings = self.controller.settings
        self.anchor = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=100.0, singleStep=0.5)
        self.anchor.setValue(settings.anchor_weight)
        self.anchor.setToolTip("λ: weight of the L1 pull towards the initial prediction (DIAL: 1).")
        form.addRow("λ (anchor)", self.anchor)
        self.steps = QSpinBox(minimum=1, maximum=500)
        self.steps.setValue(settings.steps)
        form.addRow("Steps per round", self.steps)
        self.learning_rate = QDoubleSpinBox(decimals=6, minimum=1e-6, maximum=1.0, singleStep=1e-4)
        self.learning_rate.setValue(settings.learning_rate)
        form.addRow("Learning rate", self.learning_rate)
        self.click_loss = QComboBox()
        self.click_loss.addItem("Cross-entropy (DIAL)", "ce")
        self.click_loss.addItem("Error-weighted Dice (SIAL)", "ewdl")
        form.addRow("Click loss", self.click_loss)
        for widget in (self.anchor, self.steps, self.learning_rate):
            widget.valueChanged.connect(self._settings_changed)
        self.click_loss.currentIndexChanged.connect(self._settings_changed)
        self.sial_steps = QSpinBox(minimum=10, maximum=20000, singleStep=100)
        self.sial_steps.setToolTip(
            "Training steps per Retrain round of a new model (8 crops of 128 px each)."
        )
        form.addRow("SIAL steps per round", self.sial_steps)
        self.sial_superpixels = QCheckBox("Spread each click over its superpixel")
        self.sial_superpixels.setToolTip(
            "SLIC superpixels around each click; pixels the model confidently disagrees with are left out."
        )
        form.addRow(self.sial_superpixels)
        self.sial_prior = QCheckBox("Correct for the clicks' class shares")
        self.sial_prior.setToolTip(
            "Clicks come about equally often per class, unlike the classes' areas: after each round "
            "the model is corrected for the imagery's class shares, estimated from its own predictions."
        )
        form.addRow(self.sial_prior)
        self._show_sial_settings()
        self.sial_steps.valueChanged.connect(self._sial_settings_changed)
        for check in (self.sial_superpixels, self.sial_prior):
            check.toggled.connect(self._sial_settings_changed)
        self.reference = QgsMapLayerComboBox()
        self.reference.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.reference.setAllowEmptyLayer(True)
        self.reference.setLayer(None)
        self.reference.setToolTip("Reference labels on the same grid: mIoU is recorded after every update.")
        self.reference.layerChanged.connect(lambda layer: setattr(self.controller, "reference", layer))
        form.addRow("Reference labels", self.reference)
        return box

    # ------------------------------------------------------------------ actions

    def selected_model(self) -> str:
        return self.model.currentData() or (str(self.other_model) if self.other_model else "")

    def start(self) -> None:
        self.controller.mode = "disca" if self.mode_disca.isChecked() else "ac"
        self._settings_changed()
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

    def _settings_changed(self) -> None:
        from dataclasses import replace

        self.controller.settings = replace(
            self.controller.settings,
            anchor_weight=self.anchor.value(),
            steps=self.steps.value(),
            learning_rate=self.learning_rate.value(),
            click_loss=self.click_loss.currentData(),
        )

    def _sial_settings_changed(self) -> None:
        self.controller.set_sial_options(
            self.sial_steps.value(), self.sial_superpixels.isChecked(), self.sial_prior.isChecked()
        )

    def _show_sial_settings(self) -> None:
        """The controller's SIAL settings in the widgets (those of a reopened session, say)."""
        settings = self.controller.sial_settings
        for widget in (self.sial_steps, self.sial_superpixels, self.sial_prior):
            widget.blockSignals(True)
        self.sial_steps.setValue(settings.training.steps)
        self.sial_superpixels.setChecked(settings.expansion is not None)
        self.sial_prior.setChecked(settings.training.adjust_prior)
        for widget in (self.sial_steps, self.sial_superpixels, self.sial_prior):
            widget.blockSignals(False)

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
            self._select_class(index)

    def _select_class(self, index: int) -> None:
        if index < len(self.class_buttons):
            self.class_buttons[index].setChecked(True)

    def _save_path(self, title: str, default: str, filter_: str) -> str:
        path, _ = QFileDialog.getSaveFileName(self, title, default, filter_)
        return path

    def export_class_map(self) -> None:
        if path := self._save_path("Export the class map", "classes.tif", "GeoTIFF (*.tif)"):
            self._message(f"Wrote {self.controller.export_class_map(path)}", Qgis.Success)

    def export_polygons(self) -> None:
        if path := self._save_path("Export class polygons", "classes.gpkg", "GeoPackage (*.gpkg)"):
            self.controller.export_polygons(path)

    def export_bundle(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the adapted model bundle")
        if folder and (written := self.controller.export_bundle(folder)):
            self._message(f"Wrote the model bundle {written}", Qgis.Success)

    def export_clicks(self) -> None:
        if path := self._save_path("Export the clicks", "clicks.gpkg", "GeoPackage (*.gpkg)"):
            self._message(f"Wrote {self.controller.export_clicks(path)}", Qgis.Success)

    # ------------------------------------------------------------------ showing state

    def refresh(self) -> None:
        controller = self.controller
        has_session = controller.session is not None
        for button in (self.tool_button, self.undo_button, self.previous_button, self.next_button,
                       self.export_button):  # fmt: skip
            button.setEnabled(has_session)
        self.retrain_button.setEnabled(controller.can_retrain)
        self.retrain_button.setText("Retrain (SIAL)" if controller.is_sial else "Retrain (DISCA)")
        for widget in (self.anchor, self.steps, self.learning_rate, self.click_loss):
            widget.setEnabled(not controller.is_sial)  # DISCA's: a SIAL session has its own below
        self._show_sial_settings()
        self._rebuild_palette()
        rows = controller.history()
        self.history.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = [row["iteration"], row["kind"], row["clicks"],
                      "" if row["seconds"] is None else f"{row['seconds']:.1f}",
                      "" if row["miou"] is None else f"{row['miou']:.1f}"]  # fmt: skip
            for c, value in enumerate(values):
                self.history.setItem(r, c, QTableWidgetItem(str(value)))

    def _rebuild_palette(self) -> None:
        classes = self.controller.classes
        counts = self.controller.click_counts()
        if [b.property("class_index") for b in self.class_buttons] != [c.index for c in classes]:
            for button in self.class_buttons:  # out of sight now: deleteLater waits for the event loop
                self.palette_group.removeButton(button)
                self.palette.removeWidget(button)
                button.hide()
                button.deleteLater()
            self.class_buttons = []
            for c in classes:
                button = QToolButton()
                button.setCheckable(True)
                button.setIcon(swatch(c.color))
                button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
                button.setProperty("class_index", c.index)
                self.palette_group.addButton(button, c.index)
                self.palette.addWidget(button, c.index // 2, c.index % 2)
                self.class_buttons.append(button)
        for c, button in zip(classes, self.class_buttons, strict=True):
            key = f"{c.index + 1} " if c.index < 9 else ""
            button.setText(f"{key}{c.name} ({counts.get(c.index, 0)})")
        self._select_class(self.controller.current_class)

    def _busy(self, busy: bool, what: str) -> None:
        self.cancel_button.setEnabled(busy)
        self.start_button.setEnabled(not busy)
        self.retrain_button.setEnabled(not busy and self.controller.can_retrain)
        self.status.setText(what + "…" if busy else "")
        self.progress.setValue(0 if busy else 100 if self.controller.session else 0)

    def _progress(self, value: int, text: str) -> None:
        self.progress.setValue(value)
        self.status.setText(text)

    def _message(self, text: str, level) -> None:
        self.status.setText(text)
        from qgis.utils import iface

        if iface is not None and hasattr(iface, "messageBar"):
            iface.messageBar().pushMessage("Interactive segmentation", text, level=level, duration=6)
