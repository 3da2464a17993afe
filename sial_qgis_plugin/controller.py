"""The plugin's link to the engine: one session, driven from the GUI thread.

Heavy work (predicting, retraining) runs in :class:`~.tasks.EngineTask` background tasks, one
at a time; clicks that arrive meanwhile are stored at once and their map update follows when
the task ends. The session's database is only touched on the GUI thread: tasks compute, their
results are recorded in ``finished``. All engine logic stays in ``backend``; this class gathers
parameters, starts tasks and shows results.
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
)
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .layers import ClassStyle, SessionLayers, create_session_layers, find_session_layers
from .tasks import EngineTask

PROJECT_SCOPE = "sial"


class SessionController(QObject):
    changed = pyqtSignal()  # clicks, iterations, patches or maps changed
    busy_changed = pyqtSignal(bool, str)  # a task started (True, what) or ended (False, "")
    progress = pyqtSignal(int, str)
    message = pyqtSignal(str, object)  # text, Qgis.MessageLevel

    def __init__(self, canvas, project: QgsProject | None = None, parent: QObject | None = None):
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
        self.project.writeProject.connect(self._write_project)
        self.project.readProject.connect(self._read_project)

    # ------------------------------------------------------------------ state

    @property
    def busy(self) -> bool:
        return self.task is not None

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
        if self.session is None:
            return []
        return [ClassStyle(c.index, c.name, c.color) for c in self.session.bundle.card.classes]

    def click_counts(self) -> dict[int, int]:
        counts = {c.index: 0 for c in self.classes}
        for click in self.session.clicks() if self.session else []:
            counts[click.class_id] = counts.get(click.class_id, 0) + 1
        return counts

    def history(self) -> list[dict[str, Any]]:
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

    def _say(self, text: str, level=Qgis.Info) -> None:
        if level in (Qgis.Warning, Qgis.Critical):
            self.last_error = text
        self.message.emit(text, level)

    # ------------------------------------------------------------------ session lifecycle

    def start(
        self, layer, model_dir: str | Path | None, device: str = "auto", session_path: Path | None = None
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
        self, layer, class_names: str, device: str = "auto", session_path: Path | None = None
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

    def _raster_file(self, layer) -> Path | None:
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

    def _begin(self, path: Path, source: Path, model_dir: str | Path, device: str, settings) -> bool:
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

    # ------------------------------------------------------------------ tasks

    def _run(self, description: str, work: Callable[[Any], Any], done: Callable[[Any], None]) -> None:
        task = EngineTask(description, work, lambda result: self._done(done, result), self._failed)
        task.status.connect(lambda text: self.progress.emit(int(task.progress()), text))
        task.notice.connect(lambda text: self._say(text[0].upper() + text[1:] + ".", Qgis.Info))
        self.task = task
        self.busy_changed.emit(True, description)
        QgsApplication.taskManager().addTask(task)

    def _done(self, done: Callable[[Any], None], result: Any) -> None:
        self.task = None
        self.busy_changed.emit(False, "")
        try:
            done(result)
        finally:
            self._next()

    def _failed(self, error: str) -> None:
        self.task = None
        self.busy_changed.emit(False, "")
        self._after.clear()
        if error == "cancelled":
            self._say("Cancelled: the maps and the model are as they were before.", Qgis.Info)
        else:
            self._say(error, Qgis.Warning)
        self._next()

    def _next(self) -> None:
        if self.busy:
            return
        if self._after:
            self._after.pop(0)()
        elif self._update_pending:
            self._update_pending = False
            self.predict()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

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

        def work(monitor):
            report = run_predict(params, monitor)
            miou = None
            if reference is not None and region is None:
                import rasterio

                with rasterio.open(report.classes) as classes:
                    miou = score(classes.read(1), read_labels(reference), names).miou
            return report, miou

        def done(result) -> None:
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

    def visible_region(self) -> tuple[int, int, int, int] | None:
        """The canvas extent as a pixel window of the raster (None when it misses the raster)."""
        info = self.session.info
        extent = self._to_raster(self.canvas.extent(), self.canvas.mapSettings().destinationCrs())
        inverse = ~info.map_transform
        corners = [
            inverse * (x, y)
            for x in (extent.xMinimum(), extent.xMaximum())
            for y in (extent.yMinimum(), extent.yMaximum())
        ]
        cols, rows = [c for c, _ in corners], [r for _, r in corners]
        row0, row1 = max(int(min(rows)), 0), min(int(max(rows)) + 1, info.height)
        col0, col1 = max(int(min(cols)), 0), min(int(max(cols)) + 1, info.width)
        return (row0, col0, row1, col1) if row0 < row1 and col0 < col1 else None

    # ------------------------------------------------------------------ coordinates

    def _raster_crs(self) -> QgsCoordinateReferenceSystem:
        crs = self.session.info.crs
        return (
            QgsCoordinateReferenceSystem(crs.to_wkt()) if crs is not None else QgsCoordinateReferenceSystem()
        )

    def _transform(self, crs: QgsCoordinateReferenceSystem, to_raster: bool) -> QgsCoordinateTransform | None:
        raster = self._raster_crs()
        if not raster.isValid() or not crs.isValid() or raster == crs:
            return None  # a raster without CRS lives in QGIS's pixel coordinates, as the canvas shows it
        source, target = (crs, raster) if to_raster else (raster, crs)
        return QgsCoordinateTransform(source, target, self.project)

    def _to_raster(self, geometry, crs: QgsCoordinateReferenceSystem):
        transform = self._transform(crs, to_raster=True)
        if transform is None:
            return geometry
        if isinstance(geometry, QgsRectangle):
            return transform.transformBoundingBox(geometry)
        return transform.transform(geometry)

    # ------------------------------------------------------------------ clicks

    def add_click(self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem) -> bool:
        from backend.errors import UserError

        if self.session is None:
            self._say("Start a session first.", Qgis.Warning)
            return False
        where = self._to_raster(QgsPointXY(point), crs)
        try:
            self.session.add_click_at(where.x(), where.y(), self.current_class)
        except UserError as exc:
            self._say(str(exc), Qgis.Warning)
            return False
        self._clicks_changed()
        return True

    def remove_click_near(
        self, point: QgsPointXY, crs: QgsCoordinateReferenceSystem, tolerance: float
    ) -> bool:
        """Remove the click nearest to ``point`` within ``tolerance`` (map units of ``crs``)."""
        if self.session is None or not self.session.clicks():
            return False
        transform = self._transform(crs, to_raster=False)
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

    def _clicks_changed(self) -> None:
        if self.layers is not None:
            self.layers.clicks.dataProvider().reloadData()
            self.layers.clicks.triggerRepaint()
        self.changed.emit()
        self.predict()

    def undo(self) -> None:
        from backend.errors import UserError

        if self.session is None:
            return
        if self.busy:
            self._say("Wait for the running task to finish, or cancel it.", Qgis.Warning)
            return
        try:
            done = self.session.undo()
        except UserError as exc:
            self._say(str(exc), Qgis.Warning)
            return
        self._say(done[0].upper() + done[1:] + ".", Qgis.Info)
        self._clicks_changed()

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

        def done(trained) -> None:
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

    # ------------------------------------------------------------------ patch queue

    def next_patch(self):
        """Mark the current patch done and zoom to the most uncertain patch not visited yet."""
        if self.session is None:
            return None
        if self._visited:
            self.session.set_patch_status(self._visited[-1], "done")
        todo = [p for p in self.session.patches() if p.status != "done" and p.patch_id not in self._visited]
        if not todo:
            self._say("Every patch has been visited.", Qgis.Info)
            return None
        self._visited.append(todo[0].patch_id)
        self._zoom_to(todo[0])
        self._refresh_patches()
        return todo[0]

    def previous_patch(self):
        if self.session is None or len(self._visited) < 2:
            return None
        self._visited.pop()
        patch = next(p for p in self.session.patches() if p.patch_id == self._visited[-1])
        self.session.set_patch_status(patch.patch_id, "todo")
        self._zoom_to(patch)
        self._refresh_patches()
        return patch

    def _zoom_to(self, patch) -> None:
        x0, y0, x1, y1 = patch.extent
        rectangle = QgsRectangle(x0, y0, x1, y1)
        transform = self._transform(self.canvas.mapSettings().destinationCrs(), to_raster=False)
        if transform is not None:
            rectangle = transform.transformBoundingBox(rectangle)
        self.canvas.setExtent(rectangle.buffered(rectangle.width() * 0.05))
        self.canvas.refresh()

    def _refresh_patches(self) -> None:
        if self.layers is not None:
            self.layers.patches.dataProvider().reloadData()
            self.layers.patches.triggerRepaint()
        self.changed.emit()

    # ------------------------------------------------------------------ export

    def export_class_map(self, path: str | Path) -> Path:
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
            lambda count: self._say(f"Wrote {count} class polygons to {path}.", Qgis.Success),
        )

    def export_bundle(self, directory: str | Path) -> Path | None:
        """The adapted model into ``directory``: a folder the analyst picked, which may hold their
        own files, so a non-empty folder gets a sub-folder named after the model (never replaced)."""
        from backend.errors import UserError

        try:
            return self.session.export_bundle(directory)
        except UserError as exc:
            self._say(str(exc), Qgis.Warning)
            return None

    def export_clicks(self, path: str | Path) -> Path:
        from backend.io.clicks import write_clicks

        return write_clicks(
            Path(path), self.session.click_list(), self.session.info, self.session.bundle.card
        )

    # ------------------------------------------------------------------ project

    def _write_project(self, *_) -> None:
        if self.session is not None:
            self.project.writeEntry(PROJECT_SCOPE, "session", str(self.session.path))
            self.project.writeEntry(PROJECT_SCOPE, "model_mode", self.mode)

    def _read_project(self, *_) -> None:
        path, found = self.project.readEntry(PROJECT_SCOPE, "session", "")
        if found and path and Path(path).is_file():
            self.mode = self.project.readEntry(PROJECT_SCOPE, "model_mode", "ac")[0]
            self.open_session(path)
