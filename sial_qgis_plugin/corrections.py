"""The analyst's correction clicks: add, remove the nearest, undo (part of the session controller).

Each change is stored in the session at once, on the GUI thread, and then asks for a map update,
which recomputes only the tiles the click touches (after the running task, if there is one).
"""

from __future__ import annotations

from typing import Any

from qgis.core import Qgis, QgsCoordinateReferenceSystem, QgsPointXY

from .geometry import crs_transform, to_raster_crs


class Corrections:
    """Mixed into :class:`~.controller.SessionController`, which provides ``session``,
    ``layers``, ``project``, ``current_class``, ``classes``, ``busy``, ``changed``, ``_say``
    and ``predict``."""

    session: Any
    current_class: int

    def click_counts(self) -> dict[int, int]:
        """How many clicks each class has (the palette shows them)."""
        counts = {c.index: 0 for c in self.classes}
        for click in self.session.clicks() if self.session else []:
            counts[click.class_id] = counts.get(click.class_id, 0) + 1
        return counts

    def add_click(self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem) -> bool:
        """A click of the current class at ``point`` (in ``crs``, the canvas's)."""
        from backend.errors import UserError

        if self.session is None:
            self._say("Start a session first.", Qgis.MessageLevel.Warning)
            return False
        where = to_raster_crs(QgsPointXY(point), self.session.info, crs, self.project)
        try:
            self.session.add_click_at(where.x(), where.y(), self.current_class)
        except UserError as exc:
            self._say(str(exc), Qgis.MessageLevel.Warning)
            return False
        self._clicks_changed()
        return True

    def remove_click_near(
        self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem, tolerance: float
    ) -> bool:
        """Remove the click nearest to ``point`` within ``tolerance`` (map units of ``crs``)."""
        if self.session is None or not self.session.clicks():
            return False
        transform = crs_transform(self.session.info, crs, self.project, to_raster=False)
        best, best_distance = None, tolerance
        for click in self.session.clicks():
            x, y = self.session.info.map_transform * (click.col + 0.5, click.row + 0.5)
            position = QgsPointXY(x, y) if transform is None else transform.transform(QgsPointXY(x, y))
            distance = position.distance(point)
            if distance <= best_distance:
                best, best_distance = click, distance
        if best is None:
            return False
        self.session.remove_click(best.click_id)
        self._clicks_changed()
        return True

    def undo(self) -> None:
        """Undo the last click or removal (the session's undo log says what it was)."""
        from backend.errors import UserError

        if self.session is None:
            return
        if self.busy:
            self._say("Wait for the running task to finish, or cancel it.", Qgis.MessageLevel.Warning)
            return
        try:
            done = self.session.undo()
        except UserError as exc:
            self._say(str(exc), Qgis.MessageLevel.Warning)
            return
        self._say(done[0].upper() + done[1:] + ".", Qgis.MessageLevel.Info)
        self._clicks_changed()

    def _clicks_changed(self) -> None:
        if self.layers is not None:
            self.layers.clicks.dataProvider().reloadData()
            self.layers.clicks.triggerRepaint()
        self.changed.emit()
        self.predict()
