"""What leaves the session for the analyst's own folders (part of the session controller):
the class map, class polygons, the adapted model and the clicks.

The analyst picks the paths; the engine's writers decide what may be written there (a folder that
holds other files gets the bundle in a sub-folder named after the model, never replaced).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qgis.core import Qgis


class SessionExports:
    """Mixed into :class:`~.controller.SessionController`, which provides ``session``,
    ``_run`` and ``_say``."""

    session: Any

    def export_class_map(self, path: str | Path) -> Path:
        """A copy of the current class map (GeoTIFF, with its palette)."""
        path = Path(path)
        shutil.copyfile(self.session.outputs / "classes.tif", path)
        return path

    def export_polygons(self, path: str | Path) -> None:
        """Class polygons dissolved by class into a GeoPackage (in the background)."""
        from backend.io.export import polygonize_classes

        classes = self.session.outputs / "classes.tif"
        card = self.session.bundle.card
        self._run(
            "Writing class polygons",
            lambda monitor: polygonize_classes(classes, Path(path), card, monitor),
            lambda count: self._say(f"Wrote {count} class polygons to {path}.", Qgis.MessageLevel.Success),
        )

    def export_bundle(self, directory: str | Path) -> Path | None:
        """The adapted model into ``directory``: a folder the analyst picked, which may hold their
        own files, so a non-empty folder gets a sub-folder named after the model (never replaced)."""
        from backend.errors import UserError

        try:
            return self.session.export_bundle(directory)
        except UserError as exc:
            self._say(str(exc), Qgis.MessageLevel.Warning)
            return None

    def export_clicks(self, path: str | Path) -> Path:
        """The clicks as a point GeoPackage, with their class ids and names."""
        from backend.io.clicks import write_clicks

        return write_clicks(
            Path(path), self.session.click_list(), self.session.info, self.session.bundle.card
        )
