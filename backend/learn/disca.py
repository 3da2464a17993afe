"""DISCA: retraining the network on the analyst's clicks (DIAL, Eq. 1).

loss = click term + λ · L1(softmax(f(x; θ)), p₀)

- The click term is cross-entropy at the clicked pixels, a class's pixels weighing (their
  number) ** -0.5 (DIAL averages over the clicks: seven clicks of one class out of ten then push
  that class over the whole map; weighing every class the same costs new imagery's rarer
  corrections), or SIAL's Error-Weighted Dice Loss.
- p₀ is the initial model's softmax on the same crop without clicks. That is the map the
  analyst started from: the anchor keeps far-away pixels where they were.

Training uses square crops around the clicks (all clicks inside a crop count). With ``spread``
a click's class also covers its SLIC superpixel, without the sieve: a click corrects the model,
so the model must not decide where the correction stops. The click channels of a crop are
zeroed at random, so the network does not lean on them alone. BatchNorm statistics and affine
parameters stay frozen. Plain SGD, a few steps per round; bf16 autocast where the hardware has
it. After the round the guard (:mod:`.round_check`) may roll it back; a kept round's weights are
averaged with the earlier rounds' (:mod:`.weight_average`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..io.clicks import Click, encode_clicks
from ..io.raster import RasterSource
from ..model.card import ModelCard
from ..model.network import autocast, bfloat16_if_supported, freeze_batchnorm, softmax_probabilities
from ..progress import Monitor
from .click_crops import clicks_in, crop_origins
from .losses import anchor_l1, click_cross_entropy, error_weighted_dice
from .round_check import CHECK_CROPS, RoundCheck, Verdict, far_origins, judge_round
from .superpixels import ExpansionSettings, SuperpixelCache, expand_clicks
from .weight_average import WeightAverage, copy_state

CLICK_LOSSES = ("ce", "ewdl")
ANCHOR_BATCH = 16  # crops per forward pass when the anchors p₀ of new crops are computed


@dataclass(frozen=True)
class DiscaSettings:
    KIND: ClassVar[str] = "disca"  # what a session stores its rounds as (SIAL rounds: "sial")
    FEW_CLICKS_STEPS: ClassVar[int] = 10  # a round on fewer than BATCH_CLICKS new clicks (DIAL's: one)
    BATCH_STEPS: ClassVar[int] = 5  # a round on a batch of new clicks (the dock's pattern)
    BATCH_CLICKS: ClassVar[int] = 5
    STEPS_PER_CLICK: ClassVar[int] = 2  # the most steps a round takes per click so far (its first rounds)
    FEW_CLICKS_CROP: ClassVar[int] = 256  # training crops' side after fewer than BATCH_CLICKS new clicks
    BATCH_CROP: ClassVar[int] = 128  # and after a batch: the dock's round, 2.4 times sooner
    steps: int | None = None  # SGD steps per round; None: by the round's new clicks (steps_for)
    learning_rate: float = 2e-4  # with the weight average; chosen over six cases (BENCHMARKS.md)
    momentum: float = 0.9
    anchor_weight: float = 3.0  # λ
    click_loss: str = "ce"  # "ce" (DIAL) or "ewdl" (SIAL, error weight below)
    error_weight: float = 5.0
    drop_clicks: float = 0.5  # chance that a crop's click channels are zeroed at a step
    crop: int | None = None  # training crops' side (px); None: by the round's new clicks (crop_for)
    max_crops: int = 8  # crops per SGD step: the newest click's, and others drawn from the replay
    replay: int = 64  # crops kept around the most recent clicks, so older clicks are not forgotten
    anchor_crops: int = 2  # random crops per round held to the initial prediction (no drift elsewhere)
    seed: int = 0
    guard: bool = True  # roll back a round the guard judges worse (learn/round_check.py)
    class_balance: float = 0.5  # a class's clicked pixels weigh (their number) ** -this (BENCHMARKS.md)
    spread: bool = True  # each click's class also labels its SLIC superpixel (BENCHMARKS.md)
    hold_classes: bool = True  # classes no click names stay off a map that lacks them (held_classes)
    weight_average: float = 0.5  # β: the map from the rounds' weights averaged (weight_average.py)

    @classmethod
    def dial(cls) -> DiscaSettings:
        """DIAL's published settings: 10 SGD steps at 2e-6, λ = 1, the clicks alone, averaged."""
        return cls(steps=10, learning_rate=2e-6, momentum=0.0, anchor_weight=1.0, class_balance=0.0,
                   spread=False, hold_classes=False, weight_average=0.0)  # fmt: skip

    def steps_for(self, new_clicks: int, total_clicks: int | None = None) -> int:
        """The round's steps (BENCHMARKS.md, *Steps by the round's new clicks*): 10 after a single
        click (DIAL's protocol), 5 on a batch (10 took Dubai tile 6 below its start), and at most
        two a click on the first clicks of all (``total_clicks``; LoveDA +2.1, three seeds)."""
        if self.steps is not None:
            return self.steps
        steps = self.BATCH_STEPS if new_clicks >= self.BATCH_CLICKS else self.FEW_CLICKS_STEPS
        return steps if total_clicks is None else min(steps, self.STEPS_PER_CLICK * max(total_clicks, 1))

    def crop_for(self, new_clicks: int) -> int:
        """The round's crop side: 128 px on a batch (as good in 0.42 of the time), 256 on fewer."""
        if self.crop is not None:
            return self.crop
        return self.BATCH_CROP if new_clicks >= self.BATCH_CLICKS else self.FEW_CLICKS_CROP

    def check(self) -> None:
        if self.click_loss not in CLICK_LOSSES:
            raise UserError(f"click loss must be one of {', '.join(CLICK_LOSSES)}, not {self.click_loss}")
        if (self.steps is not None and self.steps < 1) or self.learning_rate <= 0 or self.anchor_weight < 0:
            raise UserError("DISCA needs steps ≥ 1, a positive learning rate and λ ≥ 0")
        if not 0 <= self.class_balance <= 1:
            raise UserError(f"the click classes' balance must be between 0 and 1, not {self.class_balance}")
        if self.crop is not None and self.crop % 32:
            raise UserError(f"the DISCA crop must be a multiple of 32, not {self.crop}")
        if not 1 <= self.max_crops <= self.replay:
            raise UserError("DISCA needs 1 ≤ crops per step ≤ crops kept for replay")
        if not 0 <= self.weight_average < 1:
            raise UserError(f"the rounds' weight average must be ≥ 0 and < 1, not {self.weight_average}")


