"""Starting, opening and switching sessions (part of the session controller).

Everything heavy runs in background tasks: creating a session (its first model load included)
and its first prediction are one task, reopening one (its weights and checkpoints) another. The
session in use stays open until the new one is ready, and stays in the dock's session list
afterwards: a new session never drops the old one silently. A first prediction that fails or is
cancelled leaves nothing behind: the new session's files are deleted (the engine's
``backend.session.files``, which removes only the files a session owns), and the session in use
before is still the one in use.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer

from .layers import SessionLayers, create_session_layers, find_session_layers, show_only_session

INFO, WARNING = Qgis.MessageLevel.Info, Qgis.MessageLevel.Warning


def model_name(model_dir: Path) -> str:
    """The bundle's name from its card (read as JSON: no torch), else its folder's."""
    try:
        return str(json.loads((model_dir / "model.json").read_text(encoding="utf-8"))["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return model_dir.name


def new_model_name(class_names: str) -> str:
    names = [part.split(":")[0].strip() for part in class_names.split(",") if part.strip()]
    shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
    return f"new model ({shown})"


def create_session(
    path: Path,
    raster: Path,
    model_dir: Path,
    device: str,
    settings: Any,
    classes: str | None,
    label: str,
    pixel_size: float | None = None,
) -> Any:
    """A new session (in a worker thread); ``classes``: first an untrained network for them;
    ``pixel_size``: the raster's in metres when it has no CRS (the model may read it resampled)."""
    from backend.learn.new_model import create_model_for_raster, parse_classes
    from backend.session import files
    from backend.session.session import Session

    if classes is not None:
        create_model_for_raster(raster, parse_classes(classes), model_dir)
    try:
        session = Session.create(path, raster, model_dir, device, settings=settings, pixel_size=pixel_size)
    except BaseException:
        if classes is not None:
            files.remove_new_model(model_dir)  # no session uses it
        raise
    try:
        files.set_label(path, label)
    except BaseException:
        session.close()
        files.delete_session(path)
        raise
    return session


