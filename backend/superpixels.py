"""Spreading a click's class over its superpixel (LSSQPS), sieved by the model (Adaptive Superpixel).

A superpixel is computed on the image in a window around each click, SLIC or Felzenszwalb
from scikit-image. The click's class then covers the click's superpixel, with three limits:
- never onto nodata;
- never where the current model says another class with at least ``sieve`` probability;
- never onto a pixel that clicks of different classes both claim.

The result is a set of labelled pixels, the clicks' own always included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .clicks import Click
from .errors import UserError
from .raster import RasterSource

METHODS = ("slic", "felzenszwalb")
ProbabilityWindow = Callable[[int, int, int, int], np.ndarray]
"""(row, col, height, width) → the current model's class probabilities there, C × h × w."""


@dataclass(frozen=True)
class ExpansionSettings:
    method: str = "slic"
    window: int = 96  # superpixels are computed on this window around each click
    segment_size: int = 150  # target pixels per superpixel
    compactness: float = 10.0
    sieve: float | None = 0.8  # None: keep every pixel of the superpixel

    def check(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"superpixel method must be one of {', '.join(METHODS)}, not {self.method}")
        if self.sieve is not None and not 0.0 < self.sieve <= 1.0:
            raise UserError("the sieve threshold must lie in (0, 1]")


@dataclass
class SparseLabels:
    """Labelled pixels of one raster: row, col, class, and whether a click made it."""

    rows: np.ndarray
    cols: np.ndarray
    classes: np.ndarray
    clicked: np.ndarray

    @classmethod
    def from_clicks(cls, clicks: Sequence[Click]) -> SparseLabels:
        n = len(clicks)
        return cls(
            np.array([c.row for c in clicks], dtype=np.int64).reshape(n),
            np.array([c.col for c in clicks], dtype=np.int64).reshape(n),
            np.array([c.class_id for c in clicks], dtype=np.int64).reshape(n),
            np.ones(n, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.rows)


def _segments(image: np.ndarray, valid: np.ndarray, settings: ExpansionSettings) -> np.ndarray:
    from skimage.segmentation import felzenszwalb, slic

    if settings.method == "felzenszwalb":
        labels = felzenszwalb(
            image, scale=settings.segment_size, sigma=0.8, min_size=settings.segment_size // 4
        )
        return np.where(valid, labels, -1)
    n_segments = max(1, int(valid.sum() // settings.segment_size))
    labels = slic(image, n_segments=n_segments, compactness=settings.compactness, mask=valid, start_label=1)
    return np.where(valid, labels, -1)


def superpixel_mask(
    source: RasterSource, click: Click, settings: ExpansionSettings
) -> tuple[int, int, np.ndarray]:
    """(row0, col0, mask) of the superpixel holding ``click``; mask is False outside valid data."""
    info, half = source.info, settings.window // 2
    row0 = min(max(click.row - half, 0), max(info.height - settings.window, 0))
    col0 = min(max(click.col - half, 0), max(info.width - settings.window, 0))
    height, width = min(settings.window, info.height), min(settings.window, info.width)
    raw, valid = source.read_raw(row0, col0, height, width)
    rgb = raw[:3] if raw.shape[0] >= 3 else np.repeat(raw[:1], 3, axis=0)
    low = np.percentile(rgb[:, valid], 2, axis=1)[:, None, None] if valid.any() else 0.0
    high = np.percentile(rgb[:, valid], 98, axis=1)[:, None, None] if valid.any() else 1.0
    image = np.clip((rgb - low) / np.maximum(high - low, 1e-6), 0, 1).transpose(1, 2, 0)
    segments = _segments(image, valid, settings)
    own = segments[click.row - row0, click.col - col0]
    mask = (segments == own) & valid if own >= 0 else np.zeros_like(valid)
    mask[click.row - row0, click.col - col0] = valid[click.row - row0, click.col - col0]
    return row0, col0, mask


def expand_clicks(
    source: RasterSource,
    clicks: Sequence[Click],
    settings: ExpansionSettings | None = None,
    probabilities: ProbabilityWindow | None = None,
) -> SparseLabels:
    """Clicks plus the pixels their superpixels add (see the module's docstring)."""
    settings = settings or ExpansionSettings()
    settings.check()
    claims: dict[tuple[int, int], set[int]] = {}
    for click in clicks:
        row0, col0, mask = superpixel_mask(source, click, settings)
        if settings.sieve is not None and probabilities is not None:
            p = probabilities(row0, col0, *mask.shape)
            disagree = (p.argmax(axis=0) != click.class_id) & (p.max(axis=0) >= settings.sieve)
            mask &= ~disagree
        rows, cols = np.nonzero(mask)
        for r, c in zip(rows + row0, cols + col0, strict=True):
            claims.setdefault((int(r), int(c)), set()).add(click.class_id)
    clicked = {(c.row, c.col): c.class_id for c in clicks}
    pixels = [(rc, next(iter(k))) for rc, k in claims.items() if len(k) == 1 and rc not in clicked]
    pixels += list(clicked.items())
    rows = np.array([p[0][0] for p in pixels], dtype=np.int64)
    cols = np.array([p[0][1] for p in pixels], dtype=np.int64)
    classes = np.array([p[1] for p in pixels], dtype=np.int64)
    is_click = np.array([p[0] in clicked for p in pixels], dtype=bool)
    return SparseLabels(rows, cols, classes, is_click)


def label_quality(labels: SparseLabels, truth: np.ndarray) -> dict[str, float]:
    """How much the expansion adds and how often it is wrong, against reference labels."""
    known = truth[labels.rows, labels.cols] != 255
    wrong = known & (truth[labels.rows, labels.cols] != labels.classes)
    added = ~labels.clicked
    return {
        "clicks": int(labels.clicked.sum()),
        "labelled_pixels": len(labels),
        "added_pixels": int(added.sum()),
        "added_error_rate": float(wrong[added].sum() / max(1, (known & added).sum())),
        "click_error_rate": float(wrong[labels.clicked].sum() / max(1, (known & labels.clicked).sum())),
    }