@dataclass
class RetrainReport:
    steps: int
    crops: int
    clicks: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    click_losses: list[float] = field(default_factory=list)
    anchor_losses: list[float] = field(default_factory=list)
    prior_shift: dict[str, Any] | None = None  # the class-prior correction left in the weights
    check: RoundCheck | None = None  # the round guard's measurements (learn/round_check.py)
    verdict: Verdict | None = None  # its judgement (None: the guard is off); not kept: rolled back

    @property
    def kept(self) -> bool:
        return self.verdict is None or self.verdict.kept


AnchorFunction = Callable[[torch.Tensor], torch.Tensor]
"""Inputs (B × channels × h × w, click channels zero) → the initial model's probabilities."""


def anchor_from(network: nn.Module) -> AnchorFunction:
    """The anchor p₀ as predicted by ``network`` (the initial model, kept frozen), in bf16 where native."""
    network.eval()
    for parameter in network.parameters():
        parameter.requires_grad_(False)

    dtype = bfloat16_if_supported(next(network.parameters()).device)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with (
            torch.inference_mode(),
            autocast(x.device.type, dtype),
        ):
            return softmax_probabilities(network(x))

    return predict


class Disca:
    """Retrains ``network`` in place on clicks; ``anchor`` gives the initial prediction p₀."""

    def __init__(
        self,
        network: nn.Module,
        card: ModelCard,
        anchor: AnchorFunction,
        device: torch.device,
        settings: DiscaSettings | None = None,
    ):
        self.network, self.card, self.anchor, self.device = network, card, anchor, device
        self.settings = settings or DiscaSettings()
        self.settings.check()
        self._anchors: dict[tuple[int, int, int], torch.Tensor] = {}  # by crop origin and side
        self._size = self.settings.crop_for(self.settings.BATCH_CLICKS)  # the round's crop side
        self._superpixels: dict[str, SuperpixelCache] = {}
        self.rounds = 0
        self.average = WeightAverage(self.settings.weight_average)  # the rounds' own weights
        self._clicks_seen = 0  # the clicks of the last round: the next round's new ones follow

    def _batch(
        self, source: RasterSource, clicks: Sequence[Click]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs, validity, p₀, clicked-pixel index (sample, row, col) and classes of the crops."""
        size, info = self._size, source.info
        origins = crop_origins(clicks, info.height, info.width, size, self.settings.replay)
        x, valid = self._crops(source, clicks, origins)
        index, classes = [], []
        for i, (row, col) in enumerate(origins):
            for click in clicks:
                if row <= click.row < row + size and col <= click.col < col + size:
                    index.append((i, click.row - row, click.col - col))
                    classes.append(click.class_id)
        missing = [i for i, origin in enumerate(origins) if (*origin, size) not in self._anchors]
        for start in range(0, len(missing), ANCHOR_BATCH):  # batched: 4 times sooner than one by one
            chunk = missing[start : start + ANCHOR_BATCH]
            for i, p0 in zip(chunk, self._initial(x[chunk]), strict=True):
                self._anchors[(*origins[i], size)] = p0
        return (
            x,
            valid,
            torch.stack([self._anchors[(*origin, size)] for origin in origins]),
            torch.tensor(index, dtype=torch.long, device=self.device),
            torch.tensor(classes, dtype=torch.long, device=self.device),
        )

    def _spread(
        self, source: RasterSource, clicks: Sequence[Click], index: torch.Tensor, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The click term's pixels: the clicks, and with ``spread`` their superpixels too, in every
        crop that holds them (crop, row, col) with their classes. The guard keeps the clicks alone."""
        if not self.settings.spread or not clicks:
            return index, classes
        cache = self._superpixels.setdefault(str(source.info.path), {})
        labels = expand_clicks(source, clicks, ExpansionSettings(sieve=None), None, cache)
        size, info = self._size, source.info
        origins = crop_origins(clicks, info.height, info.width, size, self.settings.replay)
        rows, cols = torch.from_numpy(labels.rows), torch.from_numpy(labels.cols)
        found, found_classes = [], []
        for i, (row, col) in enumerate(origins):
            inside = (rows >= row) & (rows < row + size) & (cols >= col) & (cols < col + size)
            n = int(inside.sum())
            found.append(torch.stack([torch.full((n,), i), rows[inside] - row, cols[inside] - col], 1))
            found_classes.append(torch.from_numpy(labels.classes)[inside])
        return torch.cat(found).to(self.device), torch.cat(found_classes).to(self.device)

    def _crops(
        self, source: RasterSource, clicks: Sequence[Click], origins: Sequence[tuple[int, int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Network inputs (bands, then click channels) and validity of the crops at ``origins``."""
        size, inputs, valids = self._size, [], []
        for row, col in origins:
            image, valid = source.read_normalized(row, col, size, size)
            channels = encode_clicks(
                clicks, row, col, size, size, self.card.n_classes, self.card.clicks.radius
            )
            inputs.append(np.concatenate([image, channels]) if self.card.clicks.enabled else image)
            valids.append(valid)
        x = torch.from_numpy(np.stack(inputs)).to(self.device).contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(np.stack(valids)).to(self.device)

    def _initial(self, x: torch.Tensor) -> torch.Tensor:
        """p₀: the initial model's prediction, without the click channels."""
        plain = x.clone()
        plain[:, self.card.n_bands :] = 0.0
        return self.anchor(plain)

    def _held_crops(
        self, source: RasterSource, clicks: Sequence[Click], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Crops drawn anywhere on the raster, new each round, that only the anchor term sees: the
        L1 to p₀ then holds the whole raster, not just the clicked places, so rounds after rounds
        of clicks on one confusion do not wear another class away elsewhere."""
        size, info = self._size, source.info
        if self.settings.anchor_crops == 0:
            return None
        origins = [
            (
                int(torch.randint(0, max(info.height - size, 0) + 1, (1,), generator=generator)),
                int(torch.randint(0, max(info.width - size, 0) + 1, (1,), generator=generator)),
            )
            for _ in range(self.settings.anchor_crops)
        ]
        x, valid = self._crops(source, clicks, origins)
        return x, valid, self._initial(x)

    def _pick(self, n_crops: int, generator: torch.Generator) -> torch.Tensor:
        """One step's crops: the newest click's always, the rest drawn from the replay. A fixed
        cost per step however many clicks there are, and older clicks keep pulling."""
        limit = self.settings.max_crops
        if n_crops <= limit:
            return torch.arange(n_crops, device=self.device)
        others = torch.randperm(n_crops - 1, generator=generator)[: limit - 1] + 1
        return torch.cat([torch.zeros(1, dtype=torch.long), others]).to(self.device)

    def retrain(
        self,
        source: RasterSource,
        clicks: Sequence[Click],
        monitor: Monitor | None = None,
        new_clicks: int | None = None,
    ) -> RetrainReport:
        """One round: SGD steps on crops around ``clicks`` (newest last), their number and side
        by ``settings.steps_for`` / ``crop_for`` the clicks added since the model's last round
        (``new_clicks``; by default, those since this object's last round) and all the clicks.
        SGD continues from the last round's own weights; the network ends holding their average
        with the earlier rounds' (:mod:`.weight_average`), or, rolled back, the weights before."""
        monitor = monitor or Monitor()
        settings = self.settings
        started = time.perf_counter()
        if not clicks:
            raise UserError("no clicks to learn from: add some clicks first")
        new = len(clicks) - self._clicks_seen if new_clicks is None else new_clicks
        steps = settings.steps_for(max(new, 1), len(clicks))
        self._size = settings.crop_for(max(new, 1))
        x, valid, p0, index, classes = self._batch(source, clicks)
        target = self._spread(source, clicks, index, classes)
        generator = torch.Generator().manual_seed(settings.seed * 7919 + self.rounds)
        held = self._held_crops(source, clicks, generator) or (x[:0], valid[:0], p0[:0])
        probe = self._probe(source, clicks, x, index, classes, generator)
        self.average.beta = settings.weight_average
        shown = self.average.before_round(self.network)
        try:
            before = self._probe_classes(probe)
            saved = copy_state(self.network) if settings.guard else None
            report = RetrainReport(steps, x.shape[0], len(clicks), 0.0)
            self._sgd(report, (x, valid, p0), held, target, generator, monitor)
        except BaseException:
            if shown is not None:
                self.network.load_state_dict(shown)
            raise
        self.rounds += 1
        self._clicks_seen = len(clicks)
        report.check = RoundCheck.of_samples(before, self._probe_classes(probe), *probe[1:])
        if saved is not None:
            report.verdict = judge_round(report.check, [c.name for c in self.card.classes])
            if not report.verdict.kept:
                self.network.load_state_dict(saved)
        self.average.after_round(self.network, shown, report.kept)
        report.seconds = time.perf_counter() - started
        return report

    def _sgd(
        self,
        report: RetrainReport,
        crops: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        held: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        target: tuple[torch.Tensor, torch.Tensor],
        generator: torch.Generator,
        monitor: Monitor,
    ) -> None:
        """The round's SGD steps on the click crops (inputs, validity, p₀), the ``held`` crops
        (the anchor term's alone) and the click term's ``target`` pixels and classes."""
        settings, network, (x, valid, p0) = self.settings, self.network, crops
        network.train()
        for parameter in network.parameters():
            parameter.requires_grad_(True)
        freeze_batchnorm(network)
        parameters = [p for p in network.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(parameters, lr=settings.learning_rate, momentum=settings.momentum)
        dtype = bfloat16_if_supported(self.device)
        try:
            for step in range(report.steps):
                monitor.check()
                chosen = self._pick(x.shape[0], generator)
                inputs = torch.cat([x[chosen], held[0]])
                step_valid, step_p0 = torch.cat([valid[chosen], held[1]]), torch.cat([p0[chosen], held[2]])
                step_index, step_classes = clicks_in(chosen, *target, x.shape[0])
                if self.card.clicks.enabled and settings.drop_clicks > 0:
                    drop = torch.rand(inputs.shape[0], generator=generator) < settings.drop_clicks
                    if drop.any():
                        inputs = inputs.clone()
                        inputs[drop.to(self.device), self.card.n_bands :] = 0.0
                with autocast(self.device.type, dtype):
                    logits = network(inputs)
                logits = logits.float()
                if settings.click_loss == "ewdl":
                    click_term = error_weighted_dice(logits, step_index, step_classes, settings.error_weight)
                else:
                    click_term = click_cross_entropy(logits, step_index, step_classes, settings.class_balance)
                probabilities = logits.softmax(dim=1)
                mask = step_valid[:, None].expand_as(probabilities)
                anchor_term = anchor_l1(probabilities[mask], step_p0[mask])
                loss = click_term + settings.anchor_weight * anchor_term
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                report.losses.append(loss.item())
                report.click_losses.append(click_term.item())
                report.anchor_losses.append(anchor_term.item())
                monitor.report((step + 1) / report.steps, f"retraining step {step + 1}/{report.steps}")
        finally:
            network.eval()
            for parameter in network.parameters():
                parameter.requires_grad_(False)

    def _probe(
        self,
        source: RasterSource,
        clicks: Sequence[Click],
        x: torch.Tensor,
        index: torch.Tensor,
        classes: torch.Tensor,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the round guard looks at before and after the round: the newest click crops (the
        clicks in them, with their classes) and crops far from every click (with validity)."""
        near = torch.arange(min(CHECK_CROPS, x.shape[0]), device=self.device)
        inside = index[:, 0] < near.numel()
        origins = far_origins(clicks, source.info.height, source.info.width, self._size, generator)
        far, far_valid = self._crops(source, clicks, origins) if origins else (x[:0], x[:0, 0] > 0)
        return torch.cat([x[near], far]), index[inside], classes[inside], far_valid

    def _probe_classes(self, probe: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The probe's classes, in the rounds' precision (bf16 where native: half the time)."""
        self.network.eval()
        dtype = bfloat16_if_supported(self.device)
        with (
            torch.inference_mode(),
            autocast(self.device.type, dtype),
        ):
            return self.network(probe[0]).argmax(dim=1)
