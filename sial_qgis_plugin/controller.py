"""The plugin's link to the engine: one session, driven from the GUI thread.

Heavy work (predicting, retraining) runs in :class:`~.tasks.EngineTask` background tasks, one
at a time; clicks that arrive meanwhile are stored at once and their map update follows when
the task ends. The session's database is only touched on the GUI thread: tasks compute, their
results are recorded in ``finished``. All engine logic stays in the engine; the controller
gathers parameters, starts tasks and shows results.

This module holds the session's life (start, reopen, close), predicting and retraining. The
controller's other concerns each have a module of their own, mixed in here:

- task_queue: one background task at a time, and what waits for it;
- corrections: the analyst's clicks (add, remove, undo);
- navigation: next / previous patch, and the visible extent;
- exports: class map, polygons, adapted model, clicks;
- project: the session saved with the QGIS project and reopened with it.
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .corrections import Corrections
from .exports import SessionExports
from .layers import ClassStyle, SessionLayers, create_session_layers, find_session_layers
from .navigation import PatchNavigation
from .project import ProjectPersistence
from .task_queue import TaskQueue
from .tasks import EngineTask


class SessionController(TaskQueue, Corrections, PatchNavigation, SessionExports, ProjectPersistence, QObject):
    """The session the dock, the click tool and the project work with (at most one at a time)."""

    changed = pyqtSignal()  # clicks, iterations, patches or maps changed
    busy_changed = pyqtSignal(bool, str)  # a task started (True, what) or ended (False, "")
    progress = pyqtSignal(int, str)
    message = pyqtSignal(str, object)  # text, Qgis.MessageLevel

    def __init__(self, canvas: Any, project: QgsProject | None = None, parent: QObject | None = None):
        super().__init__(parent)
        from backend.learn.disca import DiscaSettings
        from backend.session.settings import SialSettings

        self.canvas = canvas
        self.project = project or QgsProject.instance()
        self.session = None
        self.layers: SessionLayers | None = None
        self.task: EngineTask | None = None
        self.acquisition = "entropy"
        self.mode = "ac"  # "ac" or "disca"
        self.settings = DiscaSettings()
        self.sial_settings = SialSettings.recommended()
        self.current_class = 0
        self.reference: QgsRasterLayer | None = None
        self.tree_view = None  # QGIS's Layers panel, when there is one: legends are opened in it
        self.last_error = ""
        self._after: list[Callable[[], None]] = []
        self._update_pending = False
        self._visited: list[int] = []
        self._follow_project()

    # ------------------------------------------------------------------ state

    @property
    def is_sial(self) -> bool:
        """Whether the session's network learns from the clicks alone (SIAL rounds, its own
        settings) rather than being refined by DISCA with the dock's."""
        from backend.session.settings import SialSettings

        return self.session is not None and isinstance(self.session.settings, SialSettings)

    @property
    def can_retrain(self) -> bool:
        return self.session is not None and (self.is_sial or self.mode == "disca")

    def set_sial_options(self, steps: int, superpixels: bool, adjust_prior: bool) -> None:
        """What the dock lets the analyst change of the SIAL rounds still to come."""
        from dataclasses import replace

        from backend.learn.superpixels import ExpansionSettings

        settings = self.sial_settings
        training = replace(settings.training, steps=steps, adjust_prior=adjust_prior)
        expansion = (settings.expansion or ExpansionSettings()) if superpixels else None
        self.sial_settings = replace(settings, training=training, expansion=expansion)

    @property
    def classes(self) -> list[ClassStyle]:
        """The session model's classes, as the layers and the palette show them."""
        if self.session is None:
            return []
        return [ClassStyle(c.index, c.name, c.color) for c in self.session.bundle.card.classes]

    def history(self) -> list[dict[str, Any]]:
        """The session's steps (start, retraining rounds), as the dock's History table lists them."""
        if self.session is None:
            return []
        return [
            {
                "iteration": i.iteration,
                "kind": i.kind,
                "clicks": i.clicks,
                "seconds": i.train_seconds,
                "miou": i.miou,
            }
            for i in self.session.iterations()
        ]

    def _say(self, text: str, level: Any = Qgis.Info) -> None:
        """One sentence for the analyst (the message bar, the dock's status); warnings are kept as
        ``last_error`` for scripts and tests."""
        if level in (Qgis.Warning, Qgis.Critical):
            self.last_error = text
        self.message.emit(text, level)

    # ------------------------------------------------------------------ session lifecycle

    def start(
        self, layer: Any, model_dir: str | Path | None, device: str = "auto", session_path: Path | None = None
    ) -> bool:
        """A new session on ``layer`` with the bundle in ``model_dir``, then a first prediction."""
        source = self._raster_file(layer)
        if source is None:
            return False
        if not model_dir:
            self._say("Choose a model first.", Qgis.Warning)
            return False
        return self._begin(
            session_path or self._new_session_path(source), source, model_dir, device, self.settings
        )

    def start_from_clicks(
        self, layer: Any, class_names: str, device: str = "auto", session_path: Path | None = None
    ) -> bool:
        """A new SIAL session: an untrained network for the analyst's own classes (written next
        to the session) that learns from the clicks alone, one Retrain round after another."""
        from backend.errors import UserError
        from backend.learn.new_model import create_model_for_raster, parse_classes

        source = self._raster_file(layer)
        if source is None:
            return False
        path = session_path or self._new_session_path(source)
        model_dir = path.with_name(f"{path.stem}-model")
        try:
            create_model_for_raster(source, parse_classes(class_names), model_dir)
        except UserError as exc:
            self._say(str(exc), Qgis.Warning)
            return False
        if self._begin(path, source, model_dir, device, self.sial_settings):
            return True
        shutil.rmtree(model_dir, ignore_errors=True)  # no session uses it
        return False

    def _raster_file(self, layer: Any) -> Path | None:
        """The file behind ``layer``, or None (and the reason said) where it cannot be used."""
        if self.busy:
            self._say("Wait for the running task to finish, or cancel it.", Qgis.Warning)
            return None
        if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
            self._say("Choose a raster layer first.", Qgis.Warning)
            return None
        source = Path(layer.source())
        if layer.providerType() != "gdal" or not source.is_file():
            self._say(
                f"'{layer.name()}' is not a raster file on disk; save it as a GeoTIFF first.", Qgis.Warning
            )
            return None
        return source

    def _begin(self, path: Path, source: Path, model_dir: str | Path, device: str, settings: Any) -> bool:
        from backend.errors import UserError
        from backend.session.session import Session

        try:
            session = Session.create(path, source, model_dir, device, settings=settings)
        except UserError as exc:
            self._say(str(exc), Qgis.Warning)
            return False
        self._close_session()
        self.session = session
        for notice in session.info.notices:
            self._say(notice, Qgis.Info)
        self.changed.emit()
        self.predict()
        return True

    def open_session(self, path: str | Path, device: str = "auto") -> bool:
        """Reopen a saved session (and its layers, if the project holds them)."""
        from backend.errors import UserError
        from backend.session.session import Session

        try:
            session = Session.open(path, device)
        except UserError as exc:
            self._say(str(exc), Qgis.Warning)
            return False
        self._close_session()
        self.session = session
        for notice in session.notices:  # a damaged checkpoint, and which round is used instead
            self._say(notice[0].upper() + notice[1:] + ".", Qgis.Warning)
        if self.is_sial:
            self.sial_settings = session.settings  # the dock shows them; the next round keeps them
        self.layers = find_session_layers(session.path, self.project)
        if self.layers is None and (session.outputs / "classes.tif").exists():
            self.layers = self._create_layers()
        self.changed.emit()
        return True

    def _close_session(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session, self.layers, self._visited = None, None, []

    def _new_session_path(self, raster: Path) -> Path:
        home = Path(self.project.homePath()) if self.project.fileName() else None
        folder = (home or Path(QgsApplication.qgisSettingsDirPath())) / "segmentation_sessions"
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        return folder / f"{raster.stem}-{stamp}.gpkg"

    def _create_layers(self) -> SessionLayers:
        layers = create_session_layers(
            self.session.path, self.session.outputs, self.session.raster.name, self.classes, self.project
        )
        if self.tree_view is not None:  # the view does not follow the nodes' expanded flag by itself
            for node in (layers.group, layers.group.findLayer(layers.classes.id())):
                self.tree_view.setExpanded(self.tree_view.node2index(node), True)  # the view's (proxy) index
        return layers

    # ------------------------------------------------------------------ predict

    def predict(self, region: tuple[int, int, int, int] | None = None) -> None:
        """Update the maps: only the touched tiles after clicks, everything after retraining;
        ``region`` first refreshes just those pixels (the visible extent)."""
        from backend.predict.evaluation import read_labels, score
        from backend.predict.job import run_predict

        if self.session is None:
            self._say("Start a session first.", Qgis.Warning)
            return
        if self.busy:
            self._update_pending = True
            return
        params = self.session.prediction(self.acquisition, region=region)
        reference = Path(self.reference.source()) if self.reference is not None else None
        names = [c.name for c in self.classes]

        def work(monitor: Any) -> tuple[Any, float | None]:
            report = run_predict(params, monitor)
            miou = None
            if reference is not None and region is None:
                import rasterio

                with rasterio.open(report.classes) as classes:
                    miou = score(classes.read(1), read_labels(reference), names).miou
            return report, miou

        def done(result: tuple[Any, float | None]) -> None:
            report, miou = result
            self.session.store_patches(report)
            if miou is not None:
                self.session.record_miou(round(miou, 2))
            if self.layers is None:
                self.layers = self._create_layers()
            else:
                self.layers.refresh_maps()
            self.changed.emit()

        self._run("Updating the maps" if region else "Predicting", work, done)

    # ------------------------------------------------------------------ retrain

    def retrain(self) -> None:
        """One DISCA round in the background, then the visible extent, then everything."""
        if self.session is None:
            self._say("Start a session first.", Qgis.Warning)
            return
        if not self.can_retrain:
            self._say("Retraining needs the AC + DISCA mode.", Qgis.Warning)
            return
        if self.busy:
            self._say("Wait for the running task to finish, or cancel it.", Qgis.Warning)
            return
        clicks = self.session.click_list()
        if not clicks:
            self._say("Click some corrections first: retraining learns from them.", Qgis.Warning)
            return
        method = "SIAL" if self.is_sial else "DISCA"
        session, settings = self.session, self.sial_settings if self.is_sial else self.settings

        def done(trained: Any) -> None:
            session.commit_round(trained)
            report = trained.report
            self._say(
                f"Round {trained.iteration} ({method}): {report.steps} steps on {report.clicks} clicks "
                f"in {report.seconds:.1f} s.",
                Qgis.Info,
            )
            self.changed.emit()
            region = self.visible_region()
            if region is not None:
                self._after.append(lambda: self.predict())
                self.predict(region=region)
            else:
                self.predict()

        self._run(
            "Retraining on the clicks", lambda monitor: session.train_round(clicks, settings, monitor), done
        )
