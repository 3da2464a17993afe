"""The top of the dock: what a session is made of (raster, model, device), how it ranks patches,
its mode and which map is shown, and the button that starts it.

Every control says what it does in its tooltip; one that is off says why. ConfidNet is offered
only for a model that carries a ConfidNet head (greyed out, with the reason, otherwise). When
another session comes into use (reopened from the list, or with its project), the form shows
that session's raster, model, device, function, mode and map.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QPushButton,
    QRadioButton,
    QWidget,
)

from .acquisitions import ACQUISITIONS, NO_CONFIDNET
from .environment import bundled_models

OTHER_MODEL = "Other bundle…"
NEW_MODEL = "New model, learnt from clicks (SIAL)…"
NEW_MODEL_DATA = "sial:new"
NEW_MODEL_EXAMPLE = "building, road, vegetation, water, other"
VIEWS = (
    ("classes", "Classes", "Show the class map over the image."),
    (
        "uncertainty",
        "Uncertainty",
        "Show the uncertainty heatmap over the image: bright where the model is unsure.",
    ),
    ("both", "Both", "Show the heatmap over the class map."),
)
TOOLTIP = Qt.ItemDataRole.ToolTipRole
TIPS = {
    "raster": "The raster to segment: a raster file on disk (GeoTIFF or any other GDAL format).",
    "model": "The model that segments the raster: a bundled one (hover over it for what it knows), "
    "another bundle's folder, or a new network for your own classes that learns from your clicks.",
    "device": "Where the model runs: the GPU if torch sees one (Automatic), or the CPU.",
    "acquisition": "How the patch queue is ranked and what the heatmap shows: the model's uncertainty, "
    "measured this way. Changing it with a session open predicts the whole raster again.",
    "mode": "AC: clicks are inputs of the model and change the map near them. AC + DISCA: Retrain also "
    "retrains the model on the clicks, so that corrections spread.",
    "start": "Create a new session on the raster with this model and predict it in the background. The "
    "session in use stays in the Sessions list.",
}
LOADING = "PyTorch and the engine are still loading (a few seconds, once)."
COMBO_CHARACTERS = 12  # the width of the form's drop-downs; their lists show the whole names


def card_of(model_dir: str | Path) -> dict[str, Any]:
    """A bundle's card as JSON (no torch), or {}."""
    try:
        card = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


