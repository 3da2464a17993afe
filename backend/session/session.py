"""An interactive session: a raster, a model, the analyst's clicks and the model's history.

One GeoPackage (:mod:`.store`) with ``<name>.checkpoints/`` (the weights after each round,
:mod:`.checkpoints`) and ``<name>.outputs/`` (the latest maps and their per-tile cache) beside it.
Every change is one SQLite transaction, a checkpoint is complete before the row that refers to it
commits, one process writes at a time (:mod:`.lock`) and damaged checkpoints are skipped
(:mod:`.weights`): a process killed at any moment leaves the state before the action or after it.
Undo reverts the last action: a click added or removed, or a round (its weights come back exactly).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from osgeo import ogr

from .. import __version__
from ..errors import UserError
from ..io.clicks import Click
from ..io.outputs import CLASSES_FILE
from ..io.raster import RasterSource, inspect_raster
from ..learn.disca import DiscaSettings, RetrainReport
from ..model.bundle import load_bundle, save_bundle, sha256_of
from ..predict.held_classes import released
from ..predict.job import PredictParameters, PredictReport, run_predict
from ..progress import Monitor
from ..system.runtime import resolve_device
from .checkpoints import KEEP_CHECKPOINTS, checkpoint_name, remove_checkpoint, remove_orphans, to_prune
from .lock import SessionLock, released_on_failure
from .rounds import TrainedRound, classes_the_round_holds
from .settings import RoundSettings, settings_of_last_round, settings_or_damaged, settings_to_meta
from .store import Iteration, QueuedPatch, SessionStore, StoredClick, now
from .weights import SessionWeights

ogr.UseExceptions()

SESSION_FORMAT = 1


class Session:
    """The engine side of the analyst's loop: click, update, retrain, undo, export."""

    def __init__(self, path: Path, store: SessionStore, device: torch.device, lock: SessionLock | None):
        """``lock``: held by a writer; ``None`` opens the session for reading (nothing is written
        or removed then)."""
        self.path = path
        self.store = store
        self.device = device
        self.lock = lock
        self.notices: list[str] = []  # what the user should know (a damaged checkpoint …)
        meta = store.metadata()
        self.meta = meta  # written once at creation: safe to read from any thread
        try:
            self.raster = Path(meta["raster"])
            self.model_dir = Path(meta["model"])
        except (KeyError, TypeError):
            raise store.damaged("its 'session' table does not say which raster and model") from None
        self.info = inspect_raster(self.raster)
        self.pixel_size = meta.get("pixel_size_m")  # None: from the CRS, or not known
        self.settings = settings_or_damaged(store, meta.get("disca", {}))
        self.checkpoints = path.with_suffix(".checkpoints")
        self.outputs = path.with_suffix(".outputs")
        start = Path(meta["starting_weights"]) if meta.get("starting_weights") else None
        self.weights = SessionWeights(self.model_dir, start, self.checkpoints, device)
        self.bundle = self.weights.bundle
        self._iterations: list[Iteration] | None = None
        if lock is not None:
            remove_orphans(self.checkpoints, self.iterations())
        self._restore_weights()
        self.settings = settings_of_last_round(self.iterations()) or self.settings

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        path: str | Path,
        raster: str | Path,
        model_dir: str | Path,
        device: str = "auto",
        starting_weights: str | Path | None = None,
        settings: RoundSettings | None = None,
        pixel_size: float | None = None,
    ) -> Session:
        """A new session. ``starting_weights`` (a checkpoint or bundle weights file) continues the
        adaptation of an earlier image instead of starting from the bundle (DIAL's sequential
        learning). ``pixel_size``: the raster's, in metres, when it has no CRS (:mod:`..io.grid`)."""
        path = Path(path)
        info = inspect_raster(raster)
        bundle = load_bundle(model_dir)
        if path.exists():
            raise UserError(f"{path} already exists: open it, or choose another session file")
        if starting_weights is not None and Path(starting_weights).is_dir():  # another bundle
            starting_weights = Path(starting_weights) / load_bundle(starting_weights).card.weights_file
        with RasterSource(raster, bundle.card.input, pixel_size):
            pass  # checks the band count against the model, and the pixel size
        metadata = {
            "format": SESSION_FORMAT,
            "engine": __version__,
            "raster": str(Path(raster).resolve()),
            "model": str(Path(model_dir).resolve()),
            "model_sha256": bundle.card.weights_sha256,
            "starting_weights": str(Path(starting_weights).resolve()) if starting_weights else None,
            "disca": settings_to_meta(settings or DiscaSettings()),
            "pixel_size_m": pixel_size,
            "created": now(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with released_on_failure(SessionLock(path)) as lock:
            store = SessionStore.create(path, info, metadata)
            with store.transaction():
                store.insert_iteration(Iteration(0, "start", 0, "", "", None, None, now(), "{}"))
            return cls(path, store, resolve_device(device), lock)

    @classmethod
    def open(cls, path: str | Path, device: str = "auto", writer: bool = True) -> Session:
        """The session at ``path``; a writer holds its lock until :meth:`close`, a reader
        (``writer=False``: status, export) takes none and changes nothing."""
        path = Path(path)
        if writer and not path.is_file():
            raise UserError(f"session not found: {path}")
        with released_on_failure(SessionLock(path) if writer else None) as lock:
            return cls(path, SessionStore.open(path, writable=writer), resolve_device(device), lock)

    def close(self) -> None:
        self.store.close()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state

    def clicks(self) -> list[StoredClick]:
        return self.store.clicks()

    def click_list(self) -> list[Click]:
        return [c.as_click() for c in self.clicks()]

    def iterations(self) -> list[Iteration]:
        """Held in memory (this object is the only writer), so worker threads can read them."""
        if self._iterations is None:
            self._iterations = self.store.iterations()
        return list(self._iterations)

    @property
    def iteration(self) -> int:
        return self.iterations()[-1].iteration

    @property
    def current(self) -> Iteration:
        """The round whose weights the model has now: the newest intact one."""
        assert self.weights.current is not None
        return self.weights.current

    def current_checkpoint(self) -> Path | None:
        """The checkpoint whose weights the model has now (None: the starting weights)."""
        return self.checkpoints / self.current.checkpoint if self.current.checkpoint else None

    def held_classes(self, clicks: Sequence[Click] | None = None) -> tuple[int, ...]:
        """The classes the current round keeps off the map, less those a click names since."""
        details = json.loads(self.current.details or "{}")
        return released(details.get("held_classes", ()), self.click_list() if clicks is None else clicks)

    def model_key(self) -> str:
        """Identifies the current weights (for the prediction cache)."""
        return self.weights.key()

    # ------------------------------------------------------------------ clicks

    def add_click(self, row: int, col: int, class_id: int, source: str = "user") -> StoredClick:
        if not (0 <= row < self.info.height and 0 <= col < self.info.width):
            raise UserError(
                f"pixel ({row}, {col}) is outside the raster ({self.info.width} × {self.info.height})"
            )
        if not 0 <= class_id < self.bundle.card.n_classes:
            raise UserError(f"class {class_id} is not a class of the model")
        existing = self.clicks()
        click = StoredClick(
            click_id=max((c.click_id for c in existing), default=0) + 1,
            row=row,
            col=col,
            class_id=class_id,
            class_name=self.bundle.card.classes[class_id].name,
            iteration=self.iteration,
            created=now(),
            source=source,
        )
        with self.store.transaction():
            self.store.insert_click(click, self._point(row, col))
            self.store.push_action("add_click", {"click_id": click.click_id})
        return click

    def add_click_at(self, x: float, y: float, class_id: int, source: str = "user") -> StoredClick:
        """A click at map coordinates in the raster's CRS (QGIS's pixel convention without CRS)."""
        col, row = ~self.info.map_transform * (x, y)
        return self.add_click(int(row // 1), int(col // 1), class_id, source)

    def remove_click(self, click_id: int) -> None:
        click = next((c for c in self.clicks() if c.click_id == click_id), None)
        if click is None:
            raise UserError(f"no click {click_id} in this session")
        with self.store.transaction():
            self.store.delete_click(click_id)
            self.store.push_action("remove_click", asdict(click))

    def _point(self, row: int, col: int) -> ogr.Geometry:
        x, y = self.info.map_transform * (col + 0.5, row + 0.5)
        point = ogr.Geometry(ogr.wkbPoint)
        point.AddPoint_2D(x, y)
        return point

    # ------------------------------------------------------------------ model

    def retrain(self, settings: DiscaSettings | None = None, monitor: Monitor | None = None) -> RetrainReport:
        """One DISCA round on every click so far; the new weights become a checkpoint."""
        trained = self.train_round(self.click_list(), settings, monitor)
        self.commit_round(trained)
        return trained.report

    def train_round(
        self, clicks: Sequence[Click], settings: DiscaSettings | None = None, monitor: Monitor | None = None
    ) -> TrainedRound:
        """The compute half of :meth:`retrain` (safe in a worker thread: no database access).

        The network is trained in memory and its checkpoint file written; nothing refers to the
        file until :meth:`commit_round`, so a crash here loses nothing but the round itself.
        """
        if not clicks:
            raise UserError("no clicks to learn from: add some clicks first")
        if settings is not None:
            self.settings = settings
        self.settings.check()
        iteration = self.iteration + 1
        n_classes = self.bundle.card.n_classes
        held = classes_the_round_holds(self.settings, self.outputs / CLASSES_FILE, clicks, n_classes)
        with RasterSource(self.raster, self.bundle.card.input, self.pixel_size) as source:
            on_grid = source.grid.clicks_to_model(clicks)  # stored on raster pixels
            new = len(clicks) - self.weights.current.clicks  # since the round the model stands on
            name, report = self.weights.train(self.settings, source, on_grid, iteration, new, monitor)
        return TrainedRound(iteration, name, len(clicks), report, held)

    def commit_round(self, trained: TrainedRound) -> None:
        """The database half of :meth:`retrain` (on the session's thread); none for a rolled-back round."""
        if not trained.checkpoint:
            return
        details = {
            "settings": asdict(self.settings),
            "losses": trained.report.losses,
            "crops": trained.report.crops,
            **({"prior_shift": trained.report.prior_shift} if trained.report.prior_shift else {}),
            **({"held_classes": list(trained.held_classes)} if trained.held_classes else {}),
        }
        path = self.checkpoints / trained.checkpoint
        record = Iteration(
            iteration=trained.iteration,
            kind="retrain",
            clicks=trained.clicks,
            checkpoint=trained.checkpoint,
            sha256=sha256_of(path),
            miou=None,
            train_seconds=round(trained.report.seconds, 3),
            created=now(),
            details=json.dumps(details),
        )
        with self.store.transaction():
            self.store.insert_iteration(record)
            self.store.push_action("retrain", {"iteration": trained.iteration})
        self._iterations = None
        self.weights.current = record
        self._prune_checkpoints()

    def _restore_weights(self) -> None:
        notices = self.weights.restore(self.iterations(), self.store.damaged)
        suffix = " (undo removes the damaged round)" if self.lock is not None else ""
        self.notices.extend(notice + suffix for notice in notices)

    def _prune_checkpoints(self) -> None:
        """Delete the checkpoints older than the undo window; their rows say so first, so that a
        pruned round is never taken for a lost one."""
        old = to_prune(self.iterations())
        if not old:
            return
        with self.store.transaction():
            for record in old:
                details = {**json.loads(record.details or "{}"), "pruned": True}
                self.store.set_details(record.iteration, json.dumps(details))
        self._iterations = None
        for record in old:
            remove_checkpoint(self.checkpoints, record.checkpoint)

    # ------------------------------------------------------------------ undo

    def undo(self) -> str:
        """Revert the last action; returns what was undone."""
        with self.store.transaction():
            action = self.store.pop_action()
            if action is None:
                raise UserError("nothing to undo")
            kind, payload = action["kind"], action["payload"]
            if kind == "add_click":
                self.store.delete_click(payload["click_id"])
                message = f"removed click {payload['click_id']}"
            elif kind == "remove_click":
                click = StoredClick(**payload)
                self.store.insert_click(click, self._point(click.row, click.col))
                message = f"restored click {click.click_id}"
            else:
                iterations = self.iterations()
                if len(iterations) < 2 or iterations[-2].pruned:
                    raise UserError(f"only the last {KEEP_CHECKPOINTS} retraining rounds can be undone")
                self.store.delete_iteration(payload["iteration"])
                self._iterations = None
                message = f"undid retraining round {payload['iteration']}"
        if kind == "retrain":
            remove_checkpoint(self.checkpoints, checkpoint_name(payload["iteration"]))
            self._restore_weights()
        return message

    # ------------------------------------------------------------------ outputs

    def prediction(
        self,
        acquisition: str = "entropy",
        clicks: Sequence[Click] | None = None,
        region: tuple[int, int, int, int] | None = None,
        **options: Any,
    ) -> PredictParameters:
        """What :meth:`predict` runs; ``region`` (row0, col0, row1, col1) asks for a quick
        refresh of those tiles only (see :class:`PredictParameters`)."""
        return PredictParameters(
            raster=self.raster,
            out_dir=self.outputs,
            bundle=self.bundle,
            model_key=self.model_key(),
            click_list=list(self.click_list() if clicks is None else clicks),
            acquisition=acquisition,
            device=str(self.device),
            cache=True,
            refresh_region=region,
            pixel_size=self.pixel_size,
            held_classes=self.held_classes(clicks),
            **options,
        )

    def predict(
        self, acquisition: str = "entropy", monitor: Monitor | None = None, **options: Any
    ) -> PredictReport:
        """Class map, uncertainty and patches for the current weights and clicks.

        Only the tiles that changed clicks touch are recomputed when the weights are unchanged.
        """
        report = run_predict(self.prediction(acquisition, **options), monitor)
        self.store_patches(report)
        return report

    def store_patches(self, report: PredictReport) -> None:
        """Copy the ranked patches into the session (status 'todo'; done patches stay done)."""
        done = {p.patch_id for p in self.patches() if p.status == "done"}
        with self.store.transaction():
            self.store.replace_patches_from(report.patches, done)

    def patches(self) -> list[QueuedPatch]:
        """The ranked queue, rank 1 first."""
        return sorted(self.store.patches(), key=lambda p: p.rank)

    def set_patch_status(self, patch_id: int, status: str) -> None:
        with self.store.transaction():
            self.store.set_patch_status(patch_id, status)

    def record_miou(self, miou: float) -> None:
        with self.store.transaction():
            self.store.set_miou(self.iteration, miou)
        self._iterations = None

    def export_bundle(self, directory: str | Path) -> Path:
        """The adapted model as a bundle that loads like any other (the ConfidNet head with it)."""
        card = self.bundle.card
        adapted = {
            "from_model": card.name,
            "from_sha256": card.weights_sha256,
            "raster": str(self.raster),
            "clicks": len(self.clicks()),
            "rounds": self.iteration,
            self.settings.KIND: asdict(self.settings),
            "exported": now(),
        }
        card = card.with_updates(
            name=f"{card.name}-adapted", provenance={**card.provenance, "adapted": adapted}
        )
        return save_bundle(replace(self.bundle, card=card, directory=None), directory, dtype="float32")
