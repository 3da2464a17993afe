"""Per-tile network outputs kept on disk, so new clicks recompute only the tiles they touch.

One file holds every tile's outputs as float32 (classes + optional uncertainty channel: about
1.3 GB for a 6000 × 6000 raster, so it is opt-in for the CLI); storing them any coarser would
make an update differ from a full prediction by more than float rounding.
``cache.json`` says what they were computed from. The cache marks itself ``updating`` before any
write and ``ready`` after, so a crash in between invalidates it instead of corrupting results.
Plain reads and writes at offsets, not a memory map: mapped pages would count as resident memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..system.ownership import remove_own_files

TILES_FILE = "tiles.f32"
META_FILE = "cache.json"
OWN_FILES = (TILES_FILE, META_FILE, META_FILE + ".tmp")
"""Everything the cache ever writes in its folder: all that it ever removes there."""


class TileCache:
    def __init__(self, directory: Path, n_tiles: int, channels: int, tile: int):
        self.directory = Path(directory)
        self.n_tiles, self.channels, self.tile = n_tiles, channels, tile
        self.tile_bytes = channels * tile * tile * 4
        self.path = self.directory / TILES_FILE

    # -------------------------------------------------------------- lifecycle

    @classmethod
    def create(
        cls, directory: Path, n_tiles: int, channels: int, tile: int, key: dict[str, Any]
    ) -> TileCache:
        discard(directory)
        directory.mkdir(parents=True, exist_ok=True)
        cache = cls(directory, n_tiles, channels, tile)
        cache._write_meta({"state": "updating", "key": key, "clicks": [], "patches": None})
        with open(cache.path, "wb") as handle:
            handle.truncate(n_tiles * cache.tile_bytes)
        return cache

    @classmethod
    def open(cls, directory: Path, key: dict[str, Any], ignore: tuple[str, ...] = ()) -> TileCache | None:
        """The cache in ``directory`` if it is complete and was computed for ``key`` (the entries
        named in ``ignore`` may differ)."""
        meta = read_meta(directory)
        if meta is None or meta.get("state") != "ready":
            return None
        stored = {k: v for k, v in meta.get("key", {}).items() if k not in ignore}
        if stored != {k: v for k, v in key.items() if k not in ignore}:
            return None
        shape = meta.get("shape", [0, 0, 0])
        cache = cls(directory, *shape)
        if not cache.path.is_file() or cache.path.stat().st_size != cache.n_tiles * cache.tile_bytes:
            return None
        return cache

    def meta(self) -> dict[str, Any]:
        meta = read_meta(self.directory)
        assert meta is not None
        return meta

    def mark_updating(self) -> None:
        meta = self.meta()
        meta["state"] = "updating"
        self._write_meta(meta)

    def mark_ready(
        self,
        clicks: list[tuple[int, int, int]],
        patches: dict[str, list[float]],
        key: dict[str, Any] | None = None,
    ) -> None:
        meta = self.meta()
        meta.update(
            state="ready",
            clicks=[list(c) for c in clicks],
            patches=patches,
            shape=[self.n_tiles, self.channels, self.tile],
        )
        if key is not None:
            meta["key"] = key
        self._write_meta(meta)

    def _write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self.directory / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.directory / META_FILE)

    # -------------------------------------------------------------- tiles

    def store(self, tile_index: int, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=np.float32)
        assert data.shape == (self.channels, self.tile, self.tile)
        with open(self.path, "r+b") as handle:
            os.pwrite(handle.fileno(), data.tobytes(), tile_index * self.tile_bytes)

    def load(self, tile_index: int) -> np.ndarray:
        with open(self.path, "rb") as handle:
            raw = os.pread(handle.fileno(), self.tile_bytes, tile_index * self.tile_bytes)
        return np.frombuffer(raw, dtype=np.float32).reshape(self.channels, self.tile, self.tile).copy()


def discard(directory: Path) -> None:
    """Remove a cache (its own files only; the folder too if nothing else is in it)."""
    if Path(directory).is_dir():
        remove_own_files(Path(directory), OWN_FILES)


def is_ready(directory: Path) -> bool:
    meta = read_meta(directory)
    return meta is not None and meta.get("state") == "ready"


def read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(directory) / META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
