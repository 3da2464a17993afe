"""The plugin's link to the engine: one session in use at a time, driven from the GUI thread.

Heavy work (loading the engine, starting and opening sessions, predicting, retraining) runs in
:class:`~.tasks.EngineTask` background tasks, one at a time; clicks that arrive meanwhile are
stored at once and their map update follows when the task ends. The session's database is only
touched on the GUI thread: tasks compute, their results are recorded in ``finished``. All engine
logic stays in the engine; the controller gathers parameters, starts tasks and shows results.

This module holds the controller's state, predicting, the acquisition function and retraining.
Its other concerns each have a module of their own, mixed in here:

- task_queue: one background task at a time, and what waits for it;
- engine_loader: torch and the engine imported in the background, once;
- lifecycle: starting, opening and switching sessions;
- library: the sessions the dock lists (rename, delete);
- corrections: the analyst's clicks (add, remove, undo);
- navigation: next / previous patch, and the visible extent;
- exports: class map, polygons, adapted model, clicks;
- project: the sessions saved with the QGIS project and reopened with it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QObject, pyqtSignal

from .acquisitions import ACQUISITIONS, NO_CONFIDNET, short_label
from .corrections import Corrections
from .engine_loader import EngineLoader
from .exports import SessionExports
from .layers import ClassStyle, SessionLayers
from .library import SessionLibrary
from .lifecycle import SessionLife
from .navigation import PatchNavigation
from .project import ProjectPersistence
from .task_queue import TaskQueue
from .tasks import EngineTask

INFO, WARNING = Qgis.MessageLevel.Info, Qgis.MessageLevel.Warning


def predict_and_score(
    params: Any, reference: Path | None, names: list[str], monitor: Any
) -> tuple[Any, float | None]:
    """``run_predict`` (in a worker thread), and the map's mIoU against ``reference`` labels
    after a whole-raster update (None, and a notice why, for labels of another grid or model:
    the maps are shown all the same)."""
    from backend.errors import UserError
    from backend.predict.evaluation import LABEL_NODATA, read_labels, score
    from backend.predict.job import run_predict

    report = run_predict(params, monitor)
    if reference is None or params.refresh_region is not None:
        return report, None
    import numpy as np
    import rasterio

    try:
        labels = read_labels(reference)
        with rasterio.open(report.classes) as classes:
            predicted = classes.read(1)
        highest = int(np.max(labels, initial=0, where=labels != LABEL_NODATA))
        if highest >= len(names):
            raise UserError(f"they hold class {highest}, and the model has {len(names)} classes")
        return report, score(predicted, labels, names).miou
    except UserError as exc:  # labels of another raster or model: the map is fine, only no mIoU
        monitor.notice(f"no mIoU against the reference labels {reference.name}: {exc}")
        return report, None


class SessionController(
    TaskQueue,
    EngineLoader,
    SessionLife,
    SessionLibrary,
    Corrections,
    PatchNavigation,
    SessionExports,
    ProjectPersistence,
    QObject,
):
    """The session the dock, the click tool and the project work with (at most one at a time)."""

    changed = pyqtSignal()  # clicks, iterations, patches or maps changed
    busy_changed = pyqtSignal(bool, str)  # a task started (True, what) or ended (False, "")
    progress = pyqtSignal(int, str)
    message = pyqtSignal(str, object)  # text, Qgis.MessageLevel
    engine_ready = pyqtSignal(bool)  # the engine loaded (True) or could not be (False)
    session_opened = pyqtSignal()  # another session is in use: the dock shows its settings
    sessions_changed = pyqtSignal()  # the list of sessions changed (new, renamed, deleted)

    def __init__(self, canvas: Any, project: QgsProject | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.canvas = canvas
        self.project = project or QgsProject.instance()
        self.session = None
        self.layers: SessionLayers | None = None
        self.raster_layer: QgsRasterLayer | None = None
        self.task: EngineTask | None = None
        self.engine_loaded, self._loading_engine, self.gpu = False, False, ""
        self.acquisition = "entropy"
        self.mode = "ac"  # "ac" or "disca"
        self.view = "classes"  # which map the dock shows: "classes", "uncertainty" or "both"
        self.device = "auto"  # the dock's device choice
        self._settings: Any = None  # DiscaSettings and SialSettings, made once the engine is loaded
        self._sial_settings: Any = None
        self.current_class = 0
        self.reference: QgsRasterLayer | None = None
        self.pixel_size: float | None = None  # metres, for a raster without a CRS (new sessions)
        self.tree_view = None  # QGIS's Layers panel, when there is one: legends are opened in it
        self.last_error = ""
        self.known_sessions: list[str] = []
        self._closing: dict[Path, Any] = {}
        self.dock_states: dict[str, dict[str, Any]] = {}
        self._after: list[Callable[[], None]] = []
        self._update_pending = False
        self._visited: list[int] = []
        self._follow_project()

    # ------------------------------------------------------------------ state

    @property
    def settings(self) -> Any:
        """The DISCA settings of the rounds to come (what the dock's Advanced panel shows)."""
        if self._settings is None:
            from backend.learn.disca import DiscaSettings

            self._settings = DiscaSettings()
        return self._settings

    @settings.setter
    def settings(self, value: Any) -> None:
        self._settings = value

    @property
    def sial_settings(self) -> Any:
        if self._sial_settings is None:
            from backend.session.settings import SialSettings

            self._sial_settings = SialSettings.recommended()
        return self._sial_settings

    @sial_settings.setter
    def sial_settings(self, value: Any) -> None:
        self._sial_settings = value

    @property
    def is_sial(self) -> bool:
        """Whether the session's network learns from the clicks alone (SIAL rounds, its own
        settings) rather than being refined by DISCA with the dock's."""
        return self.session is not None and getattr(self.session.settings, "KIND", "") == "sial"

    def patch_score(self, sial: bool | None = None) -> str:
        """How the queue ranks patches: in AC mode a click only corrects its neighbourhood, so a
        rare class's errors count most (``class-weighted``); clicks that retrain rank by the
        ``mean`` uncertainty (backend/predict/patch_scores.py). A change of mode ranks the queue
        at the next update of the maps."""
        sial = self.is_sial if sial is None else sial
        return "mean" if sial or self.mode == "disca" else "class-weighted"

    @property
    def can_retrain(self) -> bool:
        return self.session is not None and (self.is_sial or self.mode == "disca")

    @property
    def has_confidnet(self) -> bool:
        return self.session is not None and self.session.bundle.confidnet is not None

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

    def say(self, text: str, level: Any = INFO) -> None:
        """One sentence for the analyst (the message bar, the dock's status line)."""
        self._say(text, level)

    def _say(self, text: str, level: Any = INFO) -> None:
        if level in (Qgis.MessageLevel.Warning, Qgis.MessageLevel.Critical):
            self.last_error = text  # kept for scripts and tests
        self.message.emit(text, level)

    # ------------------------------------------------------------------ predict

    def predict(
        self, region: tuple[int, int, int, int] | None = None, description: str | None = None
    ) -> None:
        """Update the maps: only the touched tiles after clicks, everything after retraining;
        ``region`` first refreshes just those pixels (the visible extent)."""
        if self.session is None:
            self._say("Start a session first.", WARNING)
            return
        if self.busy:
            self._update_pending = True
            return
        params = self.session.prediction(self.acquisition, region=region, patch_score=self.patch_score())
        reference, names = self._reference_path(), [c.name for c in self.classes]
        self._run(
            description or ("Updating the maps" if region else "Predicting"),
            lambda monitor: predict_and_score(params, reference, names, monitor),
            lambda result: self._show_prediction(*result),
        )

    def _show_prediction(self, report: Any, miou: float | None, first: bool = False) -> None:
        """A finished prediction into the session (its patches, its mIoU) and onto the canvas."""
        self.session.store_patches(report)
        if miou is not None:
            self.session.record_miou(round(miou, 2))
        if self.layers is None:
            self.layers = self._create_layers()
            self.layers.show(self.view)
        else:
            self.layers.refresh_maps(self.session.outputs, self.acquisition)
        if first:
            self._session_ready()
        else:
            self.changed.emit()

    # ------------------------------------------------------------------ the acquisition function

    def set_acquisition(self, key: str) -> bool:
        """Rank the patches by another function: with a session, a whole new prediction at once,
        announced with its estimated time (MC dropout costs five times entropy's)."""
        if key not in ACQUISITIONS:
            self._say(f"Unknown acquisition function '{key}'.", WARNING)
            return False
        if key == self.acquisition:
            return True
        if key == "confidnet" and self.session is not None and not self.has_confidnet:
            self._say(NO_CONFIDNET, WARNING)
            return False
        self.acquisition = key
        self.remember_state()
        if self.session is None:
            return True  # the next session's first prediction uses it
        estimate = self._estimate(key)
        self._say(f"Ranking by {short_label(key)}: a whole new prediction{estimate}.", INFO)
        self.predict(description=f"Switching to {short_label(key)}")
        return True

    def _estimate(self, key: str) -> str:
        """ ", N tiles, about S s" from the last run's time per tile, or ""."""
        try:
            run = json.loads((self.session.outputs / "run.json").read_text(encoding="utf-8"))
            per_tile = run["seconds"]["predict"] / max(int(run["tiles_computed"]), 1)
            per_tile /= ACQUISITIONS[run["acquisition"]].cost
            tiles = int(run["tile_count"])
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            return ""
        seconds = per_tile * tiles * ACQUISITIONS[key].cost
        when = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
        return f" of {tiles} tiles, about {when}"

    # ------------------------------------------------------------------ retrain

    def retrain(self) -> None:
        """One DISCA (or SIAL) round in the background, then the visible extent, then everything."""
        if self.session is None:
            self._say("Start a session first.", WARNING)
            return
        if not self.can_retrain:
            self._say("Retraining needs the AC + DISCA mode.", WARNING)
            return
        if self.busy:
            self._say("Wait for the running task to finish, or cancel it.", WARNING)
            return
        clicks = self.session.click_list()
        if not clicks:
            self._say("Click some corrections first: retraining learns from them.", WARNING)
            return
        method = "SIAL" if self.is_sial else "DISCA"
        session, settings = self.session, self.sial_settings if self.is_sial else self.settings

        def done(trained: Any) -> None:
            from backend.predict.held_classes import held_message

            session.commit_round(trained)
            report = trained.report
            if not report.kept:  # the round guard rolled it back: the map stays as it is
                self._say(f"Round not kept: {report.verdict.reason}.", WARNING)
                return
            self._say(
                f"Round {trained.iteration} ({method}): {report.steps} steps on {report.clicks} clicks "
                f"in {report.seconds:.1f} s.",
                INFO,
            )
            if report.verdict is not None and report.verdict.warning:
                self._say(f"Round {trained.iteration}: {report.verdict.warning}.", WARNING)
            held = held_message(trained.held_classes, [c.name for c in session.bundle.card.classes])
            if held:
                self._say(f"Round {trained.iteration}: {held}.", INFO)
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
