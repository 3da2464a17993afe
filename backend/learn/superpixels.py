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
from skimage.segmentation import felzenszwalb, slic  # here, not in the round: 0.5 s the analyst waited

from ..errors import UserError
from ..io.clicks import Click
from ..io.raster import RasterSource

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
        if self.segment_size < 1:
            raise UserError("the superpixel size must be at least one pixel")
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
    if settings.method == "felzenszwalb":
        labels = felzenszwalb(
            image, scale=settings.segment_size, sigma=0.8, min_size=settings.segment_size // 4
        )
        return np.where(valid, labels, -1)
    n_segments = max(1, int(valid.sum() // settings.segment_size))
    labels = slic(image, n_segments=n_segments, compactness=settings.compactness, mask=valid, start_label=1)
    return np.where(valid, labels, -1)


def _click_window(
    source: RasterSource, click: Click, settings: ExpansionSettings
) -> tuple[int, int, int, int]:
    """(row0, col0, height, width): the window around ``click`` that superpixels and sieve look at."""
    info, half = source.info, settings.window // 2
    row0 = min(max(click.row - half, 0), max(info.height - settings.window, 0))
    col0 = min(max(click.col - half, 0), max(info.width - settings.window, 0))
    return row0, col0, min(settings.window, info.height), min(settings.window, info.width)


def superpixel_mask(
    source: RasterSource, click: Click, settings: ExpansionSettings
) -> tuple[int, int, np.ndarray]:
    """(row0, col0, mask) of the superpixel holding ``click``; mask is False outside valid data."""
    row0, col0, height, width = _click_window(source, click, settings)
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


def superpixel_pixels(
    source: RasterSource, click: Click, settings: ExpansionSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns (raster coordinates) of the superpixel holding ``click``."""
    row0, col0, mask = superpixel_mask(source, click, settings)
    rows, cols = np.nonzero(mask)
    return rows + row0, cols + col0


SuperpixelCache = dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]
"""(row, col) of a click → its superpixel's pixels: they depend only on the image and settings."""


def expand_clicks(
    source: RasterSource,
    clicks: Sequence[Click],
    settings: ExpansionSettings | None = None,
    probabilities: ProbabilityWindow | None = None,
    cache: SuperpixelCache | None = None,
) -> SparseLabels:
    """Clicks plus the pixels their superpixels add (see the module's docstring).

    ``cache`` (one per raster and settings) keeps the superpixels between calls, as clicks pile up.
    """
    settings = settings or ExpansionSettings()
    settings.check()
    cache = {} if cache is None else cache
    width = source.info.width
    flat, owner = [], []
    for click in clicks:
        if (click.row, click.col) not in cache:
            cache[(click.row, click.col)] = superpixel_pixels(source, click, settings)
        rows, cols = cache[(click.row, click.col)]
        if settings.sieve is not None and probabilities is not None:
            row0, col0, *size = _click_window(source, click, settings)
            p = probabilities(row0, col0, *size)[:, rows - row0, cols - col0]
            keep = (p.argmax(axis=0) == click.class_id) | (p.max(axis=0) < settings.sieve)
            rows, cols = rows[keep], cols[keep]
        flat.append(rows * width + cols)
        owner.append(np.full(len(rows), click.class_id, dtype=np.int64))
    clicked = {c.row * width + c.col: c.class_id for c in clicks}
    clicked_pixels = np.fromiter(clicked, dtype=np.int64, count=len(clicked))
    # a pixel joins the labels when exactly one class claims it and no click already sits there
    claims = np.stack([np.concatenate(flat), np.concatenate(owner)]) if flat else np.empty((2, 0), np.int64)
    pairs = np.unique(claims, axis=1)
    pixels, claimants = np.unique(pairs[0], return_counts=True)
    added = pairs[:, np.isin(pairs[0], pixels[claimants == 1]) & ~np.isin(pairs[0], clicked_pixels)]
    every = np.concatenate([added[0], clicked_pixels])
    return SparseLabels(
        every // width,
        every % width,
        np.concatenate([added[1], np.fromiter(clicked.values(), dtype=np.int64, count=len(clicked))]),
        np.concatenate([np.zeros(added.shape[1], bool), np.ones(len(clicked), bool)]),
    )


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
