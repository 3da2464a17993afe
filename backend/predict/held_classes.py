"""Classes a retraining round may not put on the map: those no click names and the map lacks.

On imagery the model has never seen, a DISCA round moves the whole network on a handful of
clicks, and a class that nothing on the map showed and nobody asked for sometimes appears as a
scatter of pixels far from every click (LoveDA crop 2, which has no road: 30–58 px of road after
20 clicks on two seeds of five, a class at IoU 0 that took the crop from about 80 to 60 mIoU). The
clicks are the only evidence a round has, and they said nothing of that class, so after a round
it is held off the map: its probability is set to zero and the others renormalised, which moves
the uncertainty with it. One click of the class lets it back at once. Over LoveDA's three crops
and five seeds: 45.5 mIoU after 20 clicks instead of 42.7 (crop 2 79–83 on every seed), and no
change on imagery whose every class stays on the map (BENCHMARKS.md).

A class on under 0.1 % of the map counts as absent (``TRACE``): a trace of a class the initial
map shows on a few stray pixels is the model's noise, not a class the analyst has seen, and
rounds at a higher learning rate grew such a trace of road on LoveDA crop 2 into an IoU-0 class
(docs/experiments/weight-average-across-rounds.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch

from ..io.clicks import Click

TRACE = 0.001
"""A class on at most this share of the map's classified pixels counts as absent from it."""


def classes_to_hold(classes: np.ndarray, clicks: Sequence[Click], n_classes: int) -> tuple[int, ...]:
    """Classes absent from ``classes`` (a class map; nodata and other codes ≥ ``n_classes`` are
    ignored) that no click names: what the next round may not introduce."""
    return _absent_and_unnamed(_present(classes, n_classes), clicks)


def classes_to_hold_on(path: Path, clicks: Sequence[Click], n_classes: int) -> tuple[int, ...]:
    """:func:`classes_to_hold` for a class map on disk (read block by block); none without one."""
    if not path.exists():
        return ()
    counts = np.zeros(n_classes, dtype=np.int64)
    with rasterio.open(path) as dataset:
        for _, window in dataset.block_windows(1):
            counts += _counts(dataset.read(1, window=window), n_classes)
    return _absent_and_unnamed(_beyond_trace(counts), clicks)


def held_message(held: Sequence[int], names: Sequence[str]) -> str | None:
    """What the analyst is told after a round that held classes off the map (None: none held)."""
    if not held:
        return None
    listed = ", ".join(f"'{names[c]}'" for c in held)
    it = "it" if len(held) == 1 else "them"
    return (
        f"kept off the map: {listed} (no click names {it} and the map before the round had next to none); "
        "a click of a class where it belongs lets it back"
    )


def released(held: Sequence[int], clicks: Sequence[Click]) -> tuple[int, ...]:
    """``held`` less the classes a click now names (a click of a held class lets it back)."""
    named = {click.class_id for click in clicks}
    return tuple(c for c in held if c not in named)


def without_classes(probabilities: torch.Tensor, held: Sequence[int]) -> torch.Tensor:
    """``probabilities`` (classes first) with the ``held`` classes at zero and the rest
    renormalised; unchanged when every class is held."""
    if not held or len(held) >= probabilities.shape[0]:
        return probabilities
    kept = probabilities.clone()
    kept[list(held)] = 0
    total = kept.sum(dim=0, keepdim=True)
    return kept / total.clamp_min(torch.finfo(kept.dtype).tiny)


def _present(classes: np.ndarray, n_classes: int) -> np.ndarray:
    return _beyond_trace(_counts(classes, n_classes))


def _counts(classes: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(classes[classes < n_classes].ravel(), minlength=n_classes)[:n_classes]


def _beyond_trace(counts: np.ndarray) -> np.ndarray:
    """Which classes are on the map: on more than ``TRACE`` of its classified pixels."""
    return counts > TRACE * max(int(counts.sum()), 1)


def _absent_and_unnamed(present: np.ndarray, clicks: Sequence[Click]) -> tuple[int, ...]:
    named = {click.class_id for click in clicks}
    return tuple(c for c in range(len(present)) if not present[c] and c not in named)
