"""Patch scores: which patch the analyst (or DIAL's annotator) should look at next.

Two rules (``PATCH_SCORES``):

- ``mean``: the patch's mean uncertainty. For clicks that retrain the model (AC + DISCA): its
  first patches are mixed, uncertain almost everywhere, and a round learns from clicks of
  several classes.
- ``class-weighted``: each pixel's uncertainty weighted by how rare its predicted class is on the
  whole map, w_c = 1 / (K · max(share_c, 1 %)), K the classes on the map. For clicks that only
  correct their neighbourhood (AC): mIoU, like an analyst, weighs every class alike, so an
  error in a rare class is worth more. On Dubai tile 2 the mean ranks urban mixes first, where
  one AC click gains 0.01–0.07 mIoU, and AC in that order ended behind random order; weighted,
  ahead on both validation tiles (BENCHMARKS.md, *Which patch first*). Equal to the mean on a
  map whose classes are equally frequent.

Sums are kept per patch and predicted class whatever the rule, so either rule ranks the same
sums, a block streams in once, a patch can be scored again after an update (``reset`` then
``add``), and blocks computed apart (Dask) merge by addition.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from ..errors import UserError
from ..io.outputs import CLASS_NODATA, MapBlock, PatchScore
from ..io.raster import RasterInfo, inspect_raster
from ..io.tiling import Patch, patch_grid

PATCH_SCORES = ("mean", "class-weighted")
"""The rules a patch can be scored by; the first is the default."""
PATCH_SUMS = "per-class-1"
"""The form of the patch sums in the tile cache's key: a cache whose sums are not per class
(before 2026-12-07) is not reused."""
SHARE_FLOOR = 0.01
"""A class on less of the map than this weighs as if it covered this much (a few stray pixels
of a class must not outrank everything else)."""


class PatchScores:
    """Running sums of uncertainty and valid-pixel counts per patch and predicted class."""

    def __init__(
        self, patches: Sequence[Patch], patch_size: int, width: int, n_classes: int, rule: str = "mean"
    ):
        if rule not in PATCH_SCORES:
            raise UserError(f"patches are scored by {' or '.join(PATCH_SCORES)}, not {rule!r}")
        self.patches = list(patches)
        self.rule = rule
        self.size = patch_size
        self.per_row = -(-width // patch_size)
        self.n_classes = n_classes
        self.total = np.zeros((len(self.patches), n_classes), dtype=np.float64)  # Σ uncertainty
        self.pixels = np.zeros((len(self.patches), n_classes), dtype=np.int64)
        self._weights: np.ndarray | None = None
        self._count: np.ndarray | None = None

    @property
    def count(self) -> np.ndarray:
        """Valid pixels per patch."""
        if self._count is None:
            self._count = self.pixels.sum(axis=1)
        return self._count

    def _changed(self) -> None:
        self._weights = self._count = None

    def add(self, block: MapBlock) -> None:
        """Add a block whose left edge is a patch boundary (it may span several patches)."""
        assert block.col % self.size == 0, "blocks must start on a patch boundary"
        height, width = block.valid.shape
        n_columns, k = -(-width // self.size), self.n_classes
        column_bins = (np.arange(width, dtype=np.int32) // self.size * k)[None, :]  # its patch, × K
        row = block.row
        while row < block.row + height:  # one row of patches at a time: one bincount each
            patch_row = row // self.size
            end = min((patch_row + 1) * self.size, block.row + height)
            segment = slice(row - block.row, end - block.row)
            valid = block.valid[segment]
            bins, values = column_bins + block.classes[segment], block.uncertainty[segment]
            if valid.all():
                bins, values = bins.ravel(), values.ravel()
            else:
                bins, values = bins[valid], values[valid]
            first = patch_row * self.per_row + block.col // self.size
            targets = slice(first, first + n_columns)
            self.total[targets] += np.bincount(bins, values, n_columns * k).reshape(n_columns, k)
            self.pixels[targets] += np.bincount(bins, minlength=n_columns * k).reshape(n_columns, k)
            row = end
        self._changed()

    def merge(self, indices: Sequence[int], other: PatchScores) -> None:
        """Add ``other``'s sums (a block's patches, in order) to the patches at ``indices``."""
        self.total[list(indices)] += other.total
        self.pixels[list(indices)] += other.pixels
        self._changed()

    def reset(self, indices: Sequence[int]) -> None:
        self.total[list(indices)] = 0.0
        self.pixels[list(indices)] = 0
        self._changed()

    def class_weights(self) -> np.ndarray:
        """w_c = 1 / (K · max(share_c, SHARE_FLOOR)) over the whole map (1 where nothing is yet)."""
        if self._weights is None:
            on_map = self.pixels.sum(axis=0).astype(np.float64)
            total = on_map.sum()
            weights = np.ones(self.n_classes)
            if total > 0:
                present = max(int((on_map > 0).sum()), 1)
                weights = 1.0 / (present * np.maximum(on_map / total, SHARE_FLOOR))
            self._weights = weights
        return self._weights

    def score(self, index: int) -> float | None:
        count = int(self.count[index])
        if not count:
            return None
        if self.rule == "mean":
            return float(self.total[index].sum() / count)
        return float(self.total[index] @ self.class_weights() / count)

    def valid_fraction(self, index: int) -> float:
        p = self.patches[index]
        return float(self.count[index]) / (p.width * p.height)

    def patch_scores(self) -> list[PatchScore]:
        """Every patch's score and valid fraction, as ``write_patches`` ranks them."""
        return [PatchScore(p, self.score(p.index), self.valid_fraction(p.index)) for p in self.patches]

    def as_json(self) -> dict[str, list[list[float]]]:
        return {"total": self.total.tolist(), "pixels": self.pixels.tolist()}

    def load_json(self, data: dict[str, list[list[float]]]) -> None:
        self.total = np.asarray(data["total"], dtype=np.float64).reshape(len(self.patches), self.n_classes)
        self.pixels = np.asarray(data["pixels"], dtype=np.int64).reshape(len(self.patches), self.n_classes)
        self._changed()


