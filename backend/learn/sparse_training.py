"""Training from sparse labels only (SIAL): a network learns from clicks spread over rasters.

Each step takes crops centred (with jitter) on labelled pixels drawn at random, flips and rotates
them, and computes SIAL's Error-Weighted Dice Loss (or cross-entropy) over the labelled pixels
in the crops. The optimiser (AdamW) carries on from one iteration to the next, as the labels
grow: predict → clicks on errors → train → … Its learning rate decays (cosine) within each
iteration's training, so every iteration ends on small steps. Optionally the weights that
leave each iteration are an exponential moving average of its steps (``average``), not the last
step's: a network trained on few, noisy labels swings from step to step, and the average does not.
Superpixel-added labels are wrong where a superpixel straddles two classes; ``drop_noisy`` leaves
out, in every batch, that share of the added labels the network fits worst (small-loss selection,
as in Co-teaching), ramping up over the first half of the steps. Clicks are always kept.
Two options bring the dense training's habits over: ``colour_jitter`` (the same brightness,
contrast, gain and gamma jitter) and ``balance_classes``, which centres crops on each class
equally often, not in proportion to its labelled pixels (a superpixel of land holds hundreds of
labels, a road click's superpixel a few dozen).
Self-training: a fit may also take pseudo-labels, the pixels a previous network was confident
about (:func:`confident_pseudo_labels`), which fill the crops around the labels where nothing
else labels them; the small-loss selection treats them like the superpixel-added labels.
``max_scale`` brings over the dense training's third habit, scale augmentation: each crop is
read from a window up to that factor larger or smaller and resized, and every label in the window
lands on the resized crop, however sparse (a click is one pixel; nearest-neighbour resizing
would drop it).
Two terms learn from the unlabelled pixels, which are most of every crop. ``consistency``
(FixMatch's unlabelled term with a mean teacher, CutMix as the perturbation, as in French et
al. 2020): the weights' moving average predicts each crop, crops are pasted into each other, and
the network must give the pasted crops the classes the average was confident of. ``affinity``
(BoxInst's pairwise term, Tian et al. 2021): neighbouring pixels of nearly the same colour should
share a class, which carries each label along homogeneous ground to the nearest edge. Both wait
for the network to learn something first (:func:`unlabelled_ramp`).
``adjust_prior`` ends each fit by correcting the network for the class shares of its labels
(:mod:`.prior_shift`); the next fit takes the correction out again before it trains on.

Fine-tuning an already trained model on a few labels (the region-query benchmark) borrows two
things from DISCA, or the labels wreck it: frozen BatchNorm, and λ·L1 to the starting model's
prediction over each crop.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..errors import UserError
from ..io.outputs import CLASS_NODATA
from ..io.raster import RasterSource
from ..model.card import ModelCard
from ..model.network import bfloat16_if_supported, freeze_batchnorm, softmax_probabilities
from ..progress import Monitor
from .disca import anchor_from
from .losses import anchor_l1, colour_affinity, confident_consistency, error_weighted_dice
from .prior_shift import PriorShift, estimate_prior_shift
from .superpixels import SparseLabels
from .training import colour_jitter

IGNORE = 255
AFFINITY_DILATION = 2  # neighbours this many pixels apart (BoxInst's choice)
AFFINITY_DISTANCE = 0.04  # colours closer than this (about 10 of 255 per band) count as one surface


@dataclass(frozen=True)
class SparseSettings:
    steps: int = 400
    batch: int = 8
    crop: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "ewdl"  # "ewdl" (SIAL) or "ce"
    error_weight: float = 5.0
    seed: int = 0
    freeze_batchnorm: bool = False  # fine-tuning a trained model on few pixels: keep its statistics
    anchor_weight: float = 0.0  # λ of DISCA's L1 to the starting model's prediction (0: none)
    average: float = 0.0  # decay of the weights' moving average each fit ends on (0: the last step's)
    drop_noisy: float = 0.0  # share of superpixel-added labels left out per batch, the worst-fitted
    colour_jitter: float = 0.0  # strength of the dense training's colour jitter (0: none)
    balance_classes: bool = False  # centre crops on every labelled class equally often
    max_scale: float = 1.0  # crops read at a scale drawn log-uniformly in [1 / max_scale, max_scale]
    consistency: float = 0.0  # weight of the moving average's CutMix consistency on unlabelled pixels
    consistency_threshold: float = 0.9  # the moving average's confidence a pseudo-label needs
    affinity: float = 0.0  # weight of the colour-affinity term (neighbours of one colour share a class)
    adjust_prior: bool = False  # correct the output for the labels' class shares (prior_shift.py)

    def check(self) -> None:
        if self.loss not in ("ewdl", "ce"):
            raise UserError(f"loss must be ewdl or ce, not {self.loss}")
        if self.crop % 32:
            raise UserError(f"crop must be a multiple of 32, not {self.crop}")
        if not 0.0 <= self.average < 1.0:
            raise UserError(f"the weight-average decay must lie in [0, 1), not {self.average}")
        if not 0.0 <= self.drop_noisy < 1.0:
            raise UserError(f"the share of added labels to drop must lie in [0, 1), not {self.drop_noisy}")
        if not 0.0 <= self.colour_jitter < 1.0:
            raise UserError(f"the colour jitter must lie in [0, 1), not {self.colour_jitter}")
        if self.consistency < 0 or self.affinity < 0:
            raise UserError("the consistency and affinity weights cannot be negative")
        if self.consistency and not self.average:
            raise UserError("the consistency term's teacher is the weights' moving average: it needs average")
        if not 0.0 < self.consistency_threshold <= 1.0:
            raise UserError(f"the consistency threshold must lie in (0, 1], not {self.consistency_threshold}")
        if not 1.0 <= self.max_scale <= 2.0:
            raise UserError(f"the largest crop scale must lie in [1, 2], not {self.max_scale}")


def _moving_average(network: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of the weights and BatchNorm statistics; its decay ramps up
    over the first steps so the average does not cling to where the fit started."""

    def blend(average: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        keep = min(decay, (1.0 + float(count)) / (10.0 + float(count)))
        return average + (current - average) * (1.0 - keep)

    return AveragedModel(network, avg_fn=blend, use_buffers=True)


def small_loss_selection(
    losses: torch.Tensor, labelled: torch.Tensor, clicked: torch.Tensor, share: float
) -> torch.Tensor:
    """The labelled pixels to learn from: every click, and the added labels but the ``share`` of
    them with the highest loss (the likeliest to be wrong)."""
    added = labelled & ~clicked
    n_drop = int(share * int(added.sum()))
    if n_drop == 0:
        return labelled
    threshold = torch.topk(losses[added], n_drop).values[-1]
    return labelled & (clicked | (losses < threshold))


def confident_pseudo_labels(classes: np.ndarray, probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """A raster of pseudo-labels (uint8, IGNORE elsewhere): the predicted class wherever the
    network's probability for it reaches ``threshold`` and the image has data."""
    confident = (probabilities.max(axis=0) >= threshold) & (classes != CLASS_NODATA)
    return np.where(confident, classes, IGNORE).astype(np.uint8)


class SparseTrainer:
    def __init__(self, network: nn.Module, card: ModelCard, device: torch.device, settings: SparseSettings):
        settings.check()
        self.network, self.card, self.device, self.settings = network.to(device), card, device, settings
        self.optimizer = torch.optim.AdamW(
            network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        self.rng = np.random.default_rng(settings.seed)
        self.anchor = anchor_from(copy.deepcopy(network)) if settings.anchor_weight > 0 else None
        self.prior: PriorShift | None = None  # the correction the last fit left in the network

    def _crop(
        self, source: RasterSource, labels: SparseLabels, index: int, pseudo: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image, target with IGNORE where unlabelled, clicked mask, validity) of one jittered,
        turned crop."""
        size, info = self.settings.crop, source.info
        side = self._side(size, info.height, info.width)
        jitter = self.rng.integers(-side // 4, side // 4 + 1, size=2)
        row = int(np.clip(labels.rows[index] - side // 2 + jitter[0], 0, max(info.height - side, 0)))
        col = int(np.clip(labels.cols[index] - side // 2 + jitter[1], 0, max(info.width - side, 0)))
        image, valid = source.read_normalized(row, col, side, side)
        target = np.full((side, side), IGNORE, dtype=np.int64)
        if pseudo is not None:  # the sparse labels below take precedence
            window = pseudo[row : row + side, col : col + side]
            target[: window.shape[0], : window.shape[1]] = window
        inside = (
            (labels.rows >= row)
            & (labels.rows < row + side)
            & (labels.cols >= col)
            & (labels.cols < col + side)
        )
        rows, cols = labels.rows[inside] - row, labels.cols[inside] - col
        if side != size:  # every label lands on the resized crop, however sparse (no nearest-neighbour loss)
            image, valid, target = _resize(image, size), _resize(valid, size), _resize(target, size)
            rows, cols = (rows * size) // side, (cols * size) // side
        target[rows, cols] = labels.classes[inside]
        clicked = np.zeros((size, size), dtype=bool)
        clicked[rows, cols] = labels.clicked[inside]
        turns = int(self.rng.integers(0, 4))
        image = np.rot90(image, turns, (1, 2))
        target, clicked, valid = np.rot90(target, turns), np.rot90(clicked, turns), np.rot90(valid, turns)
        if self.rng.random() < 0.5:
            image, target, clicked = image[:, :, ::-1], target[:, ::-1], clicked[:, ::-1]
            valid = valid[:, ::-1]
        if self.settings.colour_jitter:
            image = self._jitter(image, valid)
        if self.card.clicks.enabled:  # a model with click channels trains with them empty
            image = np.concatenate([image, np.zeros((self.card.n_classes, size, size), np.float32)])
        return tuple(np.ascontiguousarray(a) for a in (image, target, clicked, valid))

    def _batch(
        self,
        centre: Callable[[], tuple[int, int]],
        data: Sequence[tuple[RasterSource, SparseLabels, np.ndarray | None]],
    ) -> tuple[torch.Tensor, ...]:
        """(images, targets, clicked, validity) of ``batch`` crops, on the device."""
        crops = []
        for _ in range(self.settings.batch):
            which, index = centre()
            source, labels, around = data[which]
            crops.append(self._crop(source, labels, index, around))
        return tuple(torch.from_numpy(np.stack(parts)).to(self.device) for parts in zip(*crops, strict=True))

    def _unit_colours(self, x: torch.Tensor) -> torch.Tensor:
        """The data bands of a normalised batch back in the [0, 1] range normalisation maps from."""
        norm, bands = self.card.input.normalization, len(self.card.input.bands)
        mean = torch.tensor(norm.mean, dtype=x.dtype, device=x.device)[None, :, None, None]
        std = torch.tensor(norm.std, dtype=x.dtype, device=x.device)[None, :, None, None]
        return x[:, :bands] * std + mean

    def _side(self, size: int, height: int, width: int) -> int:
        """The side of the window a crop is read from: ``size`` scaled (the dense training's scale
        augmentation), never more than the raster holds, never less than ``size`` when it is larger."""
        if self.settings.max_scale == 1.0:
            return size
        log_scale = np.log(self.settings.max_scale)
        side = round(size * float(np.exp(self.rng.uniform(-log_scale, log_scale))))
        return min(side, max(size, min(height, width)))

    def _jitter(self, image: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The dense training's colour jitter, applied in the [0, 1] range normalisation maps from."""
        norm = self.card.input.normalization
        mean = np.asarray(norm.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(norm.std, dtype=np.float32)[:, None, None]
        unit = np.clip(image * std + mean, 0.0, 1.0)
        image = (colour_jitter(unit, self.settings.colour_jitter, self.rng) - mean) / std
        image[:, ~valid] = 0.0
        return image

    def _crop_centres(
        self, data: Sequence[tuple[RasterSource, SparseLabels, np.ndarray | None]]
    ) -> Callable[[], tuple[int, int]]:
        """A function drawing (raster, labelled pixel) to centre a crop on: every labelled pixel
        equally likely, or with ``balance_classes`` every class that has labels equally likely."""
        rng = self.rng
        if not self.settings.balance_classes:
            counts = np.array([len(lbl) for _, lbl, _ in data], dtype=np.float64)

            def uniform() -> tuple[int, int]:
                which = int(rng.choice(len(data), p=counts / counts.sum()))
                return which, int(rng.integers(0, len(data[which][1])))

            return uniform
        members = {  # class → one array of that class's label indices per raster
            c: [np.flatnonzero(lbl.classes == c) for _, lbl, _ in data]
            for c in np.unique(np.concatenate([lbl.classes for _, lbl, _ in data]))
        }
        classes = sorted(members)

        def balanced() -> tuple[int, int]:
            per_raster = members[classes[int(rng.integers(0, len(classes)))]]
            sizes = np.array([len(m) for m in per_raster], dtype=np.float64)
            which = int(rng.choice(len(data), p=sizes / sizes.sum()))
            return which, int(per_raster[which][rng.integers(0, len(per_raster[which]))])

        return balanced

    def fit(
        self,
        data: Sequence[tuple[RasterSource, SparseLabels]],
        monitor: Monitor | None = None,
        pseudo_labels: Sequence[np.ndarray] | None = None,
    ) -> list[float]:
        """``settings.steps`` steps over the labelled pixels of every raster, with each raster's
        pseudo-labels (if given, one per raster) around them; returns the losses."""
        monitor = monitor or Monitor()
        if pseudo_labels is not None and self.settings.adjust_prior:
            raise UserError("the class-prior correction knows the sparse labels' shares, not pseudo-labels'")
        pseudo = list(pseudo_labels) if pseudo_labels is not None else [None] * len(data)
        data = [(s, lbl, p) for (s, lbl), p in zip(data, pseudo, strict=True) if len(lbl)]
        if not data:
            raise UserError("no labelled pixels to learn from")
        centre = self._crop_centres(data)
        network, settings = self.network, self.settings
        network.train()
        for parameter in network.parameters():
            parameter.requires_grad_(True)
        if settings.freeze_batchnorm:
            freeze_batchnorm(network)
        dtype = bfloat16_if_supported(self.device)

        def half_precision() -> torch.autocast:
            return torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)

        average = _moving_average(network, settings.average) if settings.average else None
        if average is not None:
            average.module.eval()  # as a teacher it predicts like the network it becomes, without batch stats
        losses = []
        if self.prior is not None:  # train on from the network as its labels left it
            self.prior.remove(network)
            self.prior = None
        started = time.perf_counter()
        training_monitor = monitor.scaled(0.0, 0.9) if settings.adjust_prior else monitor
        for step in range(settings.steps):
            monitor.check()
            for group in self.optimizer.param_groups:  # cosine decay within each iteration's training
                group["lr"] = settings.learning_rate * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
            x, y, clicked, valid = self._batch(centre, data)
            teacher = None
            if settings.consistency:  # the average's view of the crops, then crops pasted into each other
                with torch.no_grad(), half_precision():
                    teacher = average.module(x).float().softmax(dim=1)
                pasted = cutmix_masks(len(x), x.shape[-1], self.rng).to(self.device)
                x, y, clicked, valid, teacher = (paste(t, pasted) for t in (x, y, clicked, valid, teacher))
            with half_precision():
                logits = network(x.contiguous(memory_format=torch.channels_last))
            logits = logits.float()
            labelled = y != IGNORE
            if settings.drop_noisy:  # reaches its full share half-way through the steps
                with torch.no_grad():
                    per_pixel = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="none")
                share = settings.drop_noisy * min(1.0, 2 * step / settings.steps)
                labelled = small_loss_selection(per_pixel, labelled, clicked, share)
                y = torch.where(labelled, y, IGNORE)
            if settings.loss == "ce":
                loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
            else:
                index = torch.nonzero(labelled)
                loss = error_weighted_dice(
                    logits, index, y[index[:, 0], index[:, 1], index[:, 2]], settings.error_weight
                )
            ramp = unlabelled_ramp(step, settings.steps)
            if teacher is not None and ramp:
                unlabelled = valid & (y == IGNORE)
                threshold = settings.consistency_threshold
                loss = loss + ramp * settings.consistency * confident_consistency(
                    logits, teacher, unlabelled, threshold
                )
            if settings.affinity and ramp:
                colours = self._unit_colours(x)
                affinity = colour_affinity(logits, colours, valid, AFFINITY_DILATION, AFFINITY_DISTANCE)
                loss = loss + ramp * settings.affinity * affinity
            if self.anchor is not None:  # hold the network to where it started, away from the labels
                loss = loss + settings.anchor_weight * anchor_l1(logits.softmax(dim=1), self.anchor(x))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if average is not None:
                average.update_parameters(network)
            losses.append(loss.item())
            if step % 10 == 0 or step == settings.steps - 1:
                elapsed = time.perf_counter() - started
                training_monitor.report(
                    (step + 1) / settings.steps,
                    f"training step {step + 1}/{settings.steps}, loss {np.mean(losses[-20:]):.3f}, "
                    f"{elapsed / (step + 1):.2f} s/step",
                )
        if average is not None:
            network.load_state_dict(average.module.state_dict())
        network.eval()
        if settings.adjust_prior:
            sources, labels = [s for s, _, _ in data], [lbl for _, lbl, _ in data]
            probabilities = [window_probabilities(network, self.card, s, self.device) for s in sources]
            window = self.card.tiling.tile_size
            self.prior = estimate_prior_shift(
                labels,
                sources,
                probabilities,
                self.card.n_classes,
                window,
                seed=settings.seed,
                monitor=monitor.scaled(0.9, 1.0),
            )
            self.prior.apply(network)
        return losses


def unlabelled_ramp(step: int, steps: int) -> float:
    """How much the terms on unlabelled pixels count: nothing over the first fifth of the steps,
    while the network (and its moving average, the teacher) knows nothing yet, fully from two fifths."""
    return float(np.clip((step / steps - 0.2) / 0.2, 0.0, 1.0))


def cutmix_masks(batch: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """One box per crop (B × 1 × size × size, True inside) covering a fifth to a half of it, where
    CutMix pastes another crop of the batch."""
    masks = torch.zeros((batch, 1, size, size), dtype=torch.bool)
    for mask in masks:
        area, aspect = rng.uniform(0.2, 0.5) * size * size, np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
        height = min(size, round(np.sqrt(area * aspect)))
        width = min(size, round(area / height))
        row, col = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
        mask[:, row : row + height, col : col + width] = True
    return masks


def paste(batch: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Each crop with the previous crop of the batch (the last one for the first) pasted inside its
    box (CutMix)."""
    where = masks if batch.ndim == 4 else masks[:, 0]
    return torch.where(where, batch.roll(1, dims=0), batch)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """A crop resized to ``size`` × ``size``: an image (bands × h × w) bilinearly, antialiased
    when shrunk; a validity mask or a target (h × w) by nearest neighbour."""
    if array.ndim == 3:
        image = torch.from_numpy(np.ascontiguousarray(array))[None]
        shrink = array.shape[-1] > size
        resized = F.interpolate(
            image, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )
        return resized[0].numpy()
    indices = (np.arange(size) * array.shape[0]) // size
    return array[np.ix_(indices, indices)]


def window_probabilities(network: nn.Module, card: ModelCard, source: RasterSource, device: torch.device):
    """A function giving the network's class probabilities over a window (for the sieve)."""

    def probabilities(row: int, col: int, height: int, width: int) -> np.ndarray:
        pad_h, pad_w = -height % 32, -width % 32
        image, _ = source.read_normalized(row, col, height + pad_h, width + pad_w)
        if card.clicks.enabled:
            image = np.concatenate([image, np.zeros((card.n_classes, *image.shape[1:]), np.float32)])
        with torch.inference_mode():
            p = softmax_probabilities(network.eval()(torch.from_numpy(image)[None].to(device)))[0]
        return p[:, :height, :width].cpu().numpy()

    return probabilities
