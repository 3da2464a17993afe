"""Correcting a network trained on sparse labels for the class shares those labels happen to have.

SIAL's annotator clicks every class about equally often, so the labels hold far more road and
water than the imagery does (on the Dubai tiles: land is 44 % of the pixels but 22 % of the
labels), and a network trained on them over-predicts the rare classes. Bayes' rule says how to
undo that: multiply each class's posterior by (its share in the imagery / its share in the
labels) and renormalise. The imagery's shares are not known, so they are estimated without any
label: as the mean of the network's own posteriors over the whole training imagery.

That mean is the first step of Saerens, Latinne and Decaestecker's EM ("Adjusting the outputs of
a classifier to new a priori probabilities", 2002), which ``experiments/prior.py`` runs to its
fixed point for comparison (``python -m experiments prior``). On six Dubai SIAL networks EM lands
near the true shares, yet correcting all the way to them, the true shares included, lowered
five of the six by 0.3 to 11 mIoU points: their posteriors are not calibrated, so Bayes' rule
over-corrects them. The mean moves the prior part of the way and gave −2.1 to +2.0 points on
the same networks (docs/experiments/sial-setups.md, set-up 6).

The adjustment, log(estimated share / label share) per class, is added to the bias of the
network's last layer: the bundle carries it, and prediction, blending and every acquisition
function see the corrected posteriors with no change of their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io.raster import RasterSource
from ..progress import Monitor
from .superpixels import SparseLabels

MAX_ADJUSTMENT = 3.0  # log-odds: a class the labels all but miss must not take over the map
MAX_WINDOWS = 400  # tile-sized windows read for the estimate (all of Dubai's five training tiles: 237)


@dataclass(frozen=True)
class PriorShift:
    """The class shares a network was trained on and those estimated for the imagery."""

    label_shares: tuple[float, ...]
    estimated_shares: tuple[float, ...]
    method: str = "mean posterior"  # how estimated_shares were estimated ("em" in earlier records)

    @property
    def adjustment(self) -> np.ndarray:
        """What is added to each class's logit."""
        ratio = np.log(np.asarray(self.estimated_shares) / np.asarray(self.label_shares))
        return np.clip(ratio, -MAX_ADJUSTMENT, MAX_ADJUSTMENT)

    def apply(self, network: nn.Module) -> None:
        _shift_output_bias(network, self.adjustment)

    def remove(self, network: nn.Module) -> None:
        """Undo :meth:`apply`, before the network trains on again."""
        _shift_output_bias(network, -self.adjustment)

    def to_json(self) -> dict[str, list[float]]:
        return {
            "label_shares": list(self.label_shares),  # full precision: a session takes them out again
            "estimated_shares": list(self.estimated_shares),
            "logit_adjustment": [round(float(a), 4) for a in self.adjustment],
            "method": self.method,
        }

    @classmethod
    def from_json(cls, data: dict[str, list[float]]) -> PriorShift:
        return cls(tuple(data["label_shares"]), tuple(data["estimated_shares"]), data.get("method", "em"))


def label_shares(labels: Sequence[SparseLabels], n_classes: int) -> np.ndarray:
    """Each class's share of the labelled pixels, with one pseudo-count per class so a class
    without labels gets a small share rather than none."""
    counts = np.ones(n_classes)
    for one in labels:
        counts += np.bincount(one.classes, minlength=n_classes)[:n_classes]
    return counts / counts.sum()


def sample_posteriors(
    probabilities_of: Sequence[Callable[[int, int, int, int], np.ndarray]],
    sources: Sequence[RasterSource],
    max_windows: int,
    size: int,
    seed: int,
    monitor: Monitor | None = None,
) -> np.ndarray:
    """The network's posteriors (N × classes) at every fourth pixel, in each direction, of the
    valid pixels of ``sources``: of all of them, read as a grid of ``size``-px windows, or of
    ``max_windows`` of those windows drawn at random where the grid has more.

    Covering the imagery whole makes the estimate the same on every run: a random sample of
    windows moved a weak network's corrected mIoU by two points (docs/experiments/sial-setups.md,
    set-up 6).
    ``probabilities_of[i](row, col, height, width)`` gives source i's class probabilities.
    """
    grid = [
        (which, row, col)
        for which, source in enumerate(sources)
        for row in range(0, source.info.height, size)
        for col in range(0, source.info.width, size)
    ]
    if len(grid) > max_windows:
        chosen = np.random.default_rng(seed).choice(len(grid), max_windows, replace=False)
        grid = [grid[k] for k in sorted(chosen)]
    monitor = monitor or Monitor()
    samples = []
    for done, (which, row, col) in enumerate(grid):
        monitor.check()
        monitor.report(
            done / len(grid), f"estimating the imagery's class shares: window {done + 1}/{len(grid)}"
        )
        info = sources[which].info
        height, width = min(size, info.height - row), min(size, info.width - col)
        probabilities = probabilities_of[which](row, col, height, width)[:, ::4, ::4]
        valid = sources[which].read_valid(row, col, height, width)[::4, ::4]
        samples.append(probabilities[:, valid].T)
    posteriors = np.concatenate(samples) if samples else np.empty((0, 0), np.float32)
    if not len(posteriors):
        raise UserError("the training rasters have no valid pixels to estimate class shares from")
    return posteriors


def estimate_prior_shift(
    labels: Sequence[SparseLabels],
    sources: Sequence[RasterSource],
    probabilities_of: Sequence[Callable[[int, int, int, int], np.ndarray]],
    n_classes: int,
    window: int,
    max_windows: int = MAX_WINDOWS,
    seed: int = 0,
    monitor: Monitor | None = None,
) -> PriorShift:
    """How far the labels' class shares sit from the imagery's, for the network whose
    probabilities over a window of source i ``probabilities_of[i]`` gives."""
    trained = label_shares(labels, n_classes)
    posteriors = sample_posteriors(probabilities_of, sources, max_windows, window, seed, monitor)
    estimate = posteriors.mean(axis=0, dtype=np.float64)
    return PriorShift(tuple(float(s) for s in trained), tuple(float(s) for s in estimate), "mean posterior")


def _output_layer(network: nn.Module) -> nn.Conv2d:
    """The convolution that makes the logits: the last one of the segmentation head."""
    head = getattr(network, "segmentation_head", network)
    convolutions = [m for m in head.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convolutions or convolutions[-1].bias is None:
        raise UserError("this network's output layer has no bias to carry a class-prior correction")
    return convolutions[-1]


def _shift_output_bias(network: nn.Module, adjustment: np.ndarray) -> None:
    bias = _output_layer(network).bias
    with torch.no_grad():
        bias += torch.as_tensor(adjustment, dtype=bias.dtype, device=bias.device)
