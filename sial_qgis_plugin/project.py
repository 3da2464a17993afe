"""The session saved with the QGIS project, and reopened with it (part of the session controller).

The project file only records where the session's GeoPackage is and the dock's mode; everything
else (clicks, patch queue, rounds, checkpoints) lives in the session itself. The session's layers
are saved in the project like any others and found again by their tags (see layers.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsProject

PROJECT_SCOPE = "sial"


class ProjectPersistence:
    """Mixed into :class:`~.controller.SessionController`, which provides ``project``,
    ``session``, ``mode`` and ``open_session``."""

    project: QgsProject
    session: Any
    mode: str

    def _follow_project(self) -> None:
        """Save and reopen the session whenever the project is written or read."""
        self.project.writeProject.connect(self._write_project)
        self.project.readProject.connect(self._read_project)

    def _write_project(self, *_: Any) -> None:
        if self.session is not None:
            self.project.writeEntry(PROJECT_SCOPE, "session", str(self.session.path))
            self.project.writeEntry(PROJECT_SCOPE, "model_mode", self.mode)

    def _read_project(self, *_: Any) -> None:
        path, found = self.project.readEntry(PROJECT_SCOPE, "session", "")
        if found and path and Path(path).is_file():
            self.mode = self.project.readEntry(PROJECT_SCOPE, "model_mode", "ac")[0]
            self.open_session(path)
