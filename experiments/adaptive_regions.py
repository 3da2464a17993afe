"""Adaptive superpixel queries (Kim et al., ICCV 2023): ask for one label per model-merged region.

1. Superpixels (SLIC) are computed on the image, window by window.
2. Neighbouring superpixels merge, with union-find, when their mean predicted class
   distributions are close (L1 distance below ``merge_distance``). The model decides how big a
   region is worth one question. A region stops growing at ``max_region`` pixels.
3. Regions are ranked by uncertainty per unit of annotation cost. One label costs the same
   whatever the region's size, so the score is the region's total uncertainty.
4. The simulated annotator answers a region with its dominant true class, and every pixel of the
   region takes that class (wrong where the region mixes classes: that noise is the price).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.io.raster import RasterSource
from backend.learn.superpixels import SparseLabels
from backend.predict.evaluation import LABEL_NODATA


@dataclass(frozen=True)
class RegionSettings:
    segment_size: int = 400  # target pixels per superpixel
    compactness: float = 10.0
    merge_distance: float = 0.25  # L1 distance between mean class distributions
    max_region: int = 20_000
    window: int = 512


def superpixels(source: RasterSource, settings: RegionSettings) -> np.ndarray:
    """Superpixel ids over the whole raster (−1 on nodata), computed window by window."""
    from skimage.segmentation import slic

    info = source.info
    labels = np.full((info.height, info.width), -1, dtype=np.int64)
    next_id = 0
    for row in range(0, info.height, settings.window):
        for col in range(0, info.width, settings.window):
            h, w = min(settings.window, info.height - row), min(settings.window, info.width - col)
            raw, valid = source.read_raw(row, col, h, w)
            if not valid.any():
                continue
            rgb = raw[:3] if raw.shape[0] >= 3 else np.repeat(raw[:1], 3, axis=0)
            low, high = np.percentile(rgb[:, valid], [2, 98], axis=1)
            image = np.clip((rgb - low[:, None, None]) / np.maximum(high - low, 1e-6)[:, None, None], 0, 1)
            n = max(1, int(valid.sum() // settings.segment_size))
            segments = slic(
                image.transpose(1, 2, 0),
                n_segments=n,
                compactness=settings.compactness,
                mask=valid,
                start_label=1,
            )
            segments = np.where(valid & (segments > 0), segments + next_id, -1)
            labels[row : row + h, col : col + w] = segments
            next_id = int(segments.max()) + 1 if (segments >= 0).any() else next_id
    return labels


def merge_regions(segments: np.ndarray, probabilities: np.ndarray, settings: RegionSettings) -> np.ndarray:
    """Regions: superpixels merged with their neighbours when their mean class distributions are close."""
    n = int(segments.max()) + 1
    flat = segments.ravel()
    valid = flat >= 0
    sizes = np.bincount(flat[valid], minlength=n).astype(np.float64)
    means = np.stack([np.bincount(flat[valid], weights=p.ravel()[valid], minlength=n) for p in probabilities])
    means = (means / np.maximum(sizes, 1)).T  # n × classes
    pairs = set()
    for a, b in ((segments[:, :-1], segments[:, 1:]), (segments[:-1, :], segments[1:, :])):
        touching = (a != b) & (a >= 0) & (b >= 0)
        pairs.update(zip(a[touching].tolist(), b[touching].tolist(), strict=True))
    parent = np.arange(n)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    region_size = sizes.copy()
    for a, b in sorted(pairs, key=lambda p: np.abs(means[p[0]] - means[p[1]]).sum()):
        ra, rb = root(a), root(b)
        if ra == rb or np.abs(means[a] - means[b]).sum() >= settings.merge_distance:
            continue
        if region_size[ra] + region_size[rb] > settings.max_region:
            continue
        parent[rb] = ra
        region_size[ra] += region_size[rb]
    roots = np.array([root(i) for i in range(n)])
    return np.where(segments >= 0, roots[np.maximum(segments, 0)], -1)


def rank_regions(regions: np.ndarray, uncertainty: np.ndarray, exclude: set[int] = frozenset()) -> list[int]:
    """Region ids, the most uncertainty per question first."""
    valid = (regions >= 0) & ~np.isnan(uncertainty)
    totals = np.bincount(regions[valid], weights=uncertainty[valid], minlength=int(regions.max()) + 1)
    order = np.argsort(-totals)
    return [int(r) for r in order if totals[r] > 0 and int(r) not in exclude]


def answer_region(regions: np.ndarray, region: int, truth: np.ndarray) -> SparseLabels | None:
    """The simulated annotator: the region's dominant true class on all its pixels."""
    rows, cols = np.nonzero(regions == region)
    known = truth[rows, cols]
    known = known[known != LABEL_NODATA]
    if known.size == 0:
        return None
    dominant = int(np.bincount(known).argmax())
    n = len(rows)
    return SparseLabels(
        rows.astype(np.int64), cols.astype(np.int64), np.full(n, dominant, np.int64), np.zeros(n, bool)
    )
