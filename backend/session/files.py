"""A session's own files: finding the sessions in a folder, naming them, deleting one.

A session ``S.gpkg`` owns exactly these, all written by this program:

- ``S.gpkg``, with the ``-journal``/``-wal``/``-shm`` files SQLite may keep beside it;
- in ``S.checkpoints/``: the ``round-NNNN.safetensors`` files (and their ``.tmp``);
- in ``S.outputs/``: the names its ownership manifest lists, the manifest, the tile cache's own
  files in ``.sial-cache/`` and staging folders (see :mod:`backend.system.ownership`);
- ``S.sial-lock``;
- ``S-model/``, when it is the untrained bundle a SIAL session made for itself there: its card,
  weights and head.

:func:`delete_session` removes those and nothing else, under the session's lock (a session
another process has open is refused, and nothing is removed). A file of someone else's in one
of those folders stays, and so does its folder; the report says what was kept.

Listing reads the GeoPackage with SQLite, read-only, and imports neither torch nor rasterio, so
QGIS lists a folder of sessions in milliseconds on its GUI thread.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import re
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..system.ownership import MANIFEST, written_here
from .lock import SUFFIX as LOCK_SUFFIX
from .lock import SessionLock

LABEL_KEY = "label"
SQLITE_SIDECARS = ("-journal", "-wal", "-shm")
CACHE_FOLDER = ".sial-cache"  # backend.predict.reuse.CACHE_DIR, without importing the predictor
CHECKPOINT_FILE = re.compile(r"^round-\d{4,}\.safetensors(\.tmp)?$")  # as .checkpoints writes them
BUNDLE_CARD = "model.json"


@dataclass(frozen=True)
class SessionSummary:
    """What a list of sessions shows about one, read without opening it for writing."""

    path: Path
    label: str
    raster: Path
    model: Path
    created: str  # ISO 8601, UTC
    clicks: int
    rounds: int
    kind: str  # "disca" (a trained model refined) or "sial" (a network learnt from clicks)


@dataclass
class Deletion:
    """What :func:`delete_session` removed, and what it left because it is not the session's."""

    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def default_label(raster: str | Path, model: str, created: str) -> str:
    """``raster · model · YYYY-MM-DD HH:MM`` (local time): tells sessions of one raster apart."""
    try:
        when = datetime.datetime.fromisoformat(created).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        when = created
    return f"{Path(raster).stem} · {model} · {when}"


def read_summary(path: str | Path) -> SessionSummary | None:
    """The session at ``path``, or None when it is not a session's GeoPackage."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
        ) as db:
            meta = {key: _json(value) for key, value in db.execute("SELECT key, value FROM session")}
            clicks = db.execute("SELECT count(*) FROM clicks").fetchone()[0]
            rounds = db.execute("SELECT count(*) FROM iterations WHERE kind = 'retrain'").fetchone()[0]
    except sqlite3.Error:
        return None
    if not isinstance(meta.get("raster"), str) or not isinstance(meta.get("model"), str):
        return None
    created = str(meta.get("created", ""))
    model = Path(meta["model"])
    label = meta.get(LABEL_KEY)
    settings = meta.get("disca") if isinstance(meta.get("disca"), dict) else {}
    return SessionSummary(
        path=path,
        label=label
        if isinstance(label, str) and label.strip()
        else default_label(meta["raster"], model.name, created),
        raster=Path(meta["raster"]),
        model=model,
        created=created,
        clicks=int(clicks),
        rounds=int(rounds),
        kind="sial" if settings.get("kind") == "sial" else "disca",
    )


def find_sessions(folder: str | Path) -> list[SessionSummary]:
    """The sessions in ``folder`` (not below it), newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [s for p in folder.glob("*.gpkg") if (s := read_summary(p)) is not None]
    return sorted(found, key=lambda s: (s.created, s.path.name), reverse=True)


def set_label(path: str | Path, label: str) -> None:
    """Name the session (what the dock lists and its layer group shows); under its lock, so a
    session another process writes is refused with the engine's "busy" error."""
    from .store import SessionStore

    label = " ".join(label.split())
    if not label:
        raise UserError("a session's name cannot be empty")
    path = Path(path)
    lock = SessionLock(path)
    lock.acquire()
    try:
        store = SessionStore.open(path)
        try:
            with store.transaction():
                if LABEL_KEY in store.metadata():
                    store._update("session", "key", LABEL_KEY, "value", json.dumps(label))
                else:
                    store._insert("session", {"key": LABEL_KEY, "value": json.dumps(label)})
        finally:
            store.close()
    finally:
        lock.release()


