"""The dock's *Sessions* list: every session the analyst can go back to, the one in use in bold.

Double-click or *Open* reopens one (its layers, its settings in the dock); *Rename…* names it
(the name is stored in the session and is its layer group's name); *Delete…* removes its own
files after a confirmation that lists them (never another process's open session, never a file
the session did not write).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QFont
from qgis.PyQt.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QInputDialog,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QWidget,
)

PATH_ROLE = Qt.ItemDataRole.UserRole
LIST_HEIGHT = 104  # about four sessions; the list scrolls beyond


def describe(summary: Any) -> str:
    """A session's tooltip: what it is made of and how far it got."""
    try:
        created = datetime.datetime.fromisoformat(summary.created).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        created = summary.created
    kind = "a network learnt from clicks (SIAL)" if summary.kind == "sial" else "AC / DISCA"
    return (
        f"{summary.label}\nraster: {summary.raster.name}\nmodel: {summary.model.name} ({kind})\n"
        f"{summary.clicks} clicks, {summary.rounds} retraining rounds, started {created}\n{summary.path}"
    )


class SessionsBox(QgsCollapsibleGroupBox):
    """Bound to ``controller``; refreshed when its sessions change."""

    def __init__(self, controller: Any, parent: QWidget | None = None):
        super().__init__("Sessions", parent)
        self.controller = controller
        grid = QGridLayout(self)
        self.list = QListWidget()
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setToolTip(
            "Your sessions, newest first; the one in use is in bold. Double-click to reopen one."
        )
        self.list.setMaximumHeight(LIST_HEIGHT)
        self.list.itemDoubleClicked.connect(lambda item: self.open_selected())
        self.list.currentItemChanged.connect(lambda *_: self.refresh_buttons())
        grid.addWidget(self.list, 0, 0, 1, 3)
        self.open_button = QPushButton("Open")
        self.open_button.clicked.connect(self.open_selected)
        self.rename_button = QPushButton("Rename…")
        self.rename_button.clicked.connect(self._rename_clicked)
        self.delete_button = QPushButton("Delete…")
        self.delete_button.clicked.connect(self._delete_clicked)
        for column, button in enumerate((self.open_button, self.rename_button, self.delete_button)):
            grid.addWidget(button, 1, column)
        controller.sessions_changed.connect(self.refresh)
        controller.busy_changed.connect(lambda *_: self.refresh_buttons())
        self.refresh()

    def selected(self) -> Path | None:
        item = self.list.currentItem()
        return Path(item.data(PATH_ROLE)) if item is not None else None

    def refresh(self) -> None:
        """The list as the sessions now are (the selection kept where it can be)."""
        chosen = self.selected()
        self.list.clear()
        for summary in self.controller.sessions():
            item = QListWidgetItem(summary.label)
            item.setData(PATH_ROLE, str(summary.path))
            item.setToolTip(describe(summary))
            if self.controller.is_current(summary.path):
                font = QFont(item.font())
                font.setBold(True)
                item.setFont(font)
            self.list.addItem(item)
            if chosen is not None and Path(summary.path) == chosen:
                self.list.setCurrentItem(item)
        self.refresh_buttons()

    def refresh_buttons(self) -> None:
        """Each button on or off, saying why when off."""
        path, busy = self.selected(), self.controller.busy
        why = (
            "Choose a session in the list first."
            if path is None
            else "Wait for the running task, or cancel it."
        )
        current = path is not None and self.controller.is_current(path)
        usable = path is not None and not busy
        states = (
            (self.open_button, "Reopen the session: its layers, its clicks and its settings in the dock.",
             "This is the session in use." if current else why, usable and not current),
            (self.rename_button, "Give the session a name of your own (its layer group follows).", why,
             usable),
            (self.delete_button, "Delete the session's own files, after a confirmation that lists them.", why,
             usable),
        )  # fmt: skip
        for button, tip, reason, enabled in states:
            button.setEnabled(enabled)
            button.setToolTip(tip if enabled else f"{tip}\nOff now: {reason}")

    def open_selected(self) -> None:
        if (path := self.selected()) is not None and not self.controller.is_current(path):
            self.controller.open_session(path, self.controller.device)

    def _rename_clicked(self) -> None:
        if (path := self.selected()) is None:
            return
        text, ok = QInputDialog.getText(
            self, "Rename the session", "Name:", QLineEdit.EchoMode.Normal, self.controller.label_of(path)
        )
        if ok:
            self.controller.rename_session(path, text)

    def _delete_clicked(self) -> None:
        if (path := self.selected()) is None:
            return
        lines = "\n".join(f"• {line}" for line in self.controller.deletion_preview(path))
        text = (
            f"Delete the session '{self.controller.label_of(path)}'?\n\n"
            f"This removes its own files:\n{lines}\n\n"
            "Files of yours in those folders are kept. This cannot be undone."
        )
        if self.confirm(text):
            self.controller.delete_session(path)

    def confirm(self, text: str) -> bool:
        """Ask before deleting (a modal question; scripts may replace it)."""
        buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel
        answer = QMessageBox.question(
            self, "Delete the session", text, buttons, QMessageBox.StandardButton.Cancel
        )
        return answer == QMessageBox.StandardButton.Yes
