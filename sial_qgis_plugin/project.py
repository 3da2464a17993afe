"""The sessions saved with the QGIS project, and reopened with it (part of the session controller).

The project file records which sessions it knows, which one was in use, and for each the dock's
choices (mode, acquisition function, map shown, device, reference labels); everything else
(clicks, patch queue, rounds, checkpoints) lives in the sessions themselves. The sessions' layers
are saved in the project like any others and found again by their tags (see layers.py). Opening
the project reopens the session that was in use and the dock shows it as it was; the others are
in the dock's session list.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from qgis.core import QgsProject, QgsRasterLayer

PROJECT_SCOPE = "sial"
STATE_KEYS = ("mode", "acquisition", "view", "device", "reference")


class ProjectPersistence:
    """Mixed into :class:`~.controller.SessionController`, which provides ``project``,
    ``session``, ``mode``, ``view``, ``device``, ``acquisition``, ``reference``,
    ``known_sessions``, ``dock_states`` and ``_open``."""

    project: QgsProject
    session: Any
    mode: str
    dock_states: dict[str, dict[str, Any]]

    def _follow_project(self) -> None:
        """Save and reopen the sessions whenever the project is written or read; let go of the
        session's layers when they leave the project."""
        self.project.writeProject.connect(self._write_project)
        self.project.readProject.connect(self._read_project)
        self.project.layersWillBeRemoved.connect(self._layers_removed)

    def detach(self) -> None:
        """Stop following the project, and close the session (the plugin unloads)."""
        for signal, slot in (
            (self.project.writeProject, self._write_project),
            (self.project.readProject, self._read_project),
            (self.project.layersWillBeRemoved, self._layers_removed),
        ):
            with contextlib.suppress(TypeError, RuntimeError):  # not connected (any more)
                signal.disconnect(slot)
        if self.session is not None:
            self.session.close()
            self.session, self.layers = None, None

    def remember_state(self) -> None:
        """The dock's choices for the session in use (saved with the project)."""
        if self.session is None:
            return
        reference = self.reference.source() if self.reference is not None else ""
        values = (self.mode, self.acquisition, self.view, self.device, reference)
        self.dock_states[str(Path(self.session.path).resolve())] = dict(zip(STATE_KEYS, values, strict=True))

    def _restore_state(self, session: Any) -> None:
        """The dock's choices as they were for ``session`` (or as its history suggests)."""
        state = self.dock_states.get(str(Path(session.path).resolve()))
        if state is None:
            retrained = any(i.kind == "retrain" for i in session.iterations())
            if retrained and getattr(session.settings, "KIND", "") != "sial":
                self.mode = "disca"
            return
        self.mode = state.get("mode", self.mode)
        self.view = state.get("view", self.view)
        self.device = state.get("device", self.device)
        self.reference = self._layer_from(state.get("reference") or "") or self.reference

    def _layer_from(self, source: str) -> QgsRasterLayer | None:
        if not source:
            return None
        return next(
            (
                lyr
                for lyr in self.project.mapLayers().values()
                if isinstance(lyr, QgsRasterLayer) and lyr.source() == source
            ),
            None,
        )

    def _write_project(self, *_: Any) -> None:
        self.remember_state()
        sessions = {"known": self.known_sessions, "states": self.dock_states}
        self.project.writeEntry(PROJECT_SCOPE, "sessions", json.dumps(sessions))
        if self.session is not None:
            self.project.writeEntry(PROJECT_SCOPE, "session", str(self.session.path))
            self.project.writeEntry(PROJECT_SCOPE, "model_mode", self.mode)
        else:
            self.project.removeEntry(PROJECT_SCOPE, "session")

    def _read_project(self, *_: Any) -> None:
        text, found = self.project.readEntry(PROJECT_SCOPE, "sessions", "")
        try:
            saved = json.loads(text) if found and text else {}
        except ValueError:
            saved = {}
        for path in saved.get("known", []):
            if isinstance(path, str) and path not in self.known_sessions:
                self.known_sessions.append(path)
        self.dock_states.update({k: v for k, v in saved.get("states", {}).items() if isinstance(v, dict)})
        path, found = self.project.readEntry(PROJECT_SCOPE, "session", "")
        self.sessions_changed.emit()
        if not (found and path and Path(path).is_file()):
            return
        state = self.dock_states.get(str(Path(path).resolve()), {})
        if not state:  # a project saved by an earlier version: only the mode
            self.mode = self.project.readEntry(PROJECT_SCOPE, "model_mode", "ac")[0]
        device = state.get("device", self.device)
        self._with_engine(lambda: self._open(Path(path), device))  # after whatever runs now

    def _layers_removed(self, ids: list[str]) -> None:
        """The session's layers removed (by the analyst, or a new project): made again next time."""
        if self.layers is None:
            return
        try:
            mine = {layer.id() for layer in self.layers.all}
        except RuntimeError:  # already deleted
            mine = set(ids)
        if mine & set(ids):
            self.layers = None
