"""An interactive session: a raster, a model, the analyst's clicks and the model's history.

Everything lives next to one GeoPackage (QGIS opens and edits it natively):

- ``<name>.gpkg``, with these layers:
  - ``clicks``: points with class, iteration, time and source;
  - ``patches``: the ranked queue with a status;
  - ``iterations``: one row per model version (checkpoint, metrics, timings);
  - ``actions``: the undo log;
  - ``session``: settings.
- ``<name>.checkpoints/``: the weights after each retraining round (safetensors).
- ``<name>.outputs/``: the latest class map, uncertainty and patches, with the per-tile cache
  that makes a click's update cost only the tiles it touches.

**Never losing work.** Every change is one SQLite transaction. A checkpoint file is complete (written
to a temporary name, then renamed) before the transaction that refers to it commits. One process
writes at a time (:mod:`backend.session.lock`); a writer opening the session removes the
checkpoint files no row refers to, readers remove nothing. Each checkpoint is checked against the
SHA-256 recorded with it: a missing or damaged one is reported and the newest intact round is
used instead. So a process killed at any moment leaves either the state before the action or the
state after it, and the last good checkpoint is always usable.

**Undo.** It reverts the last action: a click added or removed, or a retraining round, which
brings the previous weights back exactly.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from osgeo import ogr

from .. import __version__
from ..errors import UserError
from ..io.clicks import Click
from ..io.raster import RasterInfo, RasterSource, inspect_raster
from ..learn.disca import Disca, DiscaSettings, RetrainReport, anchor_from
from ..learn.prior_shift import PriorShift
from ..learn.sparse_training import SparseSettings as TrainingSettings
from ..learn.sparse_training import SparseTrainer, window_probabilities
from ..learn.superpixels import ExpansionSettings, SparseLabels, expand_clicks
from ..model.bundle import load_bundle, save_bundle, sha256_of
from ..predict.job import PredictParameters, PredictReport, run_predict
from ..progress import Monitor
from ..system.diskspace import disk_full_error, is_disk_full
from ..system.runtime import resolve_device
from .lock import SessionLock

ogr.UseExceptions()

SESSION_FORMAT = 1
KEEP_CHECKPOINTS = 10
"""Retraining rounds that can be undone; older checkpoints are deleted to bound disk use."""
CHECKPOINT_NAME = re.compile(r"^round-\d{4,}\.safetensors(\.tmp)?$")
"""The only files this program writes (and so may remove) in a session's checkpoints folder."""
TABLES = ("clicks", "patches", "iterations", "actions", "session")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class StoredClick:
    click_id: int
    row: int
    col: int
    class_id: int
    class_name: str
    iteration: int
    created: str
    source: str

    def as_click(self) -> Click:
        return Click(self.row, self.col, self.class_id, self.click_id)


@dataclass(frozen=True)
class SparseSettings:
    """Session rounds the SIAL way (see :meth:`Session._train_sparse`), for a network trained
    from clicks alone; ``DiscaSettings`` refine a trained one."""

    training: TrainingSettings = field(default_factory=lambda: TrainingSettings(steps=300))
    expansion: ExpansionSettings | None = None

    @classmethod
    def recommended(cls) -> SparseSettings:
        """What the Dubai benchmarks found best (BENCHMARKS.md, SIAL set-ups 2–4): cross-entropy,
        each click spread over its SLIC superpixel with the sieve, the weights' moving average;
        300 steps of 128-px crops keep a round near a minute on a CPU."""
        return cls(TrainingSettings(steps=300, loss="ce", average=0.998), ExpansionSettings())

    def check(self) -> None:
        self.training.check()
        if self.expansion is not None:
            self.expansion.check()


@dataclass(frozen=True)
class QueuedPatch:
    patch_id: int
    rank: int
    score: float
    status: str  # "todo" or "done"
    extent: tuple[float, float, float, float]  # x min, y min, x max, y max in the raster's CRS


@dataclass(frozen=True)
class TrainedRound:
    """A retraining round computed but not yet recorded."""

    iteration: int
    checkpoint: str
    clicks: int
    report: RetrainReport


@dataclass(frozen=True)
class Iteration:
    iteration: int
    kind: str  # "start" or "retrain"
    clicks: int
    checkpoint: str  # file name in the checkpoints folder ("" for the starting weights)
    sha256: str
    miou: float | None
    train_seconds: float | None
    created: str
    details: str  # JSON: settings and losses of the round

    @property
    def pruned(self) -> bool:
        """Its checkpoint was deleted on purpose (older than the undo window)."""
        try:
            return bool(self.checkpoint and json.loads(self.details or "{}").get("pruned"))
        except (ValueError, AttributeError):
            return False