def delete_session(path: str | Path, before: Callable[[], None] | None = None) -> Deletion:
    """Remove the session's own files (see the module's docstring); refuse, removing nothing,
    while another process has it open. ``before()`` runs once the session's lock is held, just
    before anything is removed (QGIS closes the session's layers then)."""
    path = Path(path)
    summary = read_summary(path)
    if summary is None:
        raise UserError(f"{path} is not a session: nothing was deleted")
    lock = SessionLock(path)
    lock.acquire()  # "session … is busy" when another process writes it
    deletion = Deletion()
    try:
        if before is not None:
            before()
        _remove_checkpoints(path.with_suffix(".checkpoints"), deletion)
        _remove_outputs(path.with_suffix(".outputs"), deletion)
        model = path.with_name(f"{path.stem}-model")
        if summary.kind == "sial" and _same(summary.model, model):
            remove_new_model(model, deletion)
        for sidecar in SQLITE_SIDECARS:
            _unlink(path.with_name(path.name + sidecar), deletion)
        _unlink(path, deletion)  # last: until here the session still opens, and can be deleted again
    finally:
        lock.release()
    _unlink(path.with_suffix(LOCK_SUFFIX), deletion)
    return deletion


def remove_new_model(folder: Path, deletion: Deletion | None = None) -> Deletion:
    """Remove an untrained bundle this program made for a SIAL session (its card, weights and
    head, then the folder if nothing else is in it). Such a bundle is named after its folder and
    its card says it was never trained; any other folder is left alone."""
    deletion = deletion if deletion is not None else Deletion()
    card = _card(folder)
    provenance = card.get("provenance") if card is not None else None
    untrained = isinstance(provenance, dict) and str(provenance.get("training", "")).startswith("none")
    if card is None or not untrained or card.get("name") != folder.name:  # made for this folder
        if folder.exists():
            deletion.kept.append(folder)
        return deletion
    names = {
        BUNDLE_CARD,
        str(card.get("weights", {}).get("file") or ""),
        str(card.get("confidnet", {}).get("file") or ""),
    }
    for name in sorted(n for n in names if n and "/" not in n and "\\" not in n and n != BUNDLE_CARD):
        _unlink(folder / name, deletion)
    _unlink(folder / BUNDLE_CARD, deletion)  # the card last: a half-removed bundle is no bundle
    _rmdir(folder, deletion)
    return deletion


def _remove_checkpoints(folder: Path, deletion: Deletion) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if CHECKPOINT_FILE.match(path.name) and path.is_file():
            _unlink(path, deletion)
    _rmdir(folder, deletion)


def _remove_outputs(folder: Path, deletion: Deletion) -> None:
    from ..io.cache import OWN_FILES as CACHE_FILES  # here: listing sessions needs neither numpy
    from ..io.outputs import STAGING_PREFIX  # nor rasterio

    if not folder.is_dir():
        return
    cache = folder / CACHE_FOLDER
    if cache.is_dir():
        for name in CACHE_FILES:
            _unlink(cache / name, deletion)
        _rmdir(cache, deletion)
    for staging in folder.glob(f"{STAGING_PREFIX}*"):
        if staging.is_dir() and not staging.is_symlink():
            shutil.rmtree(staging, ignore_errors=True)
            deletion.removed.append(staging)
    for name in sorted(written_here(folder)):
        if "/" not in name and "\\" not in name:
            _unlink(folder / name, deletion)
    for manifest in (folder / MANIFEST, *folder.glob(f"{MANIFEST}.*.tmp")):
        _unlink(manifest, deletion)
    _rmdir(folder, deletion)


def _unlink(path: Path, deletion: Deletion) -> None:
    if path.is_file() or path.is_symlink():
        path.unlink()
        deletion.removed.append(path)


def _rmdir(folder: Path, deletion: Deletion) -> None:
    if not folder.is_dir():
        return
    try:
        folder.rmdir()  # only when nothing else is in it
    except OSError:
        deletion.kept.extend(sorted(folder.iterdir()))
    else:
        deletion.removed.append(folder)


def _card(folder: Path) -> dict[str, Any] | None:
    try:
        card = json.loads((folder / BUNDLE_CARD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) and card.get("format") == "sial-model-bundle" else None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _json(value: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return None
