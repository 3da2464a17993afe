"""Training from sparse labels only (SIAL): a network learns from clicks spread over rasters.

Each step takes crops centred (with jitter) on labelled pixels drawn at random, flips and rotates
them, and computes SIAL's Error-Weighted Dice Loss (or cross-entropy) over the labelled pixels
in the crops. The optimiser (AdamW) carries on from one iteration to the next, as the labels
grow: predict → clicks on errors → train → … Its learning rate decays (cosine) within each
iteration's training, so every iteration ends on small steps. Optionally the weights that
leave each iteration are an exponential moving average of its steps (``average``), not the last
step's: a network trained on few, noisy labels swings from step to step, and the average does not.
``colour_jitter`` brings the dense training's colour jitter over. ``adjust_prior`` ends each fit
by correcting the network for the class shares of its labels (:mod:`.prior_shift`); the next fit
takes the correction out again before it trains on. A fit may also take dense targets around the
labels (the SIAL protocol's dense-labels reference reads every labelled pixel that way).

Fine-tuning an already trained model on a few labels borrows two things from DISCA, or the labels
wreck it: frozen BatchNorm (``freeze_batchnorm``), and λ·L1 to the starting model's prediction over
each crop (``anchor_weight``).

Options that the SIAL set-ups measured and found harmful (scale augmentation, CutMix consistency,
colour affinity, class-balanced crops, self-training, dropping noisy labels) were removed; their
figures are in docs/experiments/sial-setups.md and their code in git history.
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
from ..io.raster import RasterSource
from ..model.card import ModelCard
from ..model.network import autocast, bfloat16_if_supported, freeze_batchnorm, softmax_probabilities
from ..progress import Monitor
from .crops import colour_jitter
from .disca import anchor_from
from .losses import anchor_l1, error_weighted_dice
from .prior_shift import PriorShift, estimate_prior_shift
from .superpixels import SparseLabels

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
    colour_jitter: float = 0.0  # strength of the dense training's colour jitter (0: none)
    adjust_prior: bool = False  # correct the output for the labels' class shares (prior_shift.py)

    def check(self) -> None:
        if self.loss not in ("ewdl", "ce"):
            raise UserError(f"loss must be ewdl or ce, not {self.loss}")
        if self.crop % 32:
            raise UserError(f"crop must be a multiple of 32, not {self.crop}")
        if not 0.0 <= self.average < 1.0:
            raise UserError(f"the weight-average decay must lie in [0, 1), not {self.average}")
        if not 0.0 <= self.colour_jitter < 1.0:
            raise UserError(f"the colour jitter must lie in [0, 1), not {self.colour_jitter}")


def _moving_average(network: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of the weights and BatchNorm statistics; its decay ramps up
    over the first steps so the average does not cling to where the fit started."""

    def blend(average: torch.Tensor, current: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        keep = min(decay, (1.0 + float(count)) / (10.0 + float(count)))
        return average + (current - average) * (1.0 - keep)

    return AveragedModel(network, avg_fn=blend, use_buffers=True)


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
        self, source: RasterSource, labels: SparseLabels, index: int, dense: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(image, target with IGNORE where unlabelled, clicked mask, validity) of one jittered,
        turned crop."""
        side, info = self.settings.crop, source.info
        jitter = self.rng.integers(-side // 4, side // 4 + 1, size=2)
        row = int(np.clip(labels.rows[index] - side // 2 + jitter[0], 0, max(info.height - side, 0)))
        col = int(np.clip(labels.cols[index] - side // 2 + jitter[1], 0, max(info.width - side, 0)))
        image, valid = source.read_normalized(row, col, side, side)
        target = np.full((side, side), IGNORE, dtype=np.int64)
        if dense is not None:  # the sparse labels below take precedence
            window = dense[row : row + side, col : col + side]
            target[: window.shape[0], : window.shape[1]] = window
        inside = (
            (labels.rows >= row)
            & (labels.rows < row + side)
            & (labels.cols >= col)
            & (labels.cols < col + side)
        )
        rows, cols = labels.rows[inside] - row, labels.cols[inside] - col
        target[rows, cols] = labels.classes[inside]
        clicked = np.zeros((side, side), dtype=bool)
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
            image = np.concatenate([image, np.zeros((self.card.n_classes, side, side), np.float32)])
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
        """A function drawing (raster, labelled pixel) to centre a crop on, every labelled pixel
        equally likely."""
        rng = self.rng
        counts = np.array([len(lbl) for _, lbl, _ in data], dtype=np.float64)

        def uniform() -> tuple[int, int]:
            which = int(rng.choice(len(data), p=counts / counts.sum()))
            return which, int(rng.integers(0, len(data[which][1])))

        return uniform

    def fit(
        self,
        data: Sequence[tuple[RasterSource, SparseLabels]],
        monitor: Monitor | None = None,
        dense_targets: Sequence[np.ndarray] | None = None,
    ) -> list[float]:
        """``settings.steps`` steps over the labelled pixels of every raster, with each raster's
        dense targets (if given, one label raster each, IGNORE where unknown) around them;
        returns the losses."""
        monitor = monitor or Monitor()
        settings = self.settings
        if dense_targets is not None and settings.adjust_prior:
            raise UserError("the class-prior correction knows the sparse labels' shares, not dense targets'")
        dense = list(dense_targets) if dense_targets is not None else [None] * len(data)
        data = [(s, lbl, d) for (s, lbl), d in zip(data, dense, strict=True) if len(lbl)]
        if not data:
            raise UserError("no labelled pixels to learn from")
        network = self._prepare()
        average = _moving_average(network, settings.average) if settings.average else None
        losses: list[float] = []
        centre, started = self._crop_centres(data), time.perf_counter()
        training_monitor = monitor.scaled(0.0, 0.9) if settings.adjust_prior else monitor
        for step in range(settings.steps):
            monitor.check()
            for group in self.optimizer.param_groups:  # cosine decay within each iteration's training
                group["lr"] = settings.learning_rate * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
            losses.append(self._step(*self._batch(centre, data)))
            if average is not None:
                average.update_parameters(network)
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
            self._correct_prior(data, monitor.scaled(0.9, 1.0))
        return losses

    def _prepare(self) -> nn.Module:
        """The network in training mode, every parameter trainable (BatchNorm frozen when asked),
        and without the prior correction the last fit left in it: it trains on from the network
        as its labels left it."""
        network = self.network
        network.train()
        for parameter in network.parameters():
            parameter.requires_grad_(True)
        if self.settings.freeze_batchnorm:
            freeze_batchnorm(network)
        if self.prior is not None:
            self.prior.remove(network)
            self.prior = None
        return network

    def _step(self, x: torch.Tensor, y: torch.Tensor, clicked: torch.Tensor, valid: torch.Tensor) -> float:
        """One optimiser step on a batch; returns its loss."""
        settings = self.settings
        dtype = bfloat16_if_supported(self.device)
        with autocast(self.device.type, dtype):
            logits = self.network(x.contiguous(memory_format=torch.channels_last))
        logits = logits.float()
        if settings.loss == "ce":
            loss = F.cross_entropy(logits, y, ignore_index=IGNORE)
        else:
            index = torch.nonzero(y != IGNORE)
            loss = error_weighted_dice(
                logits, index, y[index[:, 0], index[:, 1], index[:, 2]], settings.error_weight
            )
        if self.anchor is not None:  # hold the network to where it started, away from the labels
            loss = loss + settings.anchor_weight * anchor_l1(logits.softmax(dim=1), self.anchor(x))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def _correct_prior(
        self, data: Sequence[tuple[RasterSource, SparseLabels, np.ndarray | None]], monitor: Monitor
    ) -> None:
        sources, labels = [s for s, _, _ in data], [lbl for _, lbl, _ in data]
        probabilities = [window_probabilities(self.network, self.card, s, self.device) for s in sources]
        self.prior = estimate_prior_shift(
            labels,
            sources,
            probabilities,
            self.card.n_classes,
            self.card.tiling.tile_size,
            seed=self.settings.seed,
            monitor=monitor,
        )
        self.prior.apply(self.network)


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
