"""The dock panel: the analyst's whole loop in one place. UI only; the controller does the work.

From top to bottom: what to start (setup_form.py: raster, model, device, acquisition, mode,
which map to show), the sessions to go back to (session_list.py), the class palette, the loop's
buttons, the *Advanced* settings, the history of rounds and the running task's progress. The
palette, the *Advanced* panel and the export menu are widgets of their own (class_palette.py,
advanced_panel.py, export_menu.py).

Every control has a tooltip, and one that is off says why in it. The dock loads the engine (in
the background) the first time it is shown; *Predict* comes alive when the engine is there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtGui import QKeySequence
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .advanced_panel import AdvancedPanel
from .class_palette import ClassPalette
from .compat import QShortcut
from .export_menu import ExportButton
from .session_list import SessionsBox
from .setup_form import LOADING, NEW_MODEL_DATA, TIPS, SetupForm

NO_SESSION = "Start a session first (Predict), or reopen one from the Sessions list."
BUSY = "Wait for the running task to finish, or cancel it."
AC_ONLY = "Retraining is off in AC mode: choose AC + DISCA, and the clicks also retrain the model."
HISTORY_COLUMNS = (
    ("#", "The model version: 0 is the model the session started from, then one per retraining round."),
    ("step", "start, or retrain (one DISCA round, or one SIAL round for a new model)."),
    ("clicks", "How many clicks the step learnt from."),
    ("s", "The round's training time, in seconds."),
    ("mIoU", "The map's mean IoU (%) against the reference labels chosen under Advanced, after the step."),
)
LOOP_TIPS = {
    "tool": "Left click: add a point of the current class. Right click: remove the nearest. "
    "Keys 1–9 pick the class.",
    "undo": "Undo the last click, removal or retraining round (Ctrl+Z; the last 10 rounds can be undone).",
    "previous": "Back to the patch visited before this one, which is marked to do again.",
    "next": "Mark this patch done and zoom to the most uncertain patch not visited yet.",
    "retrain": "Retrain the model on all the clicks so far, then redraw the visible extent, then the "
    "whole map.",
    "export": "Export the class map, class polygons, the adapted model or the clicks.",
    "cancel": "Stop the running task: the maps and the model stay as they were before it.",
}


def explain(widget: QWidget, enabled: bool, tip: str, why: str) -> None:
    """On or off; an off control's tooltip says why."""
    widget.setEnabled(enabled)
    widget.setToolTip(tip if enabled else f"{tip}\nOff now: {why}")


