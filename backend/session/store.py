"""The session's GeoPackage: typed reads and transactional writes, nothing else.

Layers: ``clicks`` (points with class, iteration, time and source), ``patches`` (the ranked
queue with a status), ``iterations`` (one row per model version: checkpoint, metrics, timings),
``actions`` (the undo log) and ``session`` (settings). QGIS opens and edits the file natively.
A table edited by hand into something unreadable is one clear error, never a traceback.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from osgeo import ogr

from ..errors import UserError
from ..io.clicks import Click
from ..io.raster import RasterInfo

ogr.UseExceptions()

TABLES = ("clicks", "patches", "iterations", "actions", "session")


def now() -> str:
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
class QueuedPatch:
    patch_id: int
    rank: int
    score: float
    status: str  # "todo" or "done"
    extent: tuple[float, float, float, float]  # x min, y min, x max, y max in the raster's CRS


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
        self._insert("actions", {"kind": kind, "payload": json.dumps(payload), "created": now()})

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

    def replace_patches_from(self, patches: Path, done: set[int]) -> None:
        """The ranked queue from a prediction's ``patches.gpkg``; patches in ``done`` stay done."""
        source = ogr.Open(str(patches))
        rows = [
            (f["patch_id"], f["rank"], f["score"], "done" if f["patch_id"] in done else f["status"],
             f.GetGeometryRef().Clone())
            for f in source.GetLayerByName("patches")
        ]  # fmt: skip
        source = None
        self.replace_patches(rows)

    def replace_patches(self, rows: Sequence[tuple[int, int, float, str, ogr.Geometry]]) -> None:
        layer = self._layer("patches")
        for row in self._rows("patches"):
            layer.DeleteFeature(row["fid"])
        for patch_id, rank, score, status, polygon in rows:
            self._insert(
                "patches", {"patch_id": patch_id, "rank": rank, "score": score, "status": status}, polygon
            )