class SetupForm(QWidget):
    """Bound to ``controller`` (a SessionController); the dock reads its widgets."""

    def __init__(self, controller: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.other_model: Path | None = None
        self.new_model_classes = ""  # the class names typed for a new SIAL model
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # a narrow dock: fields below
        self.raster = QgsMapLayerComboBox()
        self.raster.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.raster.setAllowEmptyLayer(True)
        self.raster.setLayer(None)
        self.raster.setToolTip(TIPS["raster"])
        form.addRow("Raster", self.raster)
        form.addRow("Model", self._model_choice())
        self.device = QComboBox()
        self.device.setToolTip(TIPS["device"])
        self.fill_devices(None)
        self.device.currentIndexChanged.connect(self._device_chosen)
        form.addRow("Device", self.device)
        form.addRow("Next patch by", self._acquisition_choice())
        form.addRow("Mode", self._mode_row())
        form.addRow("Show", self._view_row())
        for combo in (self.raster, self.model, self.device, self.acquisition):  # long names: elided
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(COMBO_CHARACTERS)
        for combo in (self.model, self.acquisition):  # their open lists as wide as their names
            combo.view().setMinimumWidth(combo.view().sizeHintForColumn(0) + 8)
        self.start_button = QPushButton("Predict (start a session)")
        self.start_button.setToolTip(TIPS["start"])
        form.addRow(self.start_button)

    # ------------------------------------------------------------------ building

    def _model_choice(self) -> QComboBox:
        """The bundled models by name, another bundle's folder, or a new model for the analyst's
        own classes (SIAL)."""
        self.model = QComboBox()
        self.model.setToolTip(TIPS["model"])
        for model in bundled_models():
            self.model.addItem(model.name, str(model.directory))
            self.model.setItemData(self.model.count() - 1, model.description, TOOLTIP)
        self.model.addItem(OTHER_MODEL, "")
        self.model.setItemData(
            self.model.count() - 1, "A model bundle's folder (with its model.json).", TOOLTIP
        )
        self.model.addItem(NEW_MODEL, NEW_MODEL_DATA)
        self.model.setItemData(
            self.model.count() - 1,
            "An untrained network for your own classes: it learns from your clicks alone, "
            "one Retrain round after another (SIAL).",
            TOOLTIP,
        )
        self.model.activated.connect(self._model_chosen)
        self.model.currentIndexChanged.connect(lambda: self.offer_confidnet())
        return self.model

    def _acquisition_choice(self) -> QComboBox:
        self.acquisition = QComboBox()
        self.acquisition.setToolTip(TIPS["acquisition"])
        for key, info in ACQUISITIONS.items():
            self.acquisition.addItem(info.label, key)
            self.acquisition.setItemData(self.acquisition.count() - 1, info.tooltip, TOOLTIP)
        self.acquisition.currentIndexChanged.connect(self._acquisition_chosen)
        self.offer_confidnet()
        return self.acquisition

    def _mode_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.mode_ac = QRadioButton("AC")
        self.mode_ac.setToolTip("Clicks enter the model as input channels; only the tiles near them change.")
        self.mode_disca = QRadioButton("AC + DISCA")
        self.mode_disca.setToolTip("Also retrain the model on the clicks (Retrain): corrections spread.")
        self.mode_ac.setChecked(True)
        modes = QButtonGroup(self)
        for button in (self.mode_ac, self.mode_disca):
            modes.addButton(button)
            row.addWidget(button)
        return row

    def _view_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.view_buttons: dict[str, QRadioButton] = {}
        views = QButtonGroup(self)
        for key, text, tip in VIEWS:
            button = QRadioButton(text)
            button.setToolTip(tip)
            views.addButton(button)
            row.addWidget(button)
            self.view_buttons[key] = button
        self.view_buttons["classes"].setChecked(True)
        return row

    def _device_chosen(self) -> None:
        self.controller.device = self.device.currentData()
        self.controller.remember_state()

    def fill_devices(self, gpu: str | None) -> None:
        """The device entries, naming the GPU once the engine has looked (``None``: not yet)."""
        current = self.device.currentData() or "auto"
        self.device.blockSignals(True)
        self.device.clear()
        if gpu is None:
            auto, cuda = "Automatic (looking for a GPU…)", "CUDA"
        else:
            auto = "Automatic" + (f" ({gpu})" if gpu else " (CPU: no GPU found)")
            cuda = f"CUDA ({gpu})" if gpu else "CUDA (no GPU found)"
        for text, data in ((auto, "auto"), ("CPU", "cpu"), (cuda, "cuda")):
            self.device.addItem(text, data)
        self.device.setCurrentIndex(max(self.device.findData(current), 0))
        self.device.blockSignals(False)

    # ------------------------------------------------------------------ the model

    def selected_model(self) -> str:
        return self.model.currentData() or (str(self.other_model) if self.other_model else "")

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
            self.choose_other_model(Path(folder))

    def choose_other_model(self, folder: Path) -> None:
        self.other_model = folder
        index = self.model.findData("")
        self.model.setCurrentIndex(index)
        self.model.setItemText(index, f"{folder.name} (other bundle)")
        self.offer_confidnet()

    def choose_new_model(self, class_names: str) -> None:
        """Select an untrained model for ``class_names`` (what the class dialog asks for)."""
        self.new_model_classes = class_names.strip()
        index = self.model.findData(NEW_MODEL_DATA)
        self.model.setCurrentIndex(index)
        self.model.setItemText(index, f"New model: {self.new_model_classes} (SIAL)")

    def offer_confidnet(self) -> None:
        """ConfidNet only for a model with a ConfidNet head: greyed out, with the reason, else."""
        selected = self.model.currentData()
        has_head = bool(selected != NEW_MODEL_DATA and card_of(self.selected_model()).get("confidnet"))
        item = self.acquisition.model().item(self.acquisition.findData("confidnet"))
        item.setEnabled(has_head)
        item.setToolTip(ACQUISITIONS["confidnet"].tooltip if has_head else NO_CONFIDNET)
        if not has_head and self.acquisition.currentData() == "confidnet":
            self.acquisition.setCurrentIndex(self.acquisition.findData("entropy"))

    def _acquisition_chosen(self) -> None:
        key = self.acquisition.currentData()
        if not self.controller.set_acquisition(key):  # refused (no head): back to what is in use
            self.acquisition.blockSignals(True)
            self.acquisition.setCurrentIndex(self.acquisition.findData(self.controller.acquisition))
            self.acquisition.blockSignals(False)

    # ------------------------------------------------------------------ a session comes into use

    def show_session(self) -> None:
        """The form as the session in use was made and left: raster, model, device, function,
        mode and map."""
        controller = self.controller
        session = controller.session
        if session is None:
            return
        widgets = (self.raster, self.model, self.device, self.acquisition, self.mode_ac, self.mode_disca)
        for widget in widgets:
            widget.blockSignals(True)
        if controller.raster_layer is not None:
            self.raster.setLayer(controller.raster_layer)
        model = Path(session.model_dir).resolve()
        index = next((i for i in range(self.model.count()) if self._is_model(i, model)), -1)
        if index >= 0:
            self.model.setCurrentIndex(index)
        elif controller.is_sial:
            self.choose_new_model(", ".join(f"{c.name}:{c.color}" for c in session.bundle.card.classes))
        else:
            self.choose_other_model(model)
        self.device.setCurrentIndex(max(self.device.findData(controller.device), 0))
        (self.mode_disca if controller.mode == "disca" else self.mode_ac).setChecked(True)
        for widget in widgets:
            widget.blockSignals(False)
        self.offer_confidnet()
        self.acquisition.blockSignals(True)
        self.acquisition.setCurrentIndex(max(self.acquisition.findData(controller.acquisition), 0))
        self.acquisition.blockSignals(False)
        self.view_buttons[controller.view].setChecked(True)

    def _is_model(self, index: int, model: Path) -> bool:
        data = self.model.itemData(index)
        return bool(data) and data != NEW_MODEL_DATA and Path(data).resolve() == model
