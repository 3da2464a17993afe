"""The patch queue on the canvas: next / previous patch, and the visible extent (part of the
session controller).

*Next patch* marks the patch being looked at done and zooms to the most uncertain one not visited
yet; *Previous patch* goes back and marks it to do again. The visible extent, as a pixel window,
is what a retrained model redraws first.
"""

from __future__ import annotations

from typing import Any

from qgis.core import Qgis, QgsRectangle

from .geometry import crs_transform, pixel_window, to_raster_crs

MARGIN = 0.05
"""Room around a patch zoomed to, as a share of its width."""


class PatchNavigation:
    """Mixed into :class:`~.controller.SessionController`, which provides ``session``,
    ``layers``, ``canvas``, ``project``, ``changed`` and ``_say``."""

    session: Any
    _visited: list[int]

    def next_patch(self) -> Any:
        """Mark the current patch done and zoom to the most uncertain patch not visited yet."""
        if self.session is None:
            return None
        if not self.session.patches():
            self._say("The patch queue is empty: predict first.", Qgis.MessageLevel.Info)
            return None
        if self._visited:
            self.session.set_patch_status(self._visited[-1], "done")
        todo = [p for p in self.session.patches() if p.status != "done" and p.patch_id not in self._visited]
        if not todo:
            self._say("Every patch has been visited.", Qgis.MessageLevel.Info)
            return None
        self._visited.append(todo[0].patch_id)
        self._zoom_to(todo[0])
        self._refresh_patches()
        return todo[0]

    def previous_patch(self) -> Any:
        """Back to the patch visited before this one, which is to do again."""
        if self.session is None or len(self._visited) < 2:
            return None
        self._visited.pop()
        patch = next(p for p in self.session.patches() if p.patch_id == self._visited[-1])
        self.session.set_patch_status(patch.patch_id, "todo")
        self._zoom_to(patch)
        self._refresh_patches()
        return patch

    def visible_region(self) -> tuple[int, int, int, int] | None:
        """The canvas extent as a pixel window of the raster (None when it misses the raster)."""
        crs = self.canvas.mapSettings().destinationCrs()
        extent = to_raster_crs(self.canvas.extent(), self.session.info, crs, self.project)
        return pixel_window(self.session.info, extent)

    def _zoom_to(self, patch: Any) -> None:
        rectangle = QgsRectangle(*patch.extent)
        crs = self.canvas.mapSettings().destinationCrs()
        transform = crs_transform(self.session.info, crs, self.project, to_raster=False)
        if transform is not None:
            rectangle = transform.transformBoundingBox(rectangle)
        self.canvas.setExtent(rectangle.buffered(rectangle.width() * MARGIN))
        self.canvas.refresh()

    def _refresh_patches(self) -> None:
        if self.layers is not None:
            self.layers.patches.dataProvider().reloadData()
            self.layers.patches.triggerRepaint()
        self.changed.emit()