class SessionStore:
    """The GeoPackage itself: typed reads and transactional writes, nothing else."""

    def __init__(self, path: Path, source: ogr.DataSource, writable: bool = True):
        self.path, self.source, self.writable = path, source, writable

    @classmethod
    def create(cls, path: Path, info: RasterInfo, metadata: dict[str, Any]) -> SessionStore:
        if path.exists():
            raise UserError(f"{path} already exists: open it, or choose another session file")
        driver = ogr.GetDriverByName("GPKG")
        source = driver.CreateDataSource(str(path))
        srs = info.ogr_srs()
        layers = {
            "clicks": (srs, ogr.wkbPoint, [("click_id", ogr.OFTInteger), ("class_id", ogr.OFTInteger),
                                           ("class_name", ogr.OFTString), ("iteration", ogr.OFTInteger),
                                           ("created", ogr.OFTString), ("source", ogr.OFTString),
                                           ("row", ogr.OFTInteger), ("col", ogr.OFTInteger)]),
            "patches": (srs, ogr.wkbPolygon, [("patch_id", ogr.OFTInteger), ("rank", ogr.OFTInteger),
                                              ("score", ogr.OFTReal), ("status", ogr.OFTString)]),
            "iterations": (None, ogr.wkbNone, [("iteration", ogr.OFTInteger), ("kind", ogr.OFTString),
                                               ("clicks", ogr.OFTInteger), ("checkpoint", ogr.OFTString),
                                               ("sha256", ogr.OFTString), ("miou", ogr.OFTReal),
                                               ("train_seconds", ogr.OFTReal), ("created", ogr.OFTString),
                                               ("details", ogr.OFTString)]),
            "actions": (None, ogr.wkbNone, [("kind", ogr.OFTString), ("payload", ogr.OFTString),
                                            ("created", ogr.OFTString)]),
            "session": (None, ogr.wkbNone, [("key", ogr.OFTString), ("value", ogr.OFTString)]),
        }  # fmt: skip
        for name, (layer_srs, geometry, fields) in layers.items():
            layer = source.CreateLayer(name, layer_srs, geometry, options=["FID=fid"])
            for field_name, kind in fields:
                layer.CreateField(ogr.FieldDefn(field_name, kind))
        source = None  # closing writes the tables OGR creates lazily; transactions need them all
        store = cls.open(path)
        with store.transaction():
            for key, value in metadata.items():
                store._insert("session", {"key": key, "value": json.dumps(value)})
        return store

    @classmethod
    def open(cls, path: Path, writable: bool = True) -> SessionStore:
        if not path.is_file():
            raise UserError(f"session not found: {path}")
        try:
            source = ogr.Open(str(path), 1 if writable else 0)
        except RuntimeError as exc:
            raise UserError(f"{path} is not a session GeoPackage ({exc})") from None
        if source is None or source.GetLayerByName("iterations") is None:
            raise UserError(f"{path} is not a session GeoPackage (no 'iterations' table)")
        missing = [name for name in TABLES if source.GetLayerByName(name) is None]
        if missing:
            raise UserError(
                f"{path} is damaged: its {', '.join(repr(m) for m in missing)} table(s) are missing "
                "(edited outside this program?)"
            )
        source.ExecuteSQL("PRAGMA busy_timeout = 10000")  # QGIS may be reading the same file
        return cls(path, source, writable)

    def close(self) -> None:
        self.source = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if not self.writable:
            raise UserError(f"{self.path} is open for reading only here")
        self.source.StartTransaction()
        try:
            yield
        except BaseException:
            self.source.RollbackTransaction()
            raise
        self.source.CommitTransaction()

    # ------------------------------------------------------------------ rows

    def _layer(self, name: str) -> ogr.Layer:
        return self.source.GetLayerByName(name)

    def _insert(self, layer_name: str, values: dict[str, Any], geometry: ogr.Geometry | None = None) -> int:
        layer = self._layer(layer_name)
        feature = ogr.Feature(layer.GetLayerDefn())
        for key, value in values.items():
            if value is not None:
                feature.SetField(key, value)
        if geometry is not None:
            feature.SetGeometry(geometry)
        layer.CreateFeature(feature)
        return feature.GetFID()

    def _rows(self, layer_name: str) -> list[dict[str, Any]]:
        layer = self._layer(layer_name)
        layer.ResetReading()
        rows = []
        for feature in layer:
            row = feature.items()
            row["fid"] = feature.GetFID()
            rows.append(row)
        return sorted(rows, key=lambda r: r["fid"])

    def metadata(self) -> dict[str, Any]:
        values = {}
        for row in self._rows("session"):
            try:
                values[row["key"]] = json.loads(row["value"])
            except (KeyError, TypeError, ValueError, RecursionError):
                raise self.damaged(
                    f"the 'session' table's value for {row.get('key')!r} is not JSON"
                ) from None
        return values

    def damaged(self, what: str) -> UserError:
        return UserError(f"{self.path} is damaged: {what} (edited outside this program?)")

    def clicks(self) -> list[StoredClick]:
        """In the order they were made (a restored click keeps its place)."""
        try:
            clicks = [
                StoredClick(int(r["click_id"]), int(r["row"]), int(r["col"]), int(r["class_id"]),
                            str(r["class_name"]), int(r["iteration"]), r["created"], r["source"])
                for r in self._rows("clicks")
            ]  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise self.damaged("a row of its 'clicks' table lacks a value") from None
        return sorted(clicks, key=lambda c: c.click_id)

    def iterations(self) -> list[Iteration]:
        try:
            rows = [
                Iteration(int(r["iteration"]), str(r["kind"]), int(r["clicks"]), r["checkpoint"] or "",
                          r["sha256"] or "", r["miou"], r["train_seconds"], r["created"],
                          r["details"] or "{}")
                for r in self._rows("iterations")
            ]  # fmt: skip
        except (KeyError, TypeError, ValueError):
            raise self.damaged("a row of its 'iterations' table lacks a value") from None
        if not rows:
            raise self.damaged("its 'iterations' table is empty")
        return rows

    def actions(self) -> list[dict[str, Any]]:
        return self._rows("actions")

    def insert_click(self, click: StoredClick, point: ogr.Geometry) -> None:
        self._insert("clicks", asdict(click), point)

    def delete_click(self, click_id: int) -> None:
        for row in self._rows("clicks"):
            if row["click_id"] == click_id:
                self._layer("clicks").DeleteFeature(row["fid"])
                return
        raise UserError(f"no click {click_id} in this session")

    def insert_iteration(self, iteration: Iteration) -> None:
        self._insert("iterations", asdict(iteration))

    def delete_iteration(self, iteration: int) -> None:
        for row in self._rows("iterations"):
            if row["iteration"] == iteration:
                self._layer("iterations").DeleteFeature(row["fid"])

    def _update(self, layer_name: str, key: str, value: Any, field_name: str, new: Any) -> None:
        """Set ``field_name`` to ``new`` on the rows whose ``key`` equals ``value``."""
        layer = self._layer(layer_name)
        for row in self._rows(layer_name):
            if row[key] == value:
                feature = layer.GetFeature(row["fid"])
                feature.SetField(field_name, new)
                layer.SetFeature(feature)

    def set_miou(self, iteration: int, miou: float) -> None:
        self._update("iterations", "iteration", iteration, "miou", miou)

    def set_details(self, iteration: int, details: str) -> None:
        self._update("iterations", "iteration", iteration, "details", details)

    def push_action(self, kind: str, payload: dict[str, Any]) -> None:
        self._insert("actions", {"kind": kind, "payload": json.dumps(payload), "created": _now()})

    def pop_action(self) -> dict[str, Any] | None:
        actions = self.actions()
        if not actions:
            return None
        last = actions[-1]
        self._layer("actions").DeleteFeature(last["fid"])
        return {"kind": last["kind"], "payload": json.loads(last["payload"])}

    def patches(self) -> list[QueuedPatch]:
        patches = []
        for row in self._rows("patches"):
            feature = self._layer("patches").GetFeature(row["fid"])
            x0, x1, y0, y1 = feature.GetGeometryRef().GetEnvelope()
            patches.append(
                QueuedPatch(row["patch_id"], row["rank"], row["score"], row["status"], (x0, y0, x1, y1))
            )
        return patches

    def set_patch_status(self, patch_id: int, status: str) -> None:
        self._update("patches", "patch_id", patch_id, "status", status)

    def replace_patches(self, rows: Sequence[tuple[int, int, float, str, ogr.Geometry]]) -> None:
        layer = self._layer("patches")
        for row in self._rows("patches"):
            layer.DeleteFeature(row["fid"])
        for patch_id, rank, score, status, polygon in rows:
            self._insert(
                "patches", {"patch_id": patch_id, "rank": rank, "score": score, "status": status}, polygon
            )


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
        self.settings = _settings_or_damaged(store, meta.get("disca", {}))
        self.checkpoints = path.with_suffix(".checkpoints")
        self.outputs = path.with_suffix(".outputs")
        self.bundle = load_bundle(self.model_dir)
        # The anchor p₀ comes from the weights the session started with.
        self._anchor_network = load_bundle(self.model_dir).network
        if meta.get("starting_weights"):
            _load_state(self._anchor_network, Path(meta["starting_weights"]))
        self._anchor_network.to(device)
        self.bundle.network.to(device)
        self._disca: Disca | None = None
        self._iterations: list[Iteration] | None = None
        if lock is not None:
            self._remove_orphans()
        self.current = self._restore_weights()
        self.settings = self._settings_of_last_round() or self.settings

    def _settings_of_last_round(self) -> DiscaSettings | SparseSettings | None:
        """A reopened session trains on as its last round did (the creation settings are only
        the first round's), unless that round's record is from an incompatible version."""
        for record in reversed(self.iterations()):
            settings = json.loads(record.details or "{}").get("settings")
            if settings:
                try:
                    return settings_from_meta(
                        {"kind": "sial" if "training" in settings else "disca", **settings}
                    )
                except (TypeError, ValueError, AttributeError):
                    return None
        return None

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def create(
        cls,
        path: str | Path,
        raster: str | Path,
        model_dir: str | Path,
        device: str = "auto",
        starting_weights: str | Path | None = None,
        settings: DiscaSettings | None = None,
    ) -> Session:
        """A new session. ``starting_weights`` (a checkpoint or bundle weights file) continues the
        adaptation of an earlier image instead of starting from the bundle (DIAL's sequential
        learning)."""
        path = Path(path)
        info = inspect_raster(raster)
        bundle = load_bundle(model_dir)
        if path.exists():
            raise UserError(f"{path} already exists: open it, or choose another session file")
        if starting_weights is not None and Path(starting_weights).is_dir():  # another bundle
            starting_weights = Path(starting_weights) / load_bundle(starting_weights).card.weights_file
        with RasterSource(raster, bundle.card.input):
            pass  # checks the band count against the model
        metadata = {
            "format": SESSION_FORMAT,
            "engine": __version__,
            "raster": str(Path(raster).resolve()),
            "model": str(Path(model_dir).resolve()),
            "model_sha256": bundle.card.weights_sha256,
            "starting_weights": str(Path(starting_weights).resolve()) if starting_weights else None,
            "disca": settings_to_meta(settings or DiscaSettings()),
            "created": _now(),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = SessionLock(path)
        lock.acquire()
        try:
            store = SessionStore.create(path, info, metadata)
            with store.transaction():
                store.insert_iteration(Iteration(0, "start", 0, "", "", None, None, _now(), "{}"))
            return cls(path, store, resolve_device(device), lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: str | Path, device: str = "auto", writer: bool = True) -> Session:
        """The session at ``path``; a writer holds its lock until :meth:`close`, a reader
        (``writer=False``: status, export) takes none and changes nothing."""
        path = Path(path)
        lock = SessionLock(path) if writer else None
        if lock is not None:
            if not path.is_file():
                raise UserError(f"session not found: {path}")
            lock.acquire()
        try:
            return cls(path, SessionStore.open(path, writable=writer), resolve_device(device), lock)
        except BaseException:
            if lock is not None:
                lock.release()
            raise

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

    def current_checkpoint(self) -> Path | None:
        """The checkpoint whose weights the model has now (None: the starting weights)."""
        return self.checkpoints / self.current.checkpoint if self.current.checkpoint else None

    def model_key(self) -> str:
        """Identifies the current weights (for the prediction cache)."""
        current = self.current
        return current.sha256 or f"{self.bundle.card.weights_sha256}:{self.meta.get('starting_weights')}"

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
            created=_now(),
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
        with RasterSource(self.raster, self.bundle.card.input) as source:
            try:
                if isinstance(self.settings, SparseSettings):
                    report = self._train_sparse(source, clicks, monitor)
                else:
                    disca = self._disca_engine()
                    disca.settings = self.settings
                    report = disca.retrain(source, clicks, monitor)
                    # DISCA fine-tunes around a SIAL round's correction: it stays in the bias, and
                    # stays recorded so that the next SIAL round can take it out
                    previous = self._prior_in_weights()
                    report.prior_shift = previous.to_json() if previous is not None else None
            except BaseException:
                self._load_weights(self.current)  # the last good weights, untouched
                raise
        iteration = self.iteration + 1
        name = f"round-{iteration:04d}.safetensors"
        try:
            self.checkpoints.mkdir(exist_ok=True)
            _save_state(self.bundle.network, self.checkpoints / name)
        except BaseException:
            self._load_weights(self.current)
            raise
        return TrainedRound(iteration, name, len(clicks), report)

    def _train_sparse(
        self, source: RasterSource, clicks: Sequence[Click], monitor: Monitor | None
    ) -> RetrainReport:
        """SIAL's way: every click so far (optionally spread over its superpixel) as sparse ground
        truth, EWDL or cross-entropy, no anchor: for a network that starts from nothing."""
        started = time.perf_counter()
        settings = self.settings
        if settings.expansion is not None:
            sieve = window_probabilities(self.bundle.network, self.bundle.card, source, self.device)
            labels = expand_clicks(source, clicks, settings.expansion, sieve if self.iteration else None)
        else:
            labels = SparseLabels.from_clicks(clicks)
        trainer = SparseTrainer(self.bundle.network, self.bundle.card, self.device, settings.training)
        trainer.prior = self._prior_in_weights()  # taken out before training on, put back after
        losses = trainer.fit([(source, labels)], monitor)
        for parameter in self.bundle.network.parameters():
            parameter.requires_grad_(False)
        seconds = time.perf_counter() - started
        prior = trainer.prior.to_json() if trainer.prior is not None else None
        return RetrainReport(len(losses), len(labels), len(clicks), seconds, losses, prior_shift=prior)

    def _prior_in_weights(self) -> PriorShift | None:
        """The class-prior correction the current weights carry (a SIAL round may leave one)."""
        details = json.loads(self.current.details or "{}")
        return PriorShift.from_json(details["prior_shift"]) if details.get("prior_shift") else None

    def commit_round(self, trained: TrainedRound) -> None:
        """The database half of :meth:`retrain` (on the thread that owns the session)."""
        details = {
            "settings": asdict(self.settings),
            "losses": trained.report.losses,
            "crops": trained.report.crops,
            **({"prior_shift": trained.report.prior_shift} if trained.report.prior_shift else {}),
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
            created=_now(),
            details=json.dumps(details),
        )
        with self.store.transaction():
            self.store.insert_iteration(record)
            self.store.push_action("retrain", {"iteration": trained.iteration})
        self._iterations = None
        self.current = record
        self._prune_checkpoints()

    def _disca_engine(self) -> Disca:
        if self._disca is None:
            self._disca = Disca(
                self.bundle.network,
                self.bundle.card,
                anchor_from(self._anchor_network),
                self.device,
                self.settings,
            )
        return self._disca

    def _restore_weights(self) -> Iteration:
        """Load the newest round whose checkpoint is intact; returns its record.

        A missing or damaged checkpoint (its SHA-256 differs from the one recorded when it was
        written) is reported in :attr:`notices` and skipped, down to the starting weights (the
        first row, which has no checkpoint). Rounds pruned on purpose are skipped quietly.
        """
        skipped = []
        for record in reversed(self.iterations()):
            if record.pruned:
                continue
            problem = self._checkpoint_problem(record)
            if problem is None:
                break
            skipped.append(f"round {record.iteration}'s checkpoint {record.checkpoint} {problem}")
        else:  # the first row (the starting weights) has no checkpoint: only an edited table
            raise self.store.damaged("none of its rounds has intact weights")
        self._load_weights(record)
        if skipped:
            using = f"round {record.iteration}" if record.checkpoint else "the starting weights"
            self.notices.append(
                f"{'; '.join(skipped)}: the model is {using}, the newest intact round"
                + (" (undo removes the damaged round)" if self.lock is not None else "")
            )
        return record

    def _checkpoint_problem(self, record: Iteration) -> str | None:
        if not record.checkpoint:
            return None
        path = self.checkpoints / record.checkpoint
        if not path.is_file():
            return "is missing"
        if record.sha256 and sha256_of(path) != record.sha256:
            return "is damaged (its SHA-256 differs from the one recorded when it was written)"
        return None

    def _load_weights(self, record: Iteration) -> None:
        if not record.checkpoint:
            if self.meta.get("starting_weights"):
                _load_state(self.bundle.network, Path(self.meta["starting_weights"]))
            else:
                fresh = load_bundle(self.model_dir).network
                self.bundle.network.load_state_dict(fresh.state_dict())
        else:
            _load_state(self.bundle.network, self.checkpoints / record.checkpoint)
        self.bundle.network.to(self.device).eval()

    def _prune_checkpoints(self) -> None:
        """Delete the checkpoints older than the undo window; their rows say so first, so that a
        pruned round is never taken for a lost one."""
        records = self.iterations()
        old = [r for r in records[: -(KEEP_CHECKPOINTS + 1)] if r.checkpoint and not r.pruned]
        if not old:
            return
        with self.store.transaction():
            for record in old:
                details = {**json.loads(record.details or "{}"), "pruned": True}
                self.store.set_details(record.iteration, json.dumps(details))
        self._iterations = None
        for record in old:
            if CHECKPOINT_NAME.match(record.checkpoint):
                (self.checkpoints / record.checkpoint).unlink(missing_ok=True)

    def _remove_orphans(self) -> None:
        """Files a crash left behind: our temporary writes and checkpoints no row refers to.

        Only a writer calls this (it holds the lock, so no other process is writing one), and
        only names this program writes are considered.
        """
        if not self.checkpoints.is_dir():
            return
        referenced = {i.checkpoint for i in self.iterations() if i.checkpoint}
        for path in self.checkpoints.iterdir():
            if CHECKPOINT_NAME.match(path.name) and path.name not in referenced and path.is_file():
                path.unlink()

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
            (self.checkpoints / f"round-{payload['iteration']:04d}.safetensors").unlink(missing_ok=True)
            self.current = self._restore_weights()
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
        source = ogr.Open(str(report.patches))
        layer = source.GetLayerByName("patches")
        rows = [
            (f["patch_id"], f["rank"], f["score"], "done" if f["patch_id"] in done else f["status"],
             f.GetGeometryRef().Clone())
            for f in layer
        ]  # fmt: skip
        source = None
        with self.store.transaction():
            self.store.replace_patches(rows)

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
        """The adapted model as a bundle that loads like any other."""
        card = self.bundle.card
        provenance = dict(card.provenance)
        provenance["adapted"] = {
            "from_model": card.name,
            "from_sha256": card.weights_sha256,
            "raster": str(self.raster),
            "clicks": len(self.clicks()),
            "rounds": self.iteration,
            ("sial" if isinstance(self.settings, SparseSettings) else "disca"): asdict(self.settings),
            "exported": _now(),
        }
        adapted = card.with_updates(name=f"{card.name}-adapted", provenance=provenance)
        bundle = replace(self.bundle, card=adapted, directory=None)  # the ConfidNet head travels with it
        return save_bundle(bundle, directory, dtype="float32")


def settings_to_meta(settings: DiscaSettings | SparseSettings) -> dict[str, Any]:
    return {"kind": "sial" if isinstance(settings, SparseSettings) else "disca", **asdict(settings)}


def settings_from_meta(data: dict[str, Any]) -> DiscaSettings | SparseSettings:
    data = dict(data)
    if data.pop("kind", "disca") != "sial":
        return DiscaSettings(**data)
    expansion = data.get("expansion")
    return SparseSettings(
        training=TrainingSettings(**data["training"]),
        expansion=ExpansionSettings(**expansion) if expansion else None,
    )


def _settings_or_damaged(store: SessionStore, data: Any) -> DiscaSettings | SparseSettings:
    try:
        return settings_from_meta(dict(data))
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise store.damaged(f"its retraining settings are not valid ({exc})") from None


def _save_state(network: torch.nn.Module, path: Path) -> None:
    """Weights (float32) written atomically: a checkpoint file is either complete or absent."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in network.state_dict().items()}, str(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if not isinstance(exc, UserError) and is_disk_full(exc):
            raise disk_full_error(path.parent) from None
        raise


def _load_state(network: torch.nn.Module, path: Path) -> None:
    """Weights from ``path`` into ``network``; one clear error if they are not this network's."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as exc:
        raise UserError(f"cannot read weights {path}: {exc}") from None
    expected = network.state_dict()
    wrong = sorted(set(expected) ^ set(state)) or [
        k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise UserError(f"the weights in {path} are not this session's model (first mismatch: {wrong[0]})")
    network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