def last_acquisition(outputs: Path) -> str | None:
    """The acquisition function of the maps a session shows now (its last prediction's)."""
    try:
        return str(json.loads((outputs / "run.json").read_text(encoding="utf-8"))["acquisition"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class SessionLife:
    """Mixed into :class:`~.controller.SessionController`."""

    session: Any
    layers: SessionLayers | None
    project: QgsProject

    # ------------------------------------------------------------------ new sessions

    def start(
        self, layer: Any, model_dir: str | Path | None, device: str = "auto", session_path: Path | None = None
    ) -> bool:
        """A new session on ``layer`` with the bundle in ``model_dir``, then a first prediction
        (in the background; False when it cannot even start, with the reason said)."""
        source = self._raster_file(layer)
        if source is None:
            return False
        if not model_dir:
            self._say("Choose a model first.", WARNING)
            return False
        path = Path(session_path) if session_path else self._new_session_path(source)
        model = Path(model_dir)
        self._with_engine(lambda: self._begin(path, source, model, device, None, model_name(model)))
        return True

    def start_from_clicks(
        self, layer: Any, class_names: str, device: str = "auto", session_path: Path | None = None
    ) -> bool:
        """A new SIAL session: an untrained network for the analyst's own classes (written next
        to the session) that learns from the clicks alone, one Retrain round after another."""
        source = self._raster_file(layer)
        if source is None:
            return False
        path = Path(session_path) if session_path else self._new_session_path(source)
        model = path.with_name(f"{path.stem}-model")
        name = new_model_name(class_names)
        self._with_engine(lambda: self._begin(path, source, model, device, class_names, name))
        return True

    def _begin(
        self, path: Path, source: Path, model_dir: Path, device: str, classes: str | None, name: str
    ) -> None:
        from backend.session import files

        if self.busy:
            self._say("Wait for the running task to finish, or cancel it.", WARNING)
            return
        settings = self.sial_settings if classes is not None else self.settings
        label = self._unique_label(files.default_label(source, name, _now()))
        acquisition, reference = self.acquisition, self._reference_path()
        patch_score = self.patch_score(sial=classes is not None)
        before, pixel_size = self.session_label(), self.pixel_size

        def work(monitor: Any) -> tuple[Any, Any, float | None]:
            from .controller import predict_and_score

            session = create_session(path, source, model_dir, device, settings, classes, label, pixel_size)
            try:
                names = [c.name for c in session.bundle.card.classes]
                report, miou = predict_and_score(
                    session.prediction(acquisition, patch_score=patch_score), reference, names, monitor
                )
            except BaseException:
                session.close()
                files.delete_session(path)  # a first prediction that did not finish leaves nothing
                raise
            return session, report, miou

        def done(result: tuple[Any, Any, float | None]) -> None:
            session, report, miou = result
            self._adopt(session)
            for notice in session.info.notices:
                self._say(notice, INFO)
            self._show_prediction(report, miou, first=True)

        def failed(error: str) -> str:
            back = f" You are back in session '{before}'." if before else ""
            if error == "cancelled":
                return f"Cancelled: the new session was removed, nothing of it is left on disk.{back}"
            sentence = error[0].upper() + error[1:] + ("" if error.endswith(".") else ".")
            return f"{sentence} No session was created.{back}"

        self._run(f"Starting a session on {source.name}", work, done, failed)

    def _raster_file(self, layer: Any) -> Path | None:
        """The file behind ``layer``, or None (and the reason said) where it cannot be used."""
        if reason := self._engine_busy_reason():
            self._say(reason, WARNING)
            return None
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            self._say("Choose a raster layer first.", WARNING)
            return None
        source = Path(layer.source())
        if layer.providerType() != "gdal" or not source.is_file():
            self._say(f"'{layer.name()}' is not a raster file on disk; save it as a GeoTIFF first.", WARNING)
            return None
        return source

    def _new_session_path(self, raster: Path) -> Path:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = self.sessions_folder() / f"{raster.stem}-{stamp}.gpkg"
        for n in range(2, 100):  # two sessions started within a second
            if not path.exists() and not path.with_name(f"{path.stem}-model").exists():
                break
            path = path.with_name(f"{raster.stem}-{stamp}-{n}.gpkg")
        return path

    # ------------------------------------------------------------------ reopening

    def open_session(self, path: str | Path, device: str = "auto") -> bool:
        """Reopen a saved session (and its layers, if the project holds them) in the background;
        False when it cannot even start, with the reason said."""
        path = Path(path)
        if not path.is_file():
            self._say(f"Session not found: {path}", WARNING)
            return False
        if reason := self._engine_busy_reason():
            self._say(reason, WARNING)
            return False
        self._with_engine(lambda: self._open(path, device))
        return True

    def _open(self, path: Path, device: str) -> None:
        from backend.session.session import Session

        if self.busy:
            self._say("Wait for the running task to finish, or cancel it.", WARNING)
            return

        def done(session: Any) -> None:
            self._adopt(session)
            for notice in session.notices:  # a damaged checkpoint, and which round is used instead
                self._say(notice[0].upper() + notice[1:] + ".", WARNING)
            if self.is_sial:
                self.sial_settings = session.settings  # the dock shows them; the next round keeps them
            else:
                self.settings = session.settings  # a DISCA session trains on as its last round did
            layers = find_session_layers(session.path, self.project)
            if layers is None and (session.outputs / "classes.tif").exists():
                layers = self._create_layers()
            self.layers = layers
            if layers is not None:
                layers.show(self.view)
            self._session_ready()

        self._run(f"Opening session {path.name}", lambda monitor: Session.open(path, device), done)

    # ------------------------------------------------------------------ the session in use

    def _adopt(self, session: Any) -> None:
        """``session`` becomes the one in use; the one before is closed, and stays listed."""
        previous = self.session
        if previous is not None:
            self._close_in_background(previous)
            if previous.path != session.path:
                self._say(
                    f"Session '{self.label_of(previous.path)}' is kept: reopen it from the Sessions list.",
                    INFO,
                )
        self.session, self.layers, self._visited, self._update_pending = session, None, [], False
        self.acquisition = last_acquisition(session.outputs) or self.acquisition
        self._restore_state(session)
        self.remember_state()  # a new session's: as the dock started it
        self._remember(session.path)

    def _close_in_background(self, session: Any) -> None:
        """Close a session no longer in use. GDAL takes a moment (0.2 s) to close a GeoPackage it
        wrote, so that is a task of its own (a later task, reopening it say, waits for it); the
        session list shows it as it was meanwhile rather than wait for the file."""
        if self.busy:  # not from a task's end: close it here
            session.close()
            return
        from backend.session import files

        path = Path(session.path).resolve()
        if (summary := files.read_summary(path)) is not None:
            self._closing[path] = summary

        def closed(_: Any = None) -> None:
            self._closing.pop(path, None)

        def failed(error: str) -> None:
            closed()

        self._run(f"Closing session {path.name}", lambda monitor: session.close(), closed, failed)

    def _session_ready(self) -> None:
        """The session and its layers are in place: the raster under them, only they shown."""
        self.raster_layer = self._raster_layer()
        show_only_session(self.session.path, self.project, self.tree_view)
        self.sessions_changed.emit()
        self.session_opened.emit()
        self.changed.emit()

    def _raster_layer(self) -> QgsRasterLayer | None:
        """The session's raster among the project's layers (added at the bottom if missing)."""
        wanted = Path(self.session.raster).resolve()
        for layer in self.project.mapLayers().values():
            if isinstance(layer, QgsRasterLayer) and layer.providerType() == "gdal":
                try:
                    if Path(layer.source()).resolve() == wanted:
                        return layer
                except OSError:
                    continue
        layer = QgsRasterLayer(str(wanted), wanted.stem)
        if not layer.isValid():
            return None
        self.project.addMapLayer(layer, False)
        self.project.layerTreeRoot().addLayer(layer)
        return layer

    def _create_layers(self) -> SessionLayers:
        session = self.session
        layers = create_session_layers(
            session.path,
            session.outputs,
            self.label_of(session.path),
            self.classes,
            self.acquisition,
            self.project,
        )
        if self.tree_view is not None:  # the view does not follow the nodes' expanded flag by itself
            for node in (layers.group, layers.group.findLayer(layers.classes.id())):
                self.tree_view.setExpanded(self.tree_view.node2index(node), True)  # the view's (proxy) index
        return layers

    def close_session(self) -> None:
        """Close the session in use (its layers stay in the project, it stays listed)."""
        if self.session is not None:
            self.session.close()
        self.session, self.layers, self._visited = None, None, []
        self.sessions_changed.emit()
        self.changed.emit()

    def _reference_path(self) -> Path | None:
        return Path(self.reference.source()) if self.reference is not None else None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def default_sessions_root(project: QgsProject) -> Path:
    """``segmentation_sessions`` beside the saved project, else in the QGIS profile folder."""
    home = Path(project.homePath()) if project.fileName() else None
    return (home or Path(QgsApplication.qgisSettingsDirPath())) / "segmentation_sessions"