class SegmentationDock(QgsDockWidget):
    """Built once by the plugin; follows the controller's signals to show the session's state."""

    def __init__(self, controller: Any, map_tool: Any, parent: QWidget | None = None):
        super().__init__("Interactive segmentation", parent)
        self.setObjectName("SialSegmentationDock")
        self.controller, self.map_tool = controller, map_tool
        body = QWidget()
        layout = QVBoxLayout(body)
        self.form = SetupForm(controller)
        form = self.form  # its widgets by their old names, for scripts and tests
        self.raster, self.model, self.device, self.acquisition = (
            form.raster,
            form.model,
            form.device,
            form.acquisition,
        )
        self.mode_ac, self.mode_disca, self.view_buttons = form.mode_ac, form.mode_disca, form.view_buttons
        self.start_button = form.start_button
        layout.addWidget(form)
        self.sessions_box = SessionsBox(controller)
        layout.addWidget(self.sessions_box)
        self.palette = ClassPalette()
        self.palette.picked.connect(self._pick_class)
        layout.addWidget(self.palette)
        layout.addLayout(self._loop_buttons())
        self.advanced_box = AdvancedPanel(controller)
        layout.addWidget(self.advanced_box)
        panel = self.advanced_box
        self.anchor, self.steps, self.learning_rate = panel.anchor, panel.steps, panel.learning_rate
        self.sial_steps, self.sial_superpixels = panel.sial_steps, panel.sial_superpixels
        self.click_loss, self.sial_prior, self.reference = panel.click_loss, panel.sial_prior, panel.reference
        self.disca_spread, self.class_balance = panel.spread, panel.class_balance
        self.hold_classes, self.weight_average = panel.hold_classes, panel.weight_average
        layout.addWidget(QLabel("History"))
        layout.addWidget(self._history_table())
        layout.addLayout(self._progress_row())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch()
        scroll = QScrollArea()  # a small screen scrolls the dock up and down rather than squeezing it
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(body)
        self.scroll, self.body = scroll, body
        self.setWidget(scroll)
        self._connect(body)
        self.refresh()

    def _connect(self, body: QWidget) -> None:
        controller = self.controller
        controller.changed.connect(self.refresh)
        controller.busy_changed.connect(self._busy)
        controller.progress.connect(self._progress)
        controller.message.connect(self._message)
        controller.engine_ready.connect(self._engine_ready)
        controller.session_opened.connect(self._session_opened)
        self.map_tool.class_chosen.connect(self.palette.select)
        self.start_button.clicked.connect(self.start)
        self.mode_ac.toggled.connect(self._mode_changed)
        for key, button in self.view_buttons.items():
            button.toggled.connect(lambda on, k=key: on and self._show(k))
        for index in range(9):
            context = Qt.ShortcutContext.WidgetWithChildrenShortcut
            shortcut = QShortcut(QKeySequence(str(index + 1)), body, context=context)
            shortcut.activated.connect(lambda i=index: self._pick_class(i))
        self.visibilityChanged.connect(lambda visible: visible and controller.load_engine())
        for box in (self.sessions_box, self.palette, self.advanced_box):  # opened or folded
            box.collapsedStateChanged.connect(lambda *_: QTimer.singleShot(0, self._fit_width))
        self.visibilityChanged.connect(lambda visible: visible and QTimer.singleShot(0, self._fit_width))

    @property
    def class_buttons(self) -> list[QToolButton]:
        return self.palette.buttons

    @property
    def other_model(self) -> Path | None:
        return self.form.other_model

    @property
    def new_model_classes(self) -> str:
        return self.form.new_model_classes

    # ------------------------------------------------------------------ building

    def _loop_buttons(self) -> QGridLayout:
        grid = QGridLayout()
        self.tool_button = QPushButton("Click tool")
        self.tool_button.setCheckable(True)
        self.tool_button.toggled.connect(self._toggle_tool)
        self.previous_button = QPushButton("◀ Previous patch")
        self.previous_button.clicked.connect(self.controller.previous_patch)
        self.next_button = QPushButton("Next patch ▶")
        self.next_button.clicked.connect(self.controller.next_patch)
        self.retrain_button = QPushButton("Retrain (DISCA)")
        self.retrain_button.clicked.connect(self.controller.retrain)
        self.undo_button = QPushButton("Undo")
        self.undo_button.setShortcut(QKeySequence(QKeySequence.StandardKey.Undo))
        self.undo_button.clicked.connect(self.controller.undo)
        self.export_button = ExportButton(self.controller, self.controller.say)
        buttons = (self.tool_button, self.undo_button, self.previous_button, self.next_button)
        for i, button in enumerate((*buttons, self.retrain_button, self.export_button)):
            grid.addWidget(button, i // 2, i % 2)
        return grid

    def _history_table(self) -> QTableWidget:
        self.history = QTableWidget(0, len(HISTORY_COLUMNS))
        for column, (title, tip) in enumerate(HISTORY_COLUMNS):
            item = QTableWidgetItem(title)
            item.setToolTip(tip)
            self.history.setHorizontalHeaderItem(column, item)
        self.history.setToolTip("The session's steps: where it started, and each retraining round.")
        self.history.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.history.verticalHeader().setVisible(False)
        self.history.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.history.horizontalHeader().setStretchLastSection(True)
        return self.history

    def _progress_row(self) -> QHBoxLayout:
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setToolTip("The running task's progress (QGIS's task bar shows it too).")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.controller.cancel)
        row.addWidget(self.progress)
        row.addWidget(self.cancel_button)
        return row

    # ------------------------------------------------------------------ actions

    def selected_model(self) -> str:
        return self.form.selected_model()

    def choose_new_model(self, class_names: str) -> None:
        self.form.choose_new_model(class_names)

    def start(self) -> None:
        """*Predict (start a session)*: a new session with what the form says."""
        controller = self.controller
        controller.mode = "disca" if self.mode_disca.isChecked() else "ac"
        self.advanced_box.apply_disca_settings()
        layer, device = self.raster.currentLayer(), self.device.currentData()
        controller.device = device
        if self.model.currentData() == NEW_MODEL_DATA:
            controller.start_from_clicks(layer, self.form.new_model_classes, device)
        else:
            controller.start(layer, self.selected_model(), device)

    def _mode_changed(self) -> None:
        self.controller.mode = "disca" if self.mode_disca.isChecked() else "ac"
        self.controller.remember_state()
        self.refresh()

    def _show(self, view: str) -> None:
        self.controller.view = view
        self.controller.remember_state()
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
        has_session, busy = controller.session is not None, controller.busy
        for key, button in (("tool", self.tool_button), ("previous", self.previous_button),
                            ("next", self.next_button)):  # fmt: skip
            explain(button, has_session, LOOP_TIPS[key], NO_SESSION)
        explain(
            self.undo_button, has_session and not busy, LOOP_TIPS["undo"], BUSY if has_session else NO_SESSION
        )
        explain(
            self.export_button,
            has_session and not busy,
            LOOP_TIPS["export"],
            BUSY if has_session else NO_SESSION,
        )
        why = NO_SESSION if not has_session else AC_ONLY if not controller.can_retrain else BUSY
        explain(self.retrain_button, controller.can_retrain and not busy, LOOP_TIPS["retrain"], why)
        self.retrain_button.setText("Retrain (SIAL)" if controller.is_sial else "Retrain (DISCA)")
        explain(self.cancel_button, busy, LOOP_TIPS["cancel"], "Nothing is running.")
        loading = not controller.engine_loaded
        explain(self.start_button, not busy and not loading, TIPS["start"], LOADING if loading else BUSY)
        self.advanced_box.refresh()
        self.sessions_box.refresh_buttons()
        self.palette.show_classes(controller.classes, controller.click_counts(), controller.current_class)
        rows = controller.history()
        self.history.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = [row["iteration"], row["kind"], row["clicks"],
                      "" if row["seconds"] is None else f"{row['seconds']:.1f}",
                      "" if row["miou"] is None else f"{row['miou']:.1f}"]  # fmt: skip
            for c, value in enumerate(values):
                self.history.setItem(r, c, QTableWidgetItem(str(value)))
        self._fit_width()

    def _fit_width(self) -> None:
        """At least as wide as the controls need: never cut off on the right (a scroll area alone
        would let QGIS make the dock narrower than its buttons)."""
        scrollbar = self.scroll.verticalScrollBar().sizeHint().width()
        self.scroll.setMinimumWidth(self.body.minimumSizeHint().width() + scrollbar)

    def _busy(self, busy: bool, what: str) -> None:
        self.status.setText(what + "…" if busy else "")
        self.progress.setValue(0 if busy else 100 if self.controller.session else 0)
        self.refresh()

    def _progress(self, value: int, text: str) -> None:
        self.progress.setValue(value)
        self.status.setText(text)

    def _message(self, text: str, level: Any) -> None:
        """The controller's sentences go to the status line (the plugin puts them in QGIS's
        message bar, once each)."""
        self.status.setText(text)

    def _engine_ready(self, ok: bool) -> None:
        self.form.fill_devices(self.controller.gpu if ok else "")
        if ok:
            self.advanced_box.populate()
        self.refresh()

    def _session_opened(self) -> None:
        self.form.show_session()
        self.advanced_box.show_session()
        self.sessions_box.refresh()
        self.refresh()
