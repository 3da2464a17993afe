"""The dock's *Advanced* panel: the retraining settings and the reference labels.

Kept out of the way (collapsed) because the defaults are the measured ones. Every change goes to
the controller at once and applies to the rounds still to come:

- DISCA (λ, steps, learning rate, click loss) refines a bundled model on the clicks, and a
  reopened DISCA session shows the settings its last round trained with;
- SIAL (steps, superpixels, class-prior correction) trains a new model on the clicks alone,
  and a reopened SIAL session shows the settings it trains with;
- a reference raster on the same grid makes every full update record its mIoU in the history.

The settings' defaults come from the engine, which loads in the background: the panel is filled
when it is there (:meth:`populate`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsCollapsibleGroupBox, QgsMapLayerComboBox
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QSpinBox, QWidget

DISCA_OFF = "A session with a new model trains with its SIAL settings below, not with DISCA's."


class AdvancedPanel(QgsCollapsibleGroupBox):
    """The settings of the rounds to come, bound to ``controller`` (a SessionController)."""

    def __init__(self, controller: Any, parent: QWidget | None = None):
        super().__init__("Advanced", parent)
        self.controller = controller
        self.populated = False
        self.setCollapsed(True)
        form = QFormLayout(self)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # a narrow dock: fields below
        self._disca_rows(form)
        self._sial_rows(form)
        self.reference = QgsMapLayerComboBox()
        self.reference.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
        self.reference.setAllowEmptyLayer(True)
        self.reference.setLayer(None)
        self.reference.setToolTip("Reference labels on the same grid: mIoU is recorded after every update.")
        self.reference.layerChanged.connect(self._reference_chosen)
        form.addRow("Reference labels", self.reference)
        self.pixel_size = QDoubleSpinBox(decimals=3, minimum=0.0, maximum=10_000.0, singleStep=0.1)
        self.pixel_size.setSpecialValueText("from the CRS")  # 0: the raster's CRS says it
        self.pixel_size.setSuffix(" m")
        self.pixel_size.setToolTip(
            "The pixel size of a raster without a CRS (a drone JPEG, a scan), for new sessions: "
            "a model trained at another ground sampling distance then reads it resampled to its "
            "own, and the maps are written back on the raster's grid."
        )
        self.pixel_size.valueChanged.connect(self._pixel_size_chosen)
        form.addRow("Pixel size", self.pixel_size)
        if controller.engine_loaded:
            self.populate()

    def _disca_rows(self, form: QFormLayout) -> None:
        self.anchor = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=100.0, singleStep=0.5)
        self.anchor.setToolTip(
            "λ: how strongly the rest of the map is held to the first prediction while the model "
            "learns the clicks (DIAL: 1; measured best here: 3)."
        )
        form.addRow("Anchor weight (λ)", self.anchor)
        self.steps = QSpinBox(minimum=0, maximum=500)
        self.steps.setSpecialValueText("auto")  # 0: the engine's choice, by the round's new clicks
        self.steps.setToolTip(
            "Training steps per Retrain round (each on 8 crops around the clicks, 128 px after five new "
            "clicks or more, else 256). "
            "auto: 5 after five new clicks or more (no tested image ended below its start), 10 after "
            "fewer (best when retraining after every click), at most two a click on the first clicks."
        )
        form.addRow("Steps per round", self.steps)
        self.learning_rate = QDoubleSpinBox(decimals=6, minimum=1e-6, maximum=1.0, singleStep=1e-4)
        self.learning_rate.setToolTip(
            "The optimiser's step size (SGD with momentum 0.9); larger learns faster and forgets more."
        )
        form.addRow("Learning rate", self.learning_rate)
        self.weight_average = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=0.95, singleStep=0.1)
        self.weight_average.setToolTip(
            "β: the map comes from the rounds' weights averaged (β × the previous average + (1 − β) "
            "× the new round's), so one round's swing on a few clicks moves it less; training "
            "carries on from each round's own weights. 0: each round's own weights."
        )
        form.addRow("Rounds' weight average (β)", self.weight_average)
        self.click_loss = QComboBox()
        self.click_loss.addItem("Cross-entropy (DIAL)", "ce")
        self.click_loss.addItem("Error-weighted Dice (SIAL)", "ewdl")
        self.click_loss.setToolTip(
            "The loss at the clicked pixels: cross-entropy, or SIAL's Dice loss weighted towards the "
            "model's errors."
        )
        form.addRow("Click loss", self.click_loss)
        self.class_balance = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, singleStep=0.25)
        self.class_balance.setToolTip(
            "How much a class clicked less often counts: 0 averages over the clicks (DIAL: seven "
            "clicks of one class out of ten push that class everywhere), 1 weighs every clicked "
            "class the same; measured best across images: 0.5."
        )
        form.addRow("Class balance", self.class_balance)
        self.spread = QCheckBox("Spread each click over its superpixel")
        self.spread.setToolTip(
            "A round also learns the click's class on the click's SLIC superpixel (about 150 pixels "
            "of like colour around it): more to learn from per click."
        )
        form.addRow(self.spread)
        self.hold_classes = QCheckBox("Keep classes nobody clicked off the map")
        self.hold_classes.setToolTip(
            "After a round, a class that no click names and that the map before it did not show "
            "(or showed on under 0.1 % of it) "
            "stays off the map (rounds otherwise scatter a few pixels of it far from any click). "
            "One click of the class lets it back."
        )
        form.addRow(self.hold_classes)
        for widget in (self.anchor, self.steps, self.learning_rate, self.weight_average, self.class_balance):
            widget.valueChanged.connect(self.apply_disca_settings)
        self.click_loss.currentIndexChanged.connect(self.apply_disca_settings)
        self.spread.toggled.connect(self.apply_disca_settings)
        self.hold_classes.toggled.connect(self.apply_disca_settings)

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
        self.sial_steps.valueChanged.connect(self._apply_sial_settings)
        for check in (self.sial_superpixels, self.sial_prior):
            check.toggled.connect(self._apply_sial_settings)

    def _pixel_size_chosen(self, value: float) -> None:
        self.controller.pixel_size = value or None

    def _reference_chosen(self, layer: Any) -> None:
        self.controller.reference = layer
        self.controller.remember_state()

    def populate(self) -> None:
        """The controller's settings in the widgets, once the engine is loaded."""
        self.populated = True
        self.show_disca_settings()
        self.show_sial_settings()

    def apply_disca_settings(self) -> None:
        """The DISCA widgets' values into the controller (the next round uses them)."""
        if not self.populated:
            return
        self.controller.settings = replace(
            self.controller.settings,
            anchor_weight=self.anchor.value(),
            steps=self.steps.value() or None,
            learning_rate=self.learning_rate.value(),
            weight_average=self.weight_average.value(),
            click_loss=self.click_loss.currentData(),
            class_balance=self.class_balance.value(),
            spread=self.spread.isChecked(),
            hold_classes=self.hold_classes.isChecked(),
        )

    def _disca_widgets(self) -> tuple[Any, ...]:
        return (
            self.anchor, self.steps, self.learning_rate, self.weight_average, self.click_loss,
            self.class_balance, self.spread, self.hold_classes,
        )  # fmt: skip

    def _apply_sial_settings(self) -> None:
        if self.populated:
            self.controller.set_sial_options(
                self.sial_steps.value(), self.sial_superpixels.isChecked(), self.sial_prior.isChecked()
            )

    def show_disca_settings(self) -> None:
        settings = self.controller.settings
        widgets = self._disca_widgets()
        for widget in widgets:
            widget.blockSignals(True)
        self.spread.setChecked(settings.spread)
        self.hold_classes.setChecked(settings.hold_classes)
        self.class_balance.setValue(float(settings.class_balance))
        self.anchor.setValue(settings.anchor_weight)
        self.steps.setValue(settings.steps or 0)
        self.learning_rate.setValue(settings.learning_rate)
        self.weight_average.setValue(settings.weight_average)
        self.click_loss.setCurrentIndex(max(self.click_loss.findData(settings.click_loss), 0))
        for widget in widgets:
            widget.blockSignals(False)

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

    def show_session(self) -> None:
        """A session came into use: its settings and its reference labels."""
        self.populate()
        self.reference.blockSignals(True)
        self.reference.setLayer(self.controller.reference)
        self.reference.blockSignals(False)

    def refresh(self) -> None:
        """DISCA's settings are off for a SIAL session, which trains with its own."""
        for widget in self._disca_widgets():
            tip = widget.toolTip().split("\nOff now:")[0]
            widget.setEnabled(not self.controller.is_sial)
            widget.setToolTip(tip if not self.controller.is_sial else f"{tip}\nOff now: {DISCA_OFF}")
        if self.populated:
            self.show_sial_settings()
