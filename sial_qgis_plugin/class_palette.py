"""The dock's class palette: one button per class of the session's model, in the model's colour,
with its key (1–9) and how many clicks it has, so the analyst sees which class the next click
gets and which classes still lack corrections."""

from __future__ import annotations

from collections.abc import Sequence

from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import QButtonGroup, QGridLayout, QToolButton, QWidget

from .layers import ClassStyle

COLUMNS = 2


def swatch(color: str, size: int = 14) -> QIcon:
    """A square of ``color``, the class's colour in the class map."""
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(color))
    return QIcon(pixmap)


class ClassPalette(QgsCollapsibleGroupBox):
    """Emits ``picked(index)`` when the analyst presses a class's button."""

    picked = pyqtSignal(int)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Classes (keys 1–9)", parent)
        self.grid = QGridLayout(self)
        self.group = QButtonGroup(self)
        self.group.setExclusive(True)
        self.group.idClicked.connect(self.picked.emit)
        self.buttons: list[QToolButton] = []

    def show_classes(self, classes: Sequence[ClassStyle], counts: dict[int, int], current: int) -> None:
        """One button per class (rebuilt only when the classes change), with its click count."""
        if [b.property("class_index") for b in self.buttons] != [c.index for c in classes]:
            self._rebuild(classes)
        for c, button in zip(classes, self.buttons, strict=True):
            key = f"{c.index + 1} " if c.index < 9 else ""
            count = counts.get(c.index, 0)
            button.setText(f"{key}{c.name} ({count})")
            shortcut = f" (key {c.index + 1})" if c.index < 9 else ""
            button.setToolTip(f"The next clicks are '{c.name}'{shortcut}; it has {count} clicks so far.")
        self.select(current)

    def select(self, index: int) -> None:
        """Show ``index`` as the current class (a key or the click tool chose it)."""
        if index < len(self.buttons):
            self.buttons[index].setChecked(True)

    def _rebuild(self, classes: Sequence[ClassStyle]) -> None:
        for button in self.buttons:  # out of sight now: deleteLater waits for the event loop
            self.group.removeButton(button)
            self.grid.removeWidget(button)
            button.hide()
            button.deleteLater()
        self.buttons = []
        for c in classes:
            button = QToolButton()
            button.setCheckable(True)
            button.setIcon(swatch(c.color))
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            button.setProperty("class_index", c.index)
            self.group.addButton(button, c.index)
            self.grid.addWidget(button, c.index // COLUMNS, c.index % COLUMNS)
            self.buttons.append(button)