def scores_of_maps(
    uncertainty: Path, patch_size: int, classes: Path | None = None
) -> tuple[RasterInfo, list[PatchScore]]:
    """The patch scores of maps already written (Processing's *Rank patches*): ``class-weighted``
    by the class map where it is given, else the ``mean``. Read one row of patches at a time."""
    info = inspect_raster(uncertainty)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(uncertainty) as u, rasterio.open(classes) if classes else nullcontext() as c:
            if c is not None and (c.width, c.height) != (u.width, u.height):
                raise UserError(
                    f"the class map is {c.width} × {c.height} px and the uncertainty {u.width} × {u.height}: "
                    "give the two maps of one prediction"
                )
            strips = [
                Window(0, row, u.width, min(patch_size, u.height - row))
                for row in range(0, u.height, patch_size)
            ]
            n_classes = 1
            if c is not None:  # the largest class on the map sizes the sums
                n_classes += max(int(_valid_classes(c.read(1, window=w)).max(initial=0)) for w in strips)
            rule = "mean" if c is None else "class-weighted"
            patches = patch_grid(u.width, u.height, patch_size)
            scores = PatchScores(patches, patch_size, u.width, n_classes, rule)
            for window in strips:
                values = u.read(1, window=window, masked=True).astype(np.float32).filled(np.nan)
                valid = np.isfinite(values)
                labels = np.zeros(values.shape, np.uint8) if c is None else c.read(1, window=window)
                valid &= labels != CLASS_NODATA
                scores.add(MapBlock(int(window.row_off), 0, labels, values, valid))
    return info, scores.patch_scores()


def _valid_classes(labels: np.ndarray) -> np.ndarray:
    return labels[labels != CLASS_NODATA]
