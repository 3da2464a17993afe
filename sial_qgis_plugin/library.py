"""The sessions an analyst can go back to: listed, renamed, deleted (part of the controller).

The list holds the sessions in the sessions folder (``segmentation_sessions`` beside the saved
project, or in the QGIS profile folder), those the project remembers, and those opened or
started since QGIS started. A session's name (its label) is stored in the session itself and is
its layer group's name. Deleting removes only the files the session owns, through the engine's
``backend.session.files``; it refuses while another process has the session open, and closes it
first when it is the one in use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsProject

from .layers import remove_session_layers, rename_session_group

INFO, WARNING = Qgis.MessageLevel.Info, Qgis.MessageLevel.Warning


class SessionLibrary:
    """Mixed into :class:`~.controller.SessionController`, which provides ``session``,
    ``project``, ``busy``, ``sessions_changed``, ``close_session`` and ``_say``."""

    session: Any
    project: QgsProject
    known_sessions: list[str]
    _closing: dict[Path, Any]  # sessions being closed in a task: their summaries, read before

    def sessions_folder(self) -> Path:
        from .lifecycle import default_sessions_root

        return default_sessions_root(self.project)

    def sessions(self) -> list[Any]:
        """Every session the dock lists (``backend.session.files.SessionSummary``), newest first."""
        folder = self.sessions_folder()
        found: dict[Path, Any] = {}
        for path in [*(sorted(folder.glob("*.gpkg")) if folder.is_dir() else []), *self.known_sessions]:
            resolved = Path(path).resolve()
            if resolved not in found and (summary := self._summary(path)) is not None:
                found[resolved] = summary
        return sorted(found.values(), key=lambda s: (s.created, s.path.name), reverse=True)

    def _summary(self, path: str | Path) -> Any:
        """``backend.session.files.read_summary``, or what it read before a session began to close
        (GDAL writes the file as it closes it: reading it then would wait)."""
        from backend.session import files

        return self._closing.get(Path(path).resolve()) or files.read_summary(path)

    def label_of(self, path: str | Path) -> str:
        summary = self._summary(path)
        return summary.label if summary is not None else Path(path).stem

    def session_label(self) -> str:
        """The name of the session in use ("" when none is)."""
        return self.label_of(self.session.path) if self.session is not None else ""

    def _unique_label(self, label: str) -> str:
        taken = {s.label for s in self.sessions()}
        candidate, n = label, 2
        while candidate in taken:
            candidate, n = f"{label} ({n})", n + 1
        return candidate

    def _remember(self, path: str | Path) -> None:
        text = str(Path(path).resolve())
        if text not in self.known_sessions:
            self.known_sessions.append(text)

    def is_current(self, path: str | Path) -> bool:
        return self.session is not None and Path(self.session.path).resolve() == Path(path).resolve()

    def rename_session(self, path: str | Path, label: str) -> bool:
        """Give the session another name (stored in it); its layer group follows."""
        from backend.errors import UserError
        from backend.session import files

        try:
            files.set_label(path, label)
        except UserError as exc:
            self._say(str(exc), WARNING)
            return False
        rename_session_group(Path(path), self.label_of(path), self.project)
        self.sessions_changed.emit()
        return True

    def deletion_preview(self, path: str | Path) -> list[str]:
        """What deleting the session would remove, as lines for the confirmation dialog."""
        path = Path(path)
        lines = [path.name]
        for suffix, what in ((".outputs", "its maps"), (".checkpoints", "its retraining rounds")):
            folder = path.with_suffix(suffix)
            if folder.is_dir():
                lines.append(f"{folder.name}/ ({what})")
        model = path.with_name(f"{path.stem}-model")
        if model.is_dir():
            lines.append(f"{model.name}/ (the network it learnt from clicks), if it made it there")
        return lines

    def delete_session(self, path: str | Path) -> bool:
        """Delete the session's own files (after the dock's confirmation)."""
        from backend.errors import UserError
        from backend.session import files

        path = Path(path)
        if self.busy:
            self._say("Wait for the running task to finish, or cancel it.", WARNING)
            return False
        label = self.label_of(path)
        if self.is_current(path):
            self.close_session()
        try:
            deletion = files.delete_session(path, before=lambda: remove_session_layers(path, self.project))
        except UserError as exc:
            self._say(str(exc), WARNING)
            return False
        self.known_sessions = [p for p in self.known_sessions if Path(p).resolve() != path.resolve()]
        kept = (
            f"; kept what is not the session's: {', '.join(p.name for p in deletion.kept)}"
            if deletion.kept
            else ""
        )
        self._say(f"Deleted session '{label}' ({len(deletion.removed)} files and folders){kept}.", INFO)
        self.sessions_changed.emit()
        return True
