"""The dock's *Advanced* panel: the retraining settings and the reference labels.

Kept out of the way (collapsed) because the defaults are the measured ones. Every change goes to
the controller at once and applies to the rounds still to come:

- DISCA (λ, steps, learning rate, click loss) refines a bundled model on the clicks;
- SIAL (steps, superpixels, class-prior correction) trains a new model on the clicks alone,
  and a reopened SIAL session shows the settings it trains with;
- a reference raster on the same grid makes every full update record its mIoU in the history.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsCollapsibleGroupBox, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget


class AdvancedPanel(QgsCollapsibleGroupBox):
    """The settings of the rounds to come, bound to ``controller`` (a SessionController)."""

    def __init__(self, controller: Any, parent: QWidget | None = None):
        super().__init__("Advanced", parent)
        self.controller = controller
        self.setCollapsed(True)
        form = QFormLayout(self)
        self._disca_rows(form)
        self._sial_rows(form)
        self.reference = QgsMapLayerComboBox()
        self.reference.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.reference.setAllowEmptyLayer(True)
        self.reference.setLayer(None)
        self.reference.setToolTip("Reference labels on the same grid: mIoU is recorded after every update.")
        self.reference.layerChanged.connect(lambda layer: setattr(self.controller, "reference", layer))
        form.addRow("Reference labels", self.reference)

    def _disca_rows(self, form: QFormLayout) -> None:
        settings = self.controller.settings
        self.anchor = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=100.0, singleStep=0.5)
        self.anchor.setValue(settings.anchor_weight)
        self.anchor.setToolTip("λ: weight of the L1 pull towards the initial prediction (DIAL: 1).")
        form.addRow("Anchor weight (λ)", self.anchor)
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
            widget.valueChanged.connect(self.apply_disca_settings)
        self.click_loss.currentIndexChanged.connect(self.apply_disca_settings)

    def _sial_rows(self, form: QFormLayout) -> None:
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
        self.show_sial_settings()
        self.sial_steps.valueChanged.connect(self._apply_sial_settings)
        for check in (self.sial_superpixels, self.sial_prior):
            check.toggled.connect(self._apply_sial_settings)

    def apply_disca_settings(self) -> None:
        """The DISCA widgets' values into the controller (the next round uses them)."""
        self.controller.settings = replace(
            self.controller.settings,
            anchor_weight=self.anchor.value(),
            steps=self.steps.value(),
            learning_rate=self.learning_rate.value(),
            click_loss=self.click_loss.currentData(),
        )

    def _apply_sial_settings(self) -> None:
        self.controller.set_sial_options(
            self.sial_steps.value(), self.sial_superpixels.isChecked(), self.sial_prior.isChecked()
        )

    def show_sial_settings(self) -> None:
        """The controller's SIAL settings in the widgets (those of a reopened session, say)."""
        settings = self.controller.sial_settings
        widgets = (self.sial_steps, self.sial_superpixels, self.sial_prior)
        for widget in widgets:
            widget.blockSignals(True)
        self.sial_steps.setValue(settings.training.steps)
        self.sial_superpixels.setChecked(settings.expansion is not None)
        self.sial_prior.setChecked(settings.training.adjust_prior)
        for widget in widgets:
            widget.blockSignals(False)

    def refresh(self) -> None:
        """DISCA's settings are off for a SIAL session, which trains with its own."""
        for widget in (self.anchor, self.steps, self.learning_rate, self.click_loss):
            widget.setEnabled(not self.controller.is_sial)
        self.show_sial_settings()
