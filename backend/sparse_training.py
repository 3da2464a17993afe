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

from .card import ModelCard
from .disca import anchor_from
from .errors import UserError
from .losses import anchor_l1, error_weighted_dice
from .network import freeze_batchnorm, softmax_probabilities
from .outputs import CLASS_NODATA
from .prior_shift import PriorShift, estimate_prior_shift
from .progress import Monitor
from .raster import RasterSource
from .superpixels import SparseLabels
from .training import colour_jitter

IGNORE = 255


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


def _autocast(device: torch.device) -> torch.dtype | None:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


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
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image, target with IGNORE where unlabelled, clicked mask) of one jittered, turned crop."""
        size, info = self.settings.crop, source.info
        jitter = self.rng.integers(-size // 4, size // 4 + 1, size=2)
        row = int(np.clip(labels.rows[index] - size // 2 + jitter[0], 0, max(info.height - size, 0)))
        col = int(np.clip(labels.cols[index] - size // 2 + jitter[1], 0, max(info.width - size, 0)))
        image, valid = source.read_normalized(row, col, size, size)
        target = np.full((size, size), IGNORE, dtype=np.int64)
        if pseudo is not None:  # the sparse labels below take precedence
            window = pseudo[row : row + size, col : col + size]
            target[: window.shape[0], : window.shape[1]] = window
        inside = (
            (labels.rows >= row)
            & (labels.rows < row + size)
            & (labels.cols >= col)
            & (labels.cols < col + size)
        )
        target[labels.rows[inside] - row, labels.cols[inside] - col] = labels.classes[inside]
        clicked = np.zeros((size, size), dtype=bool)
        clicked[labels.rows[inside] - row, labels.cols[inside] - col] = labels.clicked[inside]
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
        return np.ascontiguousarray(image), np.ascontiguousarray(target), np.ascontiguousarray(clicked)

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
        dtype = _autocast(self.device)
        average = _moving_average(network, settings.average) if settings.average else None
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
            crops = []
            for _ in range(settings.batch):
                which, index = centre()
                source, labels, around = data[which]
                crops.append(self._crop(source, labels, index, around))
            x = torch.from_numpy(np.stack([c[0] for c in crops])).to(self.device)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(np.stack([c[1] for c in crops])).to(self.device)
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = network(x)
            logits = logits.float()
            labelled = y != IGNORE
            if settings.drop_noisy:  # reaches its full share half-way through the steps
                clicked = torch.from_numpy(np.stack([c[2] for c in crops])).to(self.device)
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
